"""ppo_recurrent's memory (reset where episodes end and where evaluation episodes start; replayed exactly by the
update) and the partially observable tasks of envs/partial.py."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import tests.toy_envs  # noqa: F401  (registers Remember-v0)
from agents import make_agent
from envs import make_env
from lab import UsageError
from lab.rollout import RunSpec, episode_returns, train

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
SMALL = {"num_steps": 24, "num_minibatches": 3, "update_epochs": 1, "hidden_size": 8, "memory_size": 8,
         "sequence_length": 6, "norm_obs": False}
ACTIONS = {"box": gym.spaces.Box(-1.0, 1.0, (2,), np.float32), "discrete": gym.spaces.Discrete(3)}


def fill_rollout(agent, num_envs, seed=0):
    """Act and observe synthetic steps until the rollout is full (the next update() learns), with episodes
    ending in every way: terminated, truncated, and both environments at once."""
    rng = torch.Generator().manual_seed(seed)
    for t in range(agent.h.num_steps):
        agent.act(torch.randn(num_envs, 3, generator=rng))
        terminated = torch.tensor([t % 7 == 6] + [t % 11 == 10] * (num_envs - 1))
        truncated = torch.tensor([t % 5 == 4] + [t % 11 == 10] * (num_envs - 1))
        agent.observe(torch.randn(num_envs, 3, generator=rng), torch.randn(num_envs, generator=rng), terminated,
                      truncated)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_memory_is_zeroed_exactly_where_an_episode_ended(cell):
    agent = make_agent("ppo_recurrent", OBS, ACTIONS["box"], num_envs=3, settings={**SMALL, "cell": cell})
    obs, no = torch.randn(3, 3), torch.zeros(3, dtype=torch.bool)
    agent.act(obs)
    agent.observe(obs, torch.zeros(3), no, no)
    agent.act(obs)
    assert (agent.state.abs().sum(-1) > 0).all()
    agent.observe(obs, torch.zeros(3), torch.tensor([True, False, False]), torch.tensor([False, True, False]))
    ended = agent.state.abs().sum(-1) == 0
    assert ended.tolist() == [True, True, False]
    kept = agent.state[2].clone()
    t = agent.step
    agent.act(obs)  # the step after: stored as an episode start where one ended, from the state it started in
    assert agent.rollout["episode_start"][t].tolist() == [True, True, False]
    assert torch.equal(agent.rollout["state"][t, 2], kept) and (agent.rollout["state"][t, :2] == 0).all()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("num_envs", [1, 2])
def test_the_update_replays_the_recurrence_that_acted(cell, action, num_envs):
    agent = make_agent("ppo_recurrent", OBS, ACTIONS[action], num_envs=num_envs, settings={**SMALL, "cell": cell})
    fill_rollout(agent, num_envs)
    rollout = agent.rollout
    with torch.no_grad():  # what the update computes for its minibatches, before any gradient step
        out, values = agent.replay(agent.replay_inputs())
        logprobs = agent.network.log_prob(out, agent.sequences(rollout["actions"]))
    torch.testing.assert_close(logprobs, agent.sequences(rollout["logprobs"]))
    torch.testing.assert_close(values, agent.sequences(rollout["values"]))
    # A replay from zero states, as if the stored ones were ignored, would differ: the check can fail.
    inputs = agent.replay_inputs()
    with torch.no_grad():
        forgetful, _ = agent.replay({**inputs, "state": torch.zeros_like(inputs["state"])})
    assert not torch.allclose(forgetful, out)
    # One epoch of one minibatch: the ratio the update starts from is 1 (KL 0, nothing clipped).
    agent.h.num_minibatches = 1
    metrics = agent.update()
    assert abs(float(metrics["approx_kl"])) < 1e-6 and float(metrics["clipfrac"]) == 0.0


def test_each_evaluation_episode_starts_with_an_empty_memory():
    env = make_env("tests.toy_envs:RememberContinuous-v0")
    agent = make_agent("ppo_recurrent", env.observation_space, env.action_space, settings=SMALL)
    cue, no = torch.tensor([[1.0, 1.0]]), torch.zeros(1, dtype=torch.bool)
    for _ in range(3):  # some training-time memory, which evaluation must neither use nor disturb
        agent.act(cue)
        agent.observe(cue, torch.zeros(1), no, no)
    training_memory = agent.state.clone()
    together = episode_returns(agent, env, 3, seed=10, device="cpu")
    alone = [episode_returns(agent, env, 1, seed=10 + i, device="cpu")[0] for i in range(3)]
    assert together == alone
    assert torch.equal(agent.state, training_memory)
    # Without the reset, the memory of one episode leaks into the next: the check can fail.
    agent.reset_evaluation = lambda: None
    assert episode_returns(agent, env, 3, seed=10, device="cpu")[1:] != alone[1:]


@pytest.mark.parametrize("settings,message", [
    ({"cell": "rnn"}, "hyperparameter cell must be one of lstm, gru, got 'rnn'"),
    ({"sequence_length": 30}, "sequence_length (30) must divide num_steps (2048)"),
])
def test_bad_memory_settings_are_one_line_errors(settings, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_agent("ppo_recurrent", OBS, ACTIONS["box"], settings=settings)


def test_memory_earns_what_a_memoryless_policy_cannot():
    """Remember-v0 pays 4 per episode for recalling the first observation's cue, 2 on average without memory."""
    # 50 evaluation episodes: a policy without memory, always naming the same cue, scores 4 x (its share).
    common = dict(env="tests.toy_envs:Remember-v0", seed=0, steps=6_000, eval_episodes=50, log=False,
                  progress=False)
    settings = {"num_steps": 256, "num_minibatches": 4, "sequence_length": 8, "norm_reward": False}
    recurrent = train(RunSpec(agent="ppo_recurrent", settings=settings, **common))
    assert recurrent["final_return"] > 3.5, recurrent["evaluations"]
    memoryless = train(RunSpec(agent="ppo_baseline", settings={"num_steps": 256, "num_minibatches": 4}, **common))
    assert memoryless["final_return"] < 3.0, memoryless["evaluations"]


