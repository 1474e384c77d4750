"""learn_simple.py as a user runs it: a subprocess in a scratch directory, its files read back."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
SMALL_SAC = ["--set", "learning_starts=100", "--set", "hidden_size=32"]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install -r requirements-ray.txt)")
# Each test of the runners' behaviour runs on both backends: the backend must change where runs go, nothing else.
BACKENDS = ["local", pytest.param("ray", marks=needs_ray)]


def run_script(script, cwd, *args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def learn_simple(cwd, *args, timeout=300):
    return run_script("learn_simple.py", cwd, *args, timeout=timeout)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_write_events_and_results(tmp_path, backend):
    result = learn_simple(tmp_path, "--agent", "sac_baseline", "--envs", "Pendulum-v1", "--seeds", "2",
                          "--steps", "400", "--workers", "2", "--eval-every", "200", "--eval-episodes", "2",
                          "--name", "e2e", "--backend", backend, *SMALL_SAC)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "e2e"
    assert "results: runs/e2e/results.json" in result.stdout
    results = json.loads((run / "results.json").read_text())
    assert sorted(r["seed"] for r in results["records"]) == [0, 1]
    for record in results["records"]:
        assert record["agent"] == "sac_baseline" and record["env"] == "Pendulum-v1" and record["steps"] == 400
        assert record["final_return"] == record["evaluations"][-1][1] and record["train_return"] < 0
        assert record["wall_s"] > 0 and record["sps"] > 0
    (row,) = results["aggregates"]
    assert row["seeds"] == 2 and row["min_final_return"] <= row["iqm_final_return"] <= row["max_final_return"]

    events = EventAccumulator(str(run / "sac_baseline" / "Pendulum-v1" / "seed_0"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"charts/episodic_return", "eval/return", "charts/sps", "agent/qf_loss", "agent/actor_loss"} <= scalars
    assert [e.step for e in events.Scalars("eval/return")] == [200, 400]
    assert len(events.Scalars("charts/episodic_return")) == 2  # Pendulum episodes are 200 steps
    assert "hyperparameters/text_summary" in events.Tags()["tensors"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_crashing_run_is_reported_and_the_others_finish(tmp_path, backend):
    result = learn_simple(tmp_path, "--agent", "sac_baseline", "--envs", "tests.toy_envs:Crash-v0", "Pendulum-v1",
                          "--steps", "300", "--workers", "2", "--eval-episodes", "1", "--name", "crash",
                          "--backend", backend, *SMALL_SAC)
    assert result.returncode == 1
    assert "the toy environment crashed on purpose" in result.stderr
    results = json.loads((tmp_path / "runs" / "crash" / "results.json").read_text())
    assert [r["env"] for r in results["records"]] == ["Pendulum-v1"]
    assert [f["env"] for f in results["failures"]] == ["tests.toy_envs:Crash-v0"]
    error_file = tmp_path / "runs" / "crash" / "sac_baseline" / "tests.toy_envs:Crash-v0" / "seed_0" / "error.txt"
    assert "Traceback" in error_file.read_text()


BAD_INPUTS = [
    (["--agent", "sac_basline"], "unknown agent 'sac_basline'; did you mean sac_baseline"),
    (["--envs", "Pendulm-v1"], "unknown environment or suite 'Pendulm-v1'; did you mean Pendulum-v1"),
    (["--set", "q_lrr=0.1"], "unknown hyperparameter 'q_lrr' for sac_baseline; did you mean q_lr"),
    (["--set", "q_lr=fast"], "hyperparameter q_lr of sac_baseline expects a float, got 'fast'"),
    (["--set", "batch_size=0"], "hyperparameter batch_size must be > 0, got 0"),
    (["--set", "gamma=1.5"], "hyperparameter gamma must lie in [0, 1], got 1.5"),
    (["--set", "q_lr"], "--set expects key=value, got 'q_lr'"),
    (["--seeds", "0"], "expected a positive integer, got 0"),
    (["--steps", "-5"], "expected a positive integer, got -5"),
    (["--workers", "0"], "argument --workers: expected a positive integer, got 0"),
    (["--eval-episodes", "many"], "expected a positive integer, got 'many'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--resume", "no-such-run"], "cannot resume 'no-such-run'"),
    (["--agent", "sac_baseline", "--envs", "CartPole-v1"], "sac_baseline needs a continuous (Box) action space"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--set", "autotune=maybe"], "hyperparameter autotune of sac_baseline expects a bool, got 'maybe'"),
    (["--log-every", "0"], "expected a positive integer, got 0"),
    (["--name", "a/b"], "--name must be a plain directory name, got 'a/b'"),
    (["--agent", "sac_baseline:turbo"], "unknown preset 'turbo' of sac_baseline"),
    (["--compile", "cudagraphs"], "--compile cudagraphs needs a CUDA device, got --device cpu"),
    (["--compile", "fast"], "argument --compile: invalid choice: 'fast'"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, args, message):
    agent = [] if "--resume" in args else ["--agent", "sac_baseline"]
    result = learn_simple(tmp_path, *agent, *args, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_an_existing_run_name_is_refused(tmp_path):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    result = learn_simple(tmp_path, "--name", "taken", timeout=120)
    assert result.returncode == 2 and "runs/taken already exists" in result.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_stops_every_worker_keeps_logs_readable_and_resume_finishes(tmp_path, backend):
    args = ["--agent", "sac_baseline", "--envs", "Pendulum-v1", "--seeds", "2", "--steps", "3000", "--workers", "2",
            "--eval-every", "200", "--eval-episodes", "1", "--checkpoint-every", "200", "--name", "stop",
            "--backend", backend, *SMALL_SAC]
    process = subprocess.Popen([sys.executable, str(ROOT / "learn_simple.py"), *args], cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until both runs are past their first evaluation and checkpoint
        line = process.stdout.readline()
        seen.append(line)
        if sum(" 400/3000 steps" in s for s in seen) == 2:
            break
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group
    stdout, stderr = process.communicate(timeout=60)
    output = "".join(seen) + stdout + stderr
    assert process.returncode == 130, output
    assert "--resume" in stderr, output
    run = tmp_path / "runs" / "stop"
    results = json.loads((run / "results.json").read_text())
    assert results["interrupted"] and not results["records"], output
    seed_dirs = [run / "sac_baseline" / "Pendulum-v1" / f"seed_{seed}" for seed in (0, 1)]
    for seed_dir in seed_dirs:
        events = EventAccumulator(str(seed_dir))
        events.Reload()
        assert len(events.Scalars("eval/return")) >= 2, output
        assert (seed_dir / "checkpoint.pt").exists(), output

    resumed = learn_simple(tmp_path, "--resume", "stop", "--workers", "2", "--backend", backend)
    assert resumed.returncode == 0, output + resumed.stdout + resumed.stderr
    results = json.loads((run / "results.json").read_text())
    assert sorted(r["seed"] for r in results["records"]) == [0, 1]
    assert all(r["steps"] == 3000 for r in results["records"])
    for seed_dir in seed_dirs:  # continued from the checkpoint: every evaluation once, none repeated or lost
        events = EventAccumulator(str(seed_dir))
        events.Reload()
        steps = [e.step for e in events.Scalars("eval/return")]
        assert steps == list(range(200, 3001, 200)), (steps, sorted(p.name for p in seed_dir.iterdir()),
                                                       output + resumed.stdout)
        assert not (seed_dir / "checkpoint.pt").exists()  # finished runs drop theirs

    again = learn_simple(tmp_path, "--resume", "stop")
    assert again.returncode == 0 and "0 runs (2 already finished)" in again.stdout
    mixed = learn_simple(tmp_path, "--resume", "stop", "--steps", "100")
    assert mixed.returncode == 2 and "drop --steps" in mixed.stderr
