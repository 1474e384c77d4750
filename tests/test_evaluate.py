"""What a run keeps, and what uses it: policy.pt and best.pt, evaluate.py, --init-from, the checks around them."""

import json

import pytest
import torch

from lab.cli import canonical_agents
from lab.policy import read_policy
from tests.test_learn_simple import SMALL_SAC, learn_simple, run_script

BRIEF = ["--envs", "Pendulum-v1", "--steps", "600", "--eval-every", "200", "--eval-episodes", "2"]
SHORT = ["--agent", "sac_baseline", *BRIEF, *SMALL_SAC]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-seed run in a scratch directory: (that directory, the run's directory)."""
    cwd = tmp_path_factory.mktemp("keep")
    result = learn_simple(cwd, *SHORT, "--seeds", "2", "--name", "keep")
    assert result.returncode == 0, result.stderr
    return cwd, cwd / "runs" / "keep"


def test_a_run_keeps_its_final_and_its_best_policy(trained):
    _, run = trained
    for seed in (0, 1):
        seed_dir = run / "sac_baseline" / "Pendulum-v1" / f"seed_{seed}"
        record = json.loads((seed_dir / "result.json").read_text())
        final, best = read_policy(seed_dir / "policy.pt"), read_policy(seed_dir / "best.pt")
        assert (final["step"], final["eval_return"]) == (600, record["final_return"])
        best_step, best_return = max(record["evaluations"], key=lambda evaluation: evaluation[1])
        assert (best["step"], best["eval_return"]) == (best_step, best_return)
        assert final["env"] == "Pendulum-v1" and final["seed"] == seed and final["agent"] == "sac_baseline"
        assert not (seed_dir / "checkpoint.pt").exists()


def test_evaluate_prints_every_policy_and_the_run_tables_and_records_a_video(trained):
    cwd, run = trained
    result = run_script("evaluate.py", cwd, "runs/keep", "--episodes", "3", "--video", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("runs/keep/") for line in lines) == 4  # two seeds, policy.pt and best.pt each
    assert "final policies (policy.pt)" in result.stdout and "best policies (best.pt)" in result.stdout
    assert sum(line.startswith("sac_baseline ") and " 2/2 " in line for line in lines) == 2
    assert (run / "sac_baseline" / "Pendulum-v1" / "seed_0" / "policy.gif").stat().st_size > 0
    one = run_script("evaluate.py", cwd, "runs/keep/sac_baseline/Pendulum-v1/seed_1/best.pt", "--episodes", "1")
    assert one.returncode == 0 and sum(line.startswith("runs/") for line in one.stdout.splitlines()) == 1


def test_init_from_starts_from_the_saved_networks(trained):
    cwd, run = trained
    source = run / "sac_baseline" / "Pendulum-v1" / "seed_0"
    result = learn_simple(cwd, *SHORT, "--init-from", str(source / "policy.pt"), "--name", "tuned")
    assert result.returncode == 0, result.stderr
    tuned = cwd / "runs" / "tuned"
    record = json.loads((tuned / "sac_baseline" / "Pendulum-v1" / "seed_0" / "result.json").read_text())
    # Same networks, same evaluation episodes (seed 0, 2 episodes): the first point is the saved policy's score.
    assert record["evaluations"][0] == [0, json.loads((source / "result.json").read_text())["final_return"]]
    assert json.loads((tuned / "config.json").read_text())["init_from"] == str((source / "policy.pt").resolve())


@pytest.mark.parametrize("args,message", [
    (["--init-from", "missing.pt"], "no policy file at missing.pt"),
    (["--init-from", "runs/keep/sac_baseline/Pendulum-v1/seed_0/result.json"], "not a readable policy file"),
    (["--init-from", "runs/keep/sac_baseline/Pendulum-v1/seed_0/policy.pt", "--agent", "crossq:quick"],
     "holds a sac_baseline policy; it cannot start crossq:quick"),
    (["--init-from", "runs/keep/sac_baseline/Pendulum-v1/seed_0/policy.pt", "--envs", "MountainCarContinuous-v0"],
     "differs from MountainCarContinuous-v0's"),
    (["--init-from", "runs/keep/sac_baseline/Pendulum-v1/seed_0/policy.pt", "--set", "hidden_size=16"],
     "its networks do not fit this agent"),
])
def test_a_bad_init_from_is_one_line_and_writes_nothing(trained, args, message):
    cwd, _ = trained
    result = learn_simple(cwd, *(BRIEF if "--agent" in args else SHORT), "--name", "refused", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (cwd / "runs" / "refused").exists()


@pytest.mark.parametrize("args,message", [
    (["missing_dir"], "missing_dir does not exist"),
    (["runs/keep/sac_baseline/Pendulum-v1/seed_0/result.json"], "not a readable policy file"),
    (["runs/keep", "--env", "MountainCarContinuous-v0"], "differs from MountainCarContinuous-v0's"),
])
def test_evaluate_refuses_bad_input_in_one_line(trained, args, message):
    cwd, _ = trained
    result = run_script("evaluate.py", cwd, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resume_from_a_checkpoint_cut_short_says_what_to_do(tmp_path):
    result = learn_simple(tmp_path, *SHORT, "--name", "cut", "--checkpoint-every", "300", "--steps", "400")
    assert result.returncode == 0, result.stderr
    seed_dir = tmp_path / "runs" / "cut" / "sac_baseline" / "Pendulum-v1" / "seed_0"
    # As if the run had been stopped after its checkpoint, and the checkpoint's copy then cut short.
    (seed_dir / "result.json").unlink()
    torch.save({"some": torch.zeros(1000)}, seed_dir / "checkpoint.pt")
    whole = (seed_dir / "checkpoint.pt").read_bytes()
    (seed_dir / "checkpoint.pt").write_bytes(whole[:len(whole) // 2])
    resumed = learn_simple(tmp_path, "--resume", "cut")
    assert resumed.returncode == 2, resumed.stderr
    assert "checkpoint" in resumed.stderr and "is unreadable" in resumed.stderr and "delete it" in resumed.stderr
    assert len(resumed.stderr.strip().splitlines()) == 1


def test_cuda_flag_is_device_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the flag would run")
    result = run_script("learn_vectorised.py", tmp_path, "--log", "--cuda", "--agent", "sac_baseline",
                        "--envs", "Pendulum-v1", "--steps", "100")
    assert result.returncode == 2 and "no CUDA device" in result.stderr, result.stderr


def test_the_seeds_agent_name_is_an_alias(capsys):
    assert canonical_agents(["sac_crossq", "sac_crossq:quick", "sac_baseline"]) == \
        ["crossq", "crossq:quick", "sac_baseline"]
    assert capsys.readouterr().out.count("seed's name for crossq") == 2
