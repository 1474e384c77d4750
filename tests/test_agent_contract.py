"""The interface every agent implements, driven with synthetic tensors only (no environment)."""

import io

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import AGENTS, make_agent

# Small networks and short warm-ups, so that every part of each agent runs in a fraction of a second.
SMALL = {
    "sac_baseline": {"learning_starts": 16, "batch_size": 8, "hidden_size": 16},
    "ppo_baseline": {"num_steps": 16, "num_minibatches": 2, "update_epochs": 2, "hidden_size": 8},
    "ppo_recurrent": {"num_steps": 16, "num_minibatches": 2, "update_epochs": 2, "hidden_size": 8,
                      "memory_size": 8, "sequence_length": 4},
    "crossq": {"learning_starts": 16, "batch_size": 8, "critic_hidden": 16, "actor_hidden": 16},
    # reset_every 9: the checkpoint and seeding tests also cover resets.
    "sac_crossq_bro": {"learning_starts": 16, "batch_size": 8, "critic_hidden": 16, "actor_hidden": 16,
                       "reset_every": 9},
    "crossq_cem": {"learning_starts": 16, "batch_size": 8, "critic_hidden": 16, "population": 8, "elites": 2},
}
BOX_OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
BOX_ACTION = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 0.5], np.float32))
MIXED_ACTIONS = [  # what on-policy agents also take: a product of Box and discrete parts
    gym.spaces.Tuple((gym.spaces.Discrete(2), BOX_ACTION)),
    gym.spaces.Dict({"gear": gym.spaces.MultiDiscrete([3, 2], start=[1, 0]), "throttle": BOX_ACTION}),
]
ON_POLICY = ("ppo_baseline", "ppo_recurrent")
SPACES = ([(agent, BOX_ACTION) for agent in AGENTS] + [(agent, gym.spaces.Discrete(3)) for agent in ON_POLICY]
          + [(agent, space) for agent in ON_POLICY for space in MIXED_ACTIONS])
NUM_ENVS = 2


def build(agent, action_space, seed=0):
    return make_agent(agent, BOX_OBS, action_space, num_envs=NUM_ENVS, seed=seed, total_steps=200,
                      settings=SMALL[agent])


def drive(agent, steps, seed=123):
    """Feed `steps` synthetic transitions; return the metrics dicts that update() produced, in order."""
    rng = torch.Generator().manual_seed(seed)
    obs = torch.randn(NUM_ENVS, 3, generator=rng)
    produced = []
    for t in range(steps):
        agent.act(obs)
        next_obs = torch.randn(NUM_ENVS, 3, generator=rng)
        reward = torch.randn(NUM_ENVS, generator=rng)
        terminated = torch.tensor([t % 7 == 6, False])
        truncated = torch.tensor([False, t % 5 == 4])
        agent.observe(next_obs, reward, terminated, truncated)
        metrics = agent.update()
        if metrics is not None:
            produced.append(metrics)
        obs = next_obs
    return produced


def parts(action):
    """The tensors of an action in a fixed order: one tensor, or those of a tuple or dict of them."""
    if isinstance(action, tuple):
        return [t for part in action for t in parts(part)]
    if isinstance(action, dict):
        return [t for key in sorted(action) for t in parts(action[key])]
    return [action]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(parts(a), parts(b), strict=True))


def check_action(action, space) -> None:
    """`action` holds NUM_ENVS actions, each in `space`, in the space's own structure."""
    if isinstance(space, gym.spaces.Tuple):
        assert isinstance(action, tuple) and len(action) == len(space.spaces)
        for part, subspace in zip(action, space.spaces):
            check_action(part, subspace)
    elif isinstance(space, gym.spaces.Dict):
        assert isinstance(action, dict) and list(action) == list(space.spaces)
        for key, subspace in space.spaces.items():
            check_action(action[key], subspace)
    elif isinstance(space, gym.spaces.Discrete):
        assert action.shape == (NUM_ENVS,) and action.dtype == torch.int64
        assert bool(((action >= space.start) & (action < space.start + space.n)).all())
    elif isinstance(space, gym.spaces.MultiDiscrete):
        start = torch.as_tensor(space.start)
        assert action.shape == (NUM_ENVS, *space.shape) and action.dtype == torch.int64
        assert bool(((action >= start) & (action < start + torch.as_tensor(space.nvec))).all())
    else:
        low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
        assert action.shape == (NUM_ENVS, *space.shape) and action.dtype == torch.float32
        assert bool(((action >= low) & (action <= high)).all())