# The velocity entries of each task's observation, as its documentation lists them.
VELOCITIES = {"CartPoleNoVel-v1": ("CartPole-v1", [1, 3]), "PendulumNoVel-v1": ("Pendulum-v1", [2]),
              "MountainCarContinuousNoVel-v0": ("MountainCarContinuous-v0", [1]),
              "LunarLanderNoVel-v3": ("LunarLander-v3", [2, 3, 5]),
              "LunarLanderContinuousNoVel-v3": ("LunarLanderContinuous-v3", [2, 3, 5])}


@pytest.mark.parametrize("name", list(VELOCITIES))
def test_a_partial_task_removes_exactly_the_velocities(name):
    full_id, velocities = VELOCITIES[name]
    full, partial = make_env(full_id), make_env(name)
    kept = [i for i in range(full.observation_space.shape[0]) if i not in velocities]
    assert partial.observation_space == gym.spaces.Box(full.observation_space.low[kept],
                                                       full.observation_space.high[kept])
    assert partial.spec.max_episode_steps == full.spec.max_episode_steps
    full.action_space.seed(0)
    obs_full, _ = full.reset(seed=7)
    obs_partial, _ = partial.reset(seed=7)
    for _ in range(20):
        np.testing.assert_array_equal(obs_partial, obs_full[kept])
        action = full.action_space.sample()
        obs_full, reward_full, *_ = full.step(action)
        obs_partial, reward_partial, *_ = partial.step(action)
        assert reward_partial == reward_full
    assert np.abs(obs_full[velocities]).sum() > 0  # what was removed was not zero


def test_the_partial_suite_runs_the_masked_tasks():
    from envs import resolve_envs
    assert list(resolve_envs(["partial"])) == ["CartPoleNoVel-v1", "PendulumNoVel-v1",
                                               "LunarLanderContinuousNoVel-v3"]
