"""--backend ray: the same records as local processes, lost workers, sweeps, and the errors of a missing Ray.

The runners' shared behaviour (events and results, a crashing run, Ctrl-C and resume) is tested on both backends
in test_learn_simple.py. Every Ray here is a local instance on 2 CPUs (conftest.py limits the tests to 2 cores).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hypertune import TRIALS
from tests.test_hypertune import new_sweep
from tests.test_learn_simple import ROOT, SMALL_SAC, learn_simple, needs_ray, run_script

RUN = ["--agent", "sac_baseline", "--eval-episodes", "2", *SMALL_SAC]


def records(tmp_path, name) -> dict:
    results = json.loads((tmp_path / "runs" / name / "results.json").read_text())
    return {(r["env"], r["seed"]): r for r in results["records"]}


@needs_ray
def test_ray_runs_give_the_records_of_local_processes(tmp_path):
    common = [*RUN, "--envs", "Pendulum-v1", "--seeds", "2", "--steps", "600", "--workers", "2"]
    local = learn_simple(tmp_path, *common, "--name", "local")
    on_ray = learn_simple(tmp_path, *common, "--name", "ray", "--backend", "ray")
    assert local.returncode == 0 and on_ray.returncode == 0, local.stderr + on_ray.stderr
    expected, got = records(tmp_path, "local"), records(tmp_path, "ray")
    assert sorted(got) == sorted(expected) == [("Pendulum-v1", 0), ("Pendulum-v1", 1)]
    for key, record in expected.items():
        for field in ("final_return", "train_return", "evaluations", "steps", "hyperparameters"):
            assert got[key][field] == record[field], (key, field)
    seed_dir = tmp_path / "runs" / "ray" / "sac_baseline" / "Pendulum-v1" / "seed_1"
    assert list(seed_dir.glob("events.out.tfevents.*")) and (seed_dir / "result.json").exists()


@needs_ray
def test_runs_join_a_cluster_started_with_rays_own_commands(tmp_path):
    with socket.socket() as probe:  # a free port for the head
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray_cli = Path(sys.executable).with_name("ray")
    # --block: the head's processes end with this one, and none of another Ray on this machine is touched.
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token"}
        result = subprocess.run([sys.executable, str(ROOT / "learn_simple.py"), *RUN, "--backend", "ray",
                                 "--address", f"127.0.0.1:{port}", "--envs", "Pendulum-v1", "--seeds", "2",
                                 "--steps", "300", "--name", "cluster"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        head.terminate()
        head.wait(timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(records(tmp_path, "cluster")) == [("Pendulum-v1", 0), ("Pendulum-v1", 1)]


@needs_ray
def test_sigterm_stops_ray_runs_as_ctrl_c_does(tmp_path):
    process = subprocess.Popen([sys.executable, str(ROOT / "learn_simple.py"), *RUN, "--backend", "ray",
                                "--envs", "Pendulum-v1", "--seeds", "2", "--steps", "3000", "--eval-every", "200",
                                "--name", "term"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and " 400/3000 steps" not in process.stdout.readline():
        pass
    process.terminate()  # what a scheduler's time limit or `kill` does; Ray's own handler would exit at once
    stdout, stderr = process.communicate(timeout=90)
    assert process.returncode == 130, stdout + stderr
    results = json.loads((tmp_path / "runs" / "term" / "results.json").read_text())
    assert results["interrupted"] and {f["error"] for f in results["failures"]} == {"interrupted"}
    assert list((tmp_path / "runs" / "term" / "sac_baseline" / "Pendulum-v1" / "seed_0").glob("events.out.*"))


@needs_ray
def test_a_lost_worker_is_retried_and_its_run_finishes(tmp_path):
    marker = tmp_path / "died"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOY_DIE_MARKER": str(marker)}
    result = subprocess.run([sys.executable, str(ROOT / "learn_simple.py"), *RUN, "--backend", "ray",
                             "--envs", "tests.toy_envs:DieOnce-v0", "--steps", "300", "--eval-every", "0",
                             "--checkpoint-every", "100", "--name", "retry"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.exists()  # its worker was killed once, at step 160
    (record,) = records(tmp_path, "retry").values()
    assert record["steps"] == 300 and len(record["evaluations"]) == 1


@needs_ray
def test_a_lost_worker_without_retries_is_a_failed_run_and_the_others_finish(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOY_DIE_MARKER": str(tmp_path / "died")}
    result = subprocess.run([sys.executable, str(ROOT / "learn_simple.py"), *RUN, "--backend", "ray",
                             "--retries", "0", "--envs", "tests.toy_envs:DieOnce-v0", "Pendulum-v1",
                             "--steps", "300", "--name", "lost"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: Ray task lost" in result.stderr
    results = json.loads((tmp_path / "runs" / "lost" / "results.json").read_text())
    assert [r["env"] for r in results["records"]] == ["Pendulum-v1"]
    assert [f["env"] for f in results["failures"]] == ["tests.toy_envs:DieOnce-v0"]


@needs_ray
def test_a_sweep_runs_through_ray(tmp_path):
    result = run_script("hypertune.py", tmp_path, "--backend", "ray", "--agent", "sac_baseline", "--envs",
                        "Pendulum-v1", "--steps", "400", "--trials", "4", "--reports", "2", "--min-reports", "2",
                        "--eval-episodes", "1", *SMALL_SAC, "--param", "q_lr=1e-4:3e-3:log", "--name", "sweep")
    assert result.returncode == 0, result.stdout + result.stderr
    trials = json.loads((tmp_path / "runs" / "sweep" / TRIALS).read_text())
    assert len(trials) == 4 and all(t["status"] in ("complete", "pruned") for t in trials)
    assert all(t["reports"] and t["metric"] is not None for t in trials)
    assert "best: trial" in result.stdout


@needs_ray
def test_trials_that_raise_or_die_on_ray_are_failed_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHETIC_CRASH_BELOW", "-1.0")
    monkeypatch.setenv("SYNTHETIC_DIE_AT", "1")
    monkeypatch.chdir(ROOT)  # Ray's workers import the synthetic objective from the driver's directory
    sweep = new_sweep(tmp_path, trials=8, random_trials=8)
    cluster = SimpleNamespace(address=None, cpus_per_run=1, gpus_per_run=None)
    assert sweep.run(workers=2, ray_options=cluster) == 1
    statuses = {t["trial"]: t["status"] for t in sweep.trials}
    assert len(statuses) == 8 and statuses[1] == "failed" and "Ray task lost" in sweep.trials[1]["error"]
    crashed = [t for t in sweep.trials if t["error"] and "synthetic crash" in t["error"]]
    assert crashed and "Traceback" in (sweep.run_root / f"trial_{crashed[0]['trial']:03d}" / "error.txt").read_text()
    finished = [t for t in sweep.trials if t["status"] in ("complete", "pruned")]
    assert finished and all(t["metric"] is not None for t in finished)


@pytest.mark.parametrize("script", ["learn_simple.py", "hypertune.py"])
def test_without_ray_the_backend_is_a_one_line_error_saying_how_to_install_it(tmp_path, script):
    hide_ray = (f"import sys, runpy; sys.modules['ray'] = None; sys.argv = {[script, '--backend', 'ray']!r}; "
                f"runpy.run_path({str(ROOT / script)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", hide_ray], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -r requirements-ray.txt" in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


BAD_OPTIONS = [
    (["--backend", "slurm"], "argument --backend: invalid choice: 'slurm'"),
    (["--address", "auto"], "--address: only with --backend ray"),
    (["--cpus-per-run", "2"], "--cpus-per-run: only with --backend ray"),
    (["--backend", "ray", "--cpus-per-run", "0"], "argument --cpus-per-run: expected a positive integer, got 0"),
    (["--backend", "ray", "--gpus-per-run", "-1"], "argument --gpus-per-run: expected a number >= 0, got -1"),
    (["--backend", "ray", "--device", "cuda:1"], "--device cuda:1: under Ray a run sees only the GPUs it was given"),
    (["--backend", "ray", "--device", "cuda", "--gpus-per-run", "0"], "--device cuda under Ray needs --gpus-per-run"),
    (["--backend", "ray", "--cpus-per-run", "64"], "--cpus-per-run 64: the local Ray instance has 2 cores"),
    (["--backend", "ray", "--gpus-per-run", "1.5"], "--gpus-per-run 1.5: a fraction of one GPU (0.0001 to 1)"),
    (["--backend", "ray", "--device", "auto"], "--device auto: under Ray the device is the nodes'"),
    (["--backend", "ray", "--address", "headnode"], "--address 'headnode': expected auto, HOST:PORT or ray://"),
    (["--backend", "ray", "--address", "127.0.0.1:1"], "--address 127.0.0.1:1: no Ray head answers there"),
]


@needs_ray
@pytest.mark.parametrize("args,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_backend_options_are_one_line_errors(tmp_path, args, message):
    result = learn_simple(tmp_path, "--agent", "sac_baseline", "--envs", "Pendulum-v1", *args, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()
