"""Policy files: every agent's saved policy acts in a fresh process exactly as it did when saved; bad files are
one-line errors."""

import subprocess
import sys

import pytest
import torch

from lab import UsageError
from lab.policy import load_policy, read_policy, save_policy
from tests.test_agent_contract import BOX_OBS, SPACES, build, drive, same
from tests.test_learn_simple import ROOT

# A fresh interpreter loads the file and writes the actions it takes on the saved observations.
LOAD_AND_ACT = """
import sys, torch
torch.set_num_threads(1)
from lab.policy import load_policy
agent, _ = load_policy(sys.argv[1])
obs = torch.load(sys.argv[2])
torch.save(agent.act(obs, explore=False), sys.argv[3])
"""


@pytest.mark.parametrize("agent_name,action_space", SPACES)
def test_a_saved_policy_acts_as_the_trained_agent_did_in_a_fresh_process(tmp_path, agent_name, action_space):
    agent = build(agent_name, action_space, seed=3)
    drive(agent, 60)  # past the warm-up: trained networks, moved normalisers
    obs = torch.randn(64, 3) * 2
    expected = agent.act(obs, explore=False)
    save_policy(tmp_path / "policy.pt", agent, agent_name, "synthetic", BOX_OBS, action_space, seed=3, step=60,
                eval_return=-1.0)
    torch.save(obs, tmp_path / "obs.pt")
    result = subprocess.run([sys.executable, "-c", LOAD_AND_ACT, str(tmp_path / "policy.pt"),
                             str(tmp_path / "obs.pt"), str(tmp_path / "actions.pt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert same(torch.load(tmp_path / "actions.pt"), expected)
    # ... and it is not the fresh agent's choice: the file carries the training.
    fresh = build(agent_name, action_space, seed=3)
    assert not same(fresh.act(obs, explore=False), expected)


def test_the_file_holds_the_networks_not_the_buffer_or_optimisers(tmp_path):
    agent_name, action_space = SPACES[0]
    agent = build(agent_name, action_space)
    drive(agent, 40)
    save_policy(tmp_path / "policy.pt", agent, agent_name, "synthetic", BOX_OBS, action_space, seed=0, step=40,
                eval_return=None)
    policy = read_policy(tmp_path / "policy.pt")
    assert set(policy["networks"]) == {"actor", "critic", "critic_target", "log_alpha"}
    assert policy["agent"] == agent_name and policy["hyperparameters"] == agent.h.as_dict()
    loaded, _ = load_policy(tmp_path / "policy.pt")
    assert loaded.buffer.capacity == 1  # nothing of the replay is kept or allocated


@pytest.mark.parametrize("content,message", [
    (None, "no policy file"),
    (b"not a zip archive", "not a readable policy file"),
    ({"weights": torch.zeros(2)}, "not a Mini RL Lab policy file"),
    ({"format": "mini-rl-lab policy", "version": 99}, "version 99"),
])
def test_a_bad_policy_file_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "policy.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UsageError, match=message) as error:
        read_policy(path)
    assert "\n" not in str(error.value)


def test_a_truncated_policy_file_is_a_one_line_error(tmp_path):
    agent_name, action_space = SPACES[0]
    save_policy(tmp_path / "policy.pt", build(agent_name, action_space), agent_name, "synthetic", BOX_OBS,
                action_space, seed=0, step=0, eval_return=None)
    whole = (tmp_path / "policy.pt").read_bytes()
    (tmp_path / "policy.pt").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(UsageError, match="not a readable policy file"):
        read_policy(tmp_path / "policy.pt")


def test_another_environments_spaces_are_refused(tmp_path):
    agent_name, action_space = SPACES[0]
    save_policy(tmp_path / "policy.pt", build(agent_name, action_space), agent_name, "synthetic", BOX_OBS,
                action_space, seed=0, step=0, eval_return=None)
    with pytest.raises(UsageError, match="differs from MountainCarContinuous-v0's"):
        load_policy(tmp_path / "policy.pt", env="MountainCarContinuous-v0")
