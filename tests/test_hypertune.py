"""hypertune.py: the search space, the pruner, and whole sweeps on a synthetic objective with a known optimum."""

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from agents import AGENTS, agent_module
from hypertune import OPTIMIZER, TRIALS, Sweep
from lab import UsageError
from lab.tuning import MedianPruner, SearchSpace, parse_param, trial_metric
from tests.test_learn_simple import BACKENDS, ROOT, run_script

STEPS, REPORTS = 400, 4


def objective(settings: dict) -> float:
    """The synthetic final return: 0 at q_lr = 1e-3, gamma = 0.97, falling off as a paraboloid around them
    (in log10 q_lr), -5 at worst over the search box."""
    return -((math.log10(settings["q_lr"]) + 3) ** 2 + ((settings["gamma"] - 0.97) / 0.05) ** 2)


def synthetic_train(spec, on_eval, on_progress=None):
    """Stands in for lab.rollout.train: reports the objective at each evaluation, lower early (as learning
    curves rise), and stops when on_eval says so. Trials from SYNTHETIC_SLOW_FROM on hang (to be interrupted);
    SYNTHETIC_CRASH_BELOW makes trials whose objective lies below it raise."""
    value = objective(spec.settings)
    if value < float(os.environ.get("SYNTHETIC_CRASH_BELOW", "-inf")):
        raise RuntimeError(f"synthetic crash at q_lr={spec.settings['q_lr']:.3g}")
    trial = int(Path(spec.run_dir).parents[1].name.removeprefix("trial_"))  # runs/NAME/trial_NNN/ENV/seed_S
    if trial >= int(os.environ.get("SYNTHETIC_SLOW_FROM", "1000000")):
        for _ in range(3000):  # short sleeps: Ray's cancel interrupts between them, not inside one
            time.sleep(0.1)
    if trial == int(os.environ.get("SYNTHETIC_DIE_AT", "-1")):
        os._exit(9)  # as if killed: no message, no error file
    evaluations = []
    for step in range(spec.eval_every, spec.steps + 1, spec.eval_every):
        evaluations.append((step, value - 2.0 * (spec.steps - step) / spec.steps))
        if not on_eval(step, evaluations[-1][1]) and step < spec.steps:
            return {"final_return": evaluations[-1][1], "steps": step, "stopped_at": step}
    return {"final_return": evaluations[-1][1], "steps": spec.steps}


def config(**changes) -> dict:
    base = {"agent": "sac_baseline", "steps": {"Pendulum-v1": STEPS}, "seeds": 1, "trials": 16, "random_trials": 4,
            "params": [vars(parse_param("q_lr=1e-4:1e-2:log", "sac_baseline")),
                       vars(parse_param("gamma=0.9:0.999", "sac_baseline"))],
            "settings": {}, "device": "cpu", "reports": REPORTS, "prune": True, "min_reports": 3,
            "prune_margin": 0.0, "prune_warmup": 0.25, "eval_episodes": 1, "log": True, "seed": 0, "command": []}
    return {**base, **changes}


def new_sweep(tmp_path, name="sweep", **changes) -> Sweep:
    run_root = tmp_path / name
    run_root.mkdir()
    (run_root / "config.json").write_text(json.dumps(config(**changes)))
    return Sweep(run_root, config(**changes), train_fn=synthetic_train)


