"""learn_vectorised.py as a user runs it: every agent on vectorised environments, its own options, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import AGENTS as ALL_AGENTS, split_preset
from tests.test_learn_simple import ROOT, run_script

# Every agent, small: the off-policy agents' quick presets, updating from step 600, and the PPOs' vectorised preset
# (their defaults would not update in this budget).
OFF_POLICY = ["sac_baseline:quick", "crossq:quick", "sac_crossq_bro:quick", "crossq_cem:quick"]
ON_POLICY = ["ppo_baseline:vectorised", "ppo_recurrent:vectorised"]


def learn_vectorised(cwd, *args, timeout=300):
    return run_script("learn_vectorised.py", cwd, *args, timeout=timeout)


def test_the_agents_here_are_every_agent():
    assert sorted(split_preset(spec)[0] for spec in OFF_POLICY + ON_POLICY) == sorted(ALL_AGENTS)


@pytest.mark.parametrize("agents,settings", [(OFF_POLICY, ["--set", "learning_starts=600"]), (ON_POLICY, [])],
                         ids=["off_policy", "on_policy"])
def test_every_agent_trains_on_a_batch_of_torch_environments(tmp_path, agents, settings):
    result = learn_vectorised(tmp_path, "--agent", *agents, "--envs", "TorchPendulum-v0", "--num-envs", "4",
                              "--steps", "800", "--log-every", "200", "--eval-episodes", "1", "--eval-every", "0",
                              "--name", "all", *settings)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "all"
    results = json.loads((run / "results.json").read_text())
    assert json.loads((run / "config.json").read_text())["num_envs"] == 4
    assert sorted(r["agent"] for r in results["records"]) == sorted(agents) and not results["failures"]
    for record in results["records"]:
        assert record["steps"] == 800 and record["env"] == "TorchPendulum-v0"
        events = EventAccumulator(str(run / record["agent"].replace(":", "-") / "TorchPendulum-v0" / "seed_0"))
        events.Reload()
        scalars = events.Tags()["scalars"]
        assert any(tag.startswith("agent/") for tag in scalars), (record["agent"], scalars)  # it updated
        # 4 copies of 200-step episodes, 200 steps each: 4 episodes
        assert len(events.Scalars("charts/episodic_return")) == 4


@pytest.mark.parametrize("vectorisation", ["sync", "async"])
def test_gymnasium_copies_in_this_process_or_one_process_each(tmp_path, vectorisation):
    result = learn_vectorised(tmp_path, "--agent", "sac_baseline:quick", "--envs", "Pendulum-v1", "--num-envs",
                              "3", "--vectorisation", vectorisation, "--steps", "1203", "--eval-episodes", "1",
                              "--set", "learning_starts=600", "--name", "copies")
    assert result.returncode == 0, result.stderr
    (record,) = json.loads((tmp_path / "runs" / "copies" / "results.json").read_text())["records"]
    assert record["steps"] == 1203 and record["train_return"] < 0


@pytest.mark.parametrize("args,message", [
    (["--num-envs", "0"], "argument --num-envs: expected a positive integer, got 0"),
    (["--vectorisation", "threads"], "argument --vectorisation: invalid choice: 'threads'"),
    (["--compile", "cudagraphs", "--device", "cpu"], "--compile cudagraphs needs a CUDA device, got --device cpu"),
    (["--envs", "TorchPendulm-v0"], "unknown environment or suite 'TorchPendulm-v0'; did you mean TorchPendulum-v0"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, args, message):
    result = learn_vectorised(tmp_path, "--agent", "sac_baseline", *args, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("env,vectorisation", [("TorchPendulum-v0", "sync"), ("Pendulum-v1", "async")])
def test_ctrl_c_keeps_the_logs_and_resume_finishes_every_run(tmp_path, env, vectorisation):
    """With asynchronous environments Ctrl-C reaches their processes too; the run must still end as
    interrupted, and resume."""
    args = ["--agent", "sac_baseline:quick", "--envs", env, "--seeds", "2", "--num-envs", "2", "--vectorisation",
            vectorisation, "--steps", "2000", "--eval-every", "400", "--eval-episodes", "1", "--checkpoint-every",
            "400", "--set", "learning_starts=200", "--name", "stop"]
    process = subprocess.Popen([sys.executable, str(ROOT / "learn_vectorised.py"), *args], cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # seed 0 is past its second checkpoint
        seen.append(process.stdout.readline())
        if "seed 0]       800/2000 steps" in seen[-1]:
            break
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    output = "".join(seen) + stdout + stderr
    assert process.returncode == 130, output
    run = tmp_path / "runs" / "stop"
    results = json.loads((run / "results.json").read_text())
    assert results["interrupted"] and [f["error"] for f in results["failures"]] == ["interrupted", "not started"]
    seed_dir = run / "sac_baseline-quick" / env / "seed_0"
    assert (seed_dir / "checkpoint.pt").exists(), output

    resumed = learn_vectorised(tmp_path, "--resume", "stop")
    assert resumed.returncode == 0, output + resumed.stdout + resumed.stderr
    results = json.loads((run / "results.json").read_text())
    assert sorted(r["seed"] for r in results["records"]) == [0, 1] and not results["failures"]
    events = EventAccumulator(str(seed_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/return")] == list(range(400, 2001, 400)), output
