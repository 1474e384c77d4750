"""Policy files: what a run keeps of its trained agent, and one call to load one into an agent ready to act.

A run writes `policy.pt` (the final policy) and `best.pt` (the one with the best evaluation so far, as SB3's
EvalCallback keeps) beside result.json. Each is a plain dict:

    format, version          "mini-rl-lab policy", VERSION
    agent, hyperparameters   the agent spec ('sac_baseline:droq') and every hyperparameter's value
    seed                     the run's seed (crossq_cem's deterministic search draws from a stream seeded by it)
    env                      the environment id it was trained on
    observation_space, action_space   the spaces, as plain values
    networks                 agent.policy_state_dict(): the networks and what acting needs besides (PPO's
                             observation statistics); no replay buffer, no optimisers
    step, eval_return        when it was saved, and its evaluation's mean return then

It is read with `torch.load(weights_only=True)`: only tensors and plain values, so loading a file from
elsewhere cannot run code.

    from lab.policy import load_policy
    agent, policy = load_policy("runs/keep/sac_baseline/Pendulum-v1/seed_0/policy.pt", device="cpu")
    action = agent.act(obs, explore=False)      # obs [batch, *obs_shape], a tensor on that device
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from agents import make_agent
from envs import make_env
from lab import UsageError

FORMAT, VERSION = "mini-rl-lab policy", 1
POLICY, BEST = "policy.pt", "best.pt"


def describe_space(space: gym.Space) -> dict:
    """A Box, Discrete or MultiDiscrete space, or a Tuple or Dict of them, as plain values (what weights_only
    loading accepts), enough to rebuild it."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": space.low.flatten().tolist(), "high": space.high.flatten().tolist()}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [describe_space(subspace) for subspace in space.spaces]}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {key: describe_space(subspace) for key, subspace in space.spaces.items()}}
    raise UsageError(f"policy files hold Box, Discrete and MultiDiscrete spaces and Tuples and Dicts of them, "
                     f"got {space}")


def space_from_description(description: dict) -> gym.Space:
    kind = description["type"]
    if kind == "Discrete":
        return gym.spaces.Discrete(description["n"], start=description["start"])
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(description["nvec"], start=description["start"])
    if kind == "Tuple":
        return gym.spaces.Tuple([space_from_description(subspace) for subspace in description["spaces"]])
    if kind == "Dict":
        return gym.spaces.Dict({key: space_from_description(subspace)
                                for key, subspace in description["spaces"].items()})
    shape, dtype = tuple(description["shape"]), np.dtype(description["dtype"])
    return gym.spaces.Box(np.asarray(description["low"], dtype=dtype).reshape(shape),
                          np.asarray(description["high"], dtype=dtype).reshape(shape), dtype=dtype)


def save_policy(path: Path, agent, agent_spec: str, env_id: str, observation_space, action_space, seed: int,
                step: int, eval_return: float | None) -> None:
    """Write `agent`'s policy file at `path`, atomically (a copy cut short never replaces a good file)."""
    policy = {"format": FORMAT, "version": VERSION, "agent": agent_spec, "hyperparameters": agent.h.as_dict(),
              "seed": seed, "env": env_id, "observation_space": describe_space(observation_space),
              "action_space": describe_space(action_space), "networks": agent.policy_state_dict(),
              "step": step, "eval_return": eval_return}
    temporary = path.with_suffix(".tmp")
    torch.save(policy, temporary)
    os.replace(temporary, path)


def read_policy(path: str | Path) -> dict:
    """The policy file at `path`, checked to be one of this format and version; a one-line UsageError if not."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no policy file at {path}")
    try:
        policy = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"{path} is not a readable policy file (truncated, damaged, or not a torch file: "
                         f"{reason[:120]})") from None
    if not isinstance(policy, dict) or policy.get("format") != FORMAT:
        raise UsageError(f"{path} is not a Mini RL Lab policy file (it has no format '{FORMAT}'); "
                         f"policy files are the policy.pt and best.pt that runs write")
    if policy.get("version") != VERSION:
        raise UsageError(f"{path} is a policy file of version {policy.get('version')}; this lab reads version "
                         f"{VERSION}")
    return policy


def check_env(policy: dict, env_id: str, path: str | Path) -> None:
    """`env_id`'s spaces must be those the policy was trained with."""
    env = make_env(env_id)
    try:
        for kind, space in (("observation", env.observation_space), ("action", env.action_space)):
            if describe_space(space) != policy[f"{kind}_space"]:
                raise UsageError(f"{path} was trained on {policy['env']}, whose {kind} space "
                                 f"{space_from_description(policy[f'{kind}_space'])} differs from {env_id}'s {space}")
    finally:
        env.close()


def load_networks(agent, policy: dict, path: str | Path) -> None:
    """The policy's networks into `agent` (built for the same agent and spaces); a shape mismatch (another
    network width) is a one-line UsageError."""
    try:
        agent.load_policy_state_dict(policy["networks"])
    except (RuntimeError, KeyError) as error:
        first = str(error).strip().splitlines()[0]
        raise UsageError(f"{path}: its networks do not fit this agent ({first[:160]})") from None


def load_policy(path: str | Path, device="cpu", env: str | None = None):
    """(agent, policy) from the policy file at `path`: the agent built as it was trained, on `device`, ready to
    `act(obs, explore=False)`. Given `env`, its spaces are checked against the policy's first."""
    policy = read_policy(path)
    if env is not None:
        check_env(policy, env, path)
    agent = make_agent(policy["agent"], space_from_description(policy["observation_space"]),
                       space_from_description(policy["action_space"]), device=device, seed=policy["seed"],
                       total_steps=1, settings=policy["hyperparameters"])
    load_networks(agent, policy, path)
    return agent, policy