def test_the_median_pruner_stops_trials_below_the_median_once_enough_have_reported():
    pruner = MedianPruner(min_reports=3, warmup=0.5)
    here = ("E", 0, 100)
    assert not pruner.should_prune(0, here, -10.0, 0.5)  # the first report at a checkpoint: nothing to compare
    assert not pruner.should_prune(1, here, -50.0, 0.5)  # the second: still fewer than 3 reports
    assert pruner.should_prune(2, here, -40.0, 0.5)  # third report, below the median (-30) of -10 and -50
    assert not pruner.should_prune(3, here, -20.0, 0.5)  # above the median (-40) of -10, -50, -40
    assert not pruner.should_prune(4, ("E", 0, 200), -1000.0, 1.0)  # another checkpoint has its own reports
    assert not pruner.should_prune(4, ("E", 1, 100), -1000.0, 0.5)  # and so has another seed's
    early = MedianPruner(min_reports=1, warmup=0.5)
    early.should_prune(0, here, 0.0, 0.25)
    assert not early.should_prune(1, here, -1e9, 0.25)  # before the warm-up: recorded, never pruned
    assert early.history[here] == {0: 0.0, 1: -1e9}
    margin = MedianPruner(min_reports=2, margin=0.5, warmup=0.0)
    margin.should_prune(0, here, -100.0, 0.5)
    assert not margin.should_prune(1, here, -140.0, 0.5)  # within the margin: -100 - 0.5 * 100 = -150
    assert not margin.should_prune(2, here, -170.0, 0.5)  # median -120 of -100 and -140; -120 - 60 = -180
    assert margin.should_prune(3, here, -220.0, 0.5)  # median -140 of -100, -140, -170; below -140 - 70
    off = MedianPruner(min_reports=1, warmup=0.0, enabled=False)
    off.should_prune(0, here, 0.0, 0.5)
    assert not off.should_prune(1, here, -1e9, 0.5)


def test_the_search_space_maps_log_and_int_parameters():
    space = SearchSpace([parse_param("q_lr=1e-4:1e-2:log", "sac_baseline"),
                         parse_param("batch_size=32:512:int", "sac_baseline"),
                         parse_param("tau=0.001:0.05", "sac_baseline")])
    assert space.pbounds() == {"q_lr": (-4.0, -2.0), "batch_size": (31.5, 512.5), "tau": (0.001, 0.05)}
    settings = space.settings({"q_lr": -3.0, "batch_size": 100.4, "tau": 0.01})
    assert settings == {"q_lr": pytest.approx(1e-3), "batch_size": 100, "tau": 0.01}
    assert isinstance(settings["batch_size"], int)
    assert space.settings({"q_lr": -3.0, "batch_size": 512.5, "tau": 0.01})["batch_size"] == 512  # the edge


BAD_PARAMS = [
    ("q_lrr=1e-4:1e-3", "unknown hyperparameter 'q_lrr' for sac_baseline; did you mean q_lr"),
    ("q_lr", "expected NAME=LOW:HIGH[:log|:int]"),
    ("q_lr=1e-3", "expected NAME=LOW:HIGH[:log|:int]"),
    ("q_lr=a:b", "bounds must be numbers"),
    ("q_lr=1e-2:1e-4", "the low bound must be below the high one, got 0.01 and 0.0001"),
    ("q_lr=0:1e-2:log", "a log scale needs a positive low bound, got 0"),
    ("q_lr=1e-4:1e-2:exp", "unknown scale 'exp'; valid: log, int"),
    ("batch_size=32:512", "batch_size is an int; write batch_size=32:512:int"),
    ("batch_size=32.5:512:int", "int bounds must be whole numbers"),
    ("autotune=0:1", "autotune is a bool; only int and float hyperparameters can be searched"),
    ("gamma=0.9:1.5", "bound 1.5 is invalid: hyperparameter gamma must lie in [0, 1], got 1.5"),
]


@pytest.mark.parametrize("text,message", BAD_PARAMS, ids=[text for text, _ in BAD_PARAMS])
def test_bad_search_spaces_are_refused_with_the_reason(text, message):
    with pytest.raises(UsageError) as error:
        parse_param(text, "sac_baseline")
    assert message in str(error.value)


def test_bounds_are_checked_with_the_hyperparameters_every_trial_fixes():
    parse_param("elites=2:20:int", "crossq_cem")  # below the default population of 32
    with pytest.raises(UsageError, match=r"bound 20 is invalid: .*elites \(20\) must not exceed population \(10\)"):
        parse_param("elites=2:20:int", "crossq_cem", {"population": 10})