def test_every_agent_is_covered():
    assert set(SMALL) == set(AGENTS)


@pytest.mark.parametrize("agent_name,action_space", SPACES)
def test_actions_have_the_right_shape_and_stay_in_bounds(agent_name, action_space):
    agent = build(agent_name, action_space)
    obs = torch.randn(NUM_ENVS, 3) * 100  # far outside anything seen: bounds must still hold
    drive(agent, 40)
    for explore in (True, False):
        check_action(agent.act(obs, explore=explore), action_space)


@pytest.mark.parametrize("agent_name,action_space", SPACES)
def test_update_returns_finite_metric_tensors_only_when_it_learns(agent_name, action_space):
    agent = build(agent_name, action_space)
    assert agent.update() is None  # nothing observed yet: nothing to learn from
    produced = drive(agent, 40)
    assert produced, "no update in 40 steps"
    for metrics in produced:
        assert metrics and all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
                               for v in metrics.values())
        assert all(torch.isfinite(v) for v in metrics.values())


def evaluation_start(agent, obs):
    """The deterministic action that starts an evaluation episode (from an empty memory, for an agent with one)."""
    if hasattr(agent, "reset_evaluation"):
        agent.reset_evaluation()
    return agent.act(obs, explore=False)


@pytest.mark.parametrize("agent_name,action_space", SPACES)
def test_evaluation_has_no_side_effects(agent_name, action_space):
    evaluated, untouched = build(agent_name, action_space), build(agent_name, action_space)
    drive(evaluated, 40)
    drive(untouched, 40)
    obs = torch.randn(NUM_ENVS, 3)
    first = evaluation_start(evaluated, obs)
    assert same(first, evaluation_start(evaluated, obs))
    # No random draw, normaliser update or stored step: training goes on as if evaluation never happened.
    assert same(evaluated.act(obs, explore=True), untouched.act(obs, explore=True))
    metrics_a, metrics_b = drive(evaluated, 20, seed=5), drive(untouched, 20, seed=5)
    assert [{k: float(v) for k, v in m.items()} for m in metrics_a] == \
           [{k: float(v) for k, v in m.items()} for m in metrics_b]


@pytest.mark.parametrize("agent_name,action_space", SPACES)
@pytest.mark.parametrize("steps_before", [30, 31])  # two phases of delayed actor updates
def test_checkpoint_round_trip_continues_exactly(agent_name, action_space, steps_before):
    original = build(agent_name, action_space)
    drive(original, steps_before, seed=1)
    saved = io.BytesIO()
    torch.save(original.state_dict(), saved)  # as a checkpoint does: no tensor may stay shared with `original`
    saved.seek(0)
    state = torch.load(saved, weights_only=False)
    restored = build(agent_name, action_space, seed=99)  # different init and stream: all must come from state
    restored.load_state_dict(state)
    obs = torch.randn(NUM_ENVS, 3)
    assert same(original.act(obs, explore=False), restored.act(obs, explore=False))
    # Training on from the checkpoint gives the same exploration, the same updates, the same policy.
    metrics_a, metrics_b = drive(original, 30, seed=2), drive(restored, 30, seed=2)
    assert len(metrics_a) == len(metrics_b) > 0
    for a, b in zip(metrics_a, metrics_b):  # the same keys too: nothing an update reports is lost
        assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    assert same(original.act(obs, explore=True), restored.act(obs, explore=True))


def tensors(state):
    """Every tensor in a (nested) state dict, in a fixed order."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for key in sorted(state, key=str) for t in tensors(state[key])]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in tensors(item)]
    return []


@pytest.mark.parametrize("agent_name,action_space", SPACES)
def test_same_seed_same_result(agent_name, action_space):
    states = []
    for seed in (7, 7, 8):
        agent = build(agent_name, action_space, seed=seed)
        drive(agent, 40)
        states.append(agent.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(tensors(states[0]), tensors(states[1])))
    # Another seed learns something else (the RNG states, which differ by construction, left out).
    learned = [tensors({k: v for k, v in state.items() if k != "rng"}) for state in (states[0], states[2])]
    assert not all(torch.equal(a, b) for a, b in zip(*learned) if a.shape == b.shape)