def test_bad_input_on_the_command_line_is_one_line_exit_2_and_leaves_nothing(tmp_path):
    for args, message in [
        (["--param", "q_lr=1e-2:1e-4"], "the low bound must be below the high one"),
        (["--param", "q_lr=1e-4:1e-2", "--param", "q_lr=1e-4:1e-3"], "--param given twice for q_lr"),
        (["--param", "q_lr=1e-4:1e-2", "--set", "q_lr=1e-3"], "q_lr both searched (--param) and fixed (--set)"),
        (["--agent", "crossq_cem", "--set", "q_lr=1e-3", "--set", "gamma=0.99", "--set", "exploration_noise=0.2"],
         "nothing to search: give at least one --param"),
        (["--param", "q_lr=1e-4:1e-2", "--envs", "Pendulum-v1", "tests.toy_envs:Count-v0"],
         "tests.toy_envs:Count-v0 has none"),
        (["--resume", "nothing-here"], "cannot resume 'nothing-here'"),
        (["--param", "q_lr=1e-4:1e-2", "--prune-margin", "-0.5"], "argument --prune-margin: expected a number >= 0"),
        (["--param", "q_lr=1e-4:1e-2", "--steps", "3", "--reports", "4"], "--reports 4 evaluations need at least"),
    ]:
        result = run_script("hypertune.py", tmp_path, *args, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
        assert not (tmp_path / "runs").exists()


def test_a_sweep_finds_the_optimum_and_pruning_saves_compute(tmp_path):
    sweep = new_sweep(tmp_path)
    assert sweep.run(workers=2) == 0
    trials = json.loads((sweep.run_root / TRIALS).read_text())
    assert len(trials) == 16 and {t["status"] for t in trials} <= {"complete", "pruned"}
    best = max((t for t in trials if t["status"] == "complete"), key=lambda t: t["metric"])
    assert objective(best["settings"]) > -0.2, best  # random points over the box average about -1.9
    pruned = [t for t in trials if t["status"] == "pruned"]
    assert pruned and sum(t["steps"] for t in trials) < 16 * STEPS
    for trial in pruned:  # registered with the value reached where it stopped
        assert trial["metric"] == trial["reports"][-1][3] and trial["steps"] == trial["reports"][-1][2] < STEPS
    state = json.loads((sweep.run_root / OPTIMIZER).read_text())
    assert len(state["target"]) == 16
    assert sorted(state["target"]) == pytest.approx(sorted(t["metric"] for t in trials))
    hparams = list((sweep.run_root / "trial_000").glob("events.out.tfevents.*"))
    assert hparams, "no HParams record for the trial"


def test_without_pruning_every_trial_runs_to_the_end(tmp_path):
    sweep = new_sweep(tmp_path, trials=6, prune=False)
    assert sweep.run(workers=2) == 0
    assert all(t["status"] == "complete" and t["steps"] == STEPS for t in sweep.trials)


def test_a_crashing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHETIC_CRASH_BELOW", "-1.0")
    sweep = new_sweep(tmp_path, trials=8, random_trials=8)
    assert sweep.run(workers=2) == 1
    failed = [t for t in sweep.trials if t["status"] == "failed"]
    assert failed and len(failed) < 8 and all("synthetic crash" in t["error"] for t in failed)
    assert all(t["metric"] is not None for t in sweep.trials if t not in failed)
    assert "Traceback" in (sweep.run_root / f"trial_{failed[0]['trial']:03d}" / "error.txt").read_text()


def test_a_worker_that_dies_without_a_word_is_a_failed_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHETIC_DIE_AT", "1")
    sweep = new_sweep(tmp_path, trials=4)
    assert sweep.run(workers=2) == 1
    assert [t["status"] == "failed" for t in sweep.trials] == [False, True, False, False]
    assert "worker died" in sweep.trials[1]["error"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_interrupted_sweep_resumes_with_its_registered_history(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("SYNTHETIC_SLOW_FROM", "5")  # trials 5 and on hang until interrupted
    monkeypatch.chdir(ROOT)  # Ray's workers import the synthetic objective from the driver's directory
    cluster = SimpleNamespace(address=None, cpus_per_run=1, gpus_per_run=None) if backend == "ray" else None
    sweep = new_sweep(tmp_path, trials=10)
    trials_file = sweep.run_root / TRIALS

    def interrupt_when_stuck():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.2)
            trials = json.loads(trials_file.read_text()) if trials_file.exists() else []
            statuses = [t["status"] for t in trials]
            if statuses.count("running") == 2 and len(statuses) == 7:  # trials 0-4 done, 5 and 6 hanging
                break
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C

    handler = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_when_stuck, daemon=True).start()
    try:
        assert sweep.run(workers=2, ray_options=cluster) == 130
    finally:
        signal.signal(signal.SIGINT, handler)
    before = json.loads(trials_file.read_text())
    registered = json.loads((sweep.run_root / OPTIMIZER).read_text())
    assert all(t["status"] in ("complete", "pruned") for t in before[:5])
    assert [t["status"] for t in before[5:]] == ["interrupted", "interrupted"]
    assert len(registered["target"]) == 5

    monkeypatch.delenv("SYNTHETIC_SLOW_FROM")
    resumed = Sweep.resumed(sweep.run_root, train_fn=synthetic_train)
    assert resumed.run(workers=2, ray_options=cluster) == 0
    after = json.loads(trials_file.read_text())
    assert len(after) == 10 and all(t["status"] in ("complete", "pruned") for t in after)
    assert after[:5] == before[:5]  # what was registered is kept as it was
    assert [t["settings"] for t in after[5:7]] == [t["settings"] for t in before[5:7]]  # the interrupted re-run
    state = json.loads((sweep.run_root / OPTIMIZER).read_text())
    assert state["target"][:5] == registered["target"] and len(state["target"]) == 10


def test_the_metric_is_the_iqm_and_normalises_across_environments():
    assert trial_metric({"Pendulum-v1": [-100.0, -200.0, -300.0, -1000.0]}, ["Pendulum-v1"]) == -250.0
    # Pendulum: (-150 - -1200) / (-150 - -1200) = 1; CartPole: (261 - 22) / (500 - 22) = 0.5
    both = ["Pendulum-v1", "CartPole-v1"]
    assert trial_metric({"Pendulum-v1": [-150.0], "CartPole-v1": [261.0]}, both) == pytest.approx(0.75)
    assert trial_metric({"Pendulum-v1": [-150.0]}, both) == pytest.approx(0.5)  # pruned before CartPole: 0 there


@pytest.mark.parametrize("agent", AGENTS)
def test_every_agents_default_search_space_is_valid(agent):
    space = SearchSpace([parse_param(f"{name}={bounds}", agent)
                         for name, bounds in agent_module(agent).SEARCH_SPACE.items()])
    assert space.params


def test_hypertune_runs_a_real_agent_end_to_end_on_its_default_space(tmp_path):
    result = run_script("hypertune.py", tmp_path, "--agent", "sac_baseline", "--envs", "Pendulum-v1", "--steps",
                        "600", "--trials", "3", "--workers", "2", "--set", "learning_starts=200", "--set",
                        "hidden_size=32", "--set", "gamma=0.99", "--eval-episodes", "1", "--name", "real", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no --param: searching sac_baseline's default space: q_lr=1e-4:3e-3:log" in result.stdout
    config = json.loads((tmp_path / "runs" / "real" / "config.json").read_text())
    assert [param["name"] for param in config["params"]] == ["q_lr", "policy_lr", "tau"]  # gamma: fixed by --set
    assert "best: trial" in result.stdout and "python learn_simple.py --agent sac_baseline" in result.stdout
    trials = json.loads((tmp_path / "runs" / "real" / TRIALS).read_text())
    assert len(trials) == 3 and all(t["metric"] is not None for t in trials)
    assert (tmp_path / "runs" / "real" / "trial_000" / "Pendulum-v1" / "seed_0" / "result.json").exists()
