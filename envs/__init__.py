"""Making environments by name: any registered Gymnasium id, or a named suite of them with step budgets."""

from __future__ import annotations

import copy
import importlib

import gymnasium as gym
import numpy as np

from agents import closest
from envs import hybrid, partial, torch_envs
from lab import UsageError

torch_envs.register()  # the batched torch environments, selectable by name like any other
hybrid.register()  # the lab's environment with hybrid (discrete and continuous) actions
partial.register()  # partially observable tasks: the velocities removed from the observation

# Default training budget (environment steps) per environment: what a full run of a typical agent needs to
# get close to its plateau. The runners use it when --steps is not given.
DEFAULT_STEPS = {
    "Pendulum-v1": 20_000,
    "MountainCarContinuous-v0": 100_000,
    "CartPole-v1": 100_000,
    "Acrobot-v1": 100_000,
    "LunarLanderContinuous-v3": 300_000,
    "LunarLander-v3": 300_000,
    "BipedalWalker-v3": 500_000,
    "BipedalWalkerHardcore-v3": 2_000_000,
    "HalfCheetah-v5": 1_000_000,
    "Hopper-v5": 1_000_000,
    "Walker2d-v5": 1_000_000,
    "Ant-v5": 1_000_000,
    "Humanoid-v5": 1_000_000,
    "Swimmer-v5": 1_000_000,
    "InvertedPendulum-v5": 100_000,
    "InvertedDoublePendulum-v5": 300_000,
    "Reacher-v5": 200_000,
    "Pusher-v5": 500_000,
    "TorchPendulum-v0": 20_000,
    "TorchCartPoleContinuous-v0": 100_000,
    "TorchCartPole-v0": 100_000,
    "HybridCartPole-v1": 100_000,
    "HybridCartPoleSigned-v1": 100_000,
    "HybridCartPoleBox2-v1": 100_000,
    "CartPoleNoVel-v1": 100_000,
    "PendulumNoVel-v1": 200_000,
    "MountainCarContinuousNoVel-v0": 100_000,
    "LunarLanderNoVel-v3": 1_000_000,
    "LunarLanderContinuousNoVel-v3": 1_000_000,
}
FALLBACK_STEPS = 100_000

# Suites: environment -> budget. `quick` is the smoke test that every change should pass in a couple of
# minutes, so its budgets are short, yet long enough for every agent to learn: SAC's warm-up is 1000 steps,
# PPO's rollout 2048, so 5000 steps give both several updates.
SUITES = {
    "quick": {"Pendulum-v1": 5_000, "LunarLanderContinuous-v3": 5_000},
    "classic": {name: DEFAULT_STEPS[name] for name in ("Pendulum-v1", "MountainCarContinuous-v0")},
    "box2d": {name: DEFAULT_STEPS[name] for name in ("LunarLanderContinuous-v3", "BipedalWalker-v3")},
    "mujoco": {name: DEFAULT_STEPS[name] for name in ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5",
                                                      "Humanoid-v5")},
    # For agents with memory (ppo_recurrent): the velocities removed from the observation (envs/partial.py).
    "partial": {name: DEFAULT_STEPS[name] for name in ("CartPoleNoVel-v1", "PendulumNoVel-v1",
                                                       "LunarLanderContinuousNoVel-v3")},
}


def resolve_envs(names: list[str]) -> dict[str, int]:
    """Environment ids and suite names -> {env id: default budget}, in order, each id once."""
    budgets: dict[str, int] = {}
    for name in names:
        if name in SUITES:
            for env_id, steps in SUITES[name].items():
                budgets.setdefault(env_id, steps)
        elif registered(name):
            budgets.setdefault(name, DEFAULT_STEPS.get(name, FALLBACK_STEPS))
        else:
            valid = list(SUITES) + sorted(gym.registry)
            raise UsageError(f"unknown environment or suite '{name}'; {closest(name, valid)} "
                             f"(suites: {', '.join(SUITES)}; or any Gymnasium id, or module:EnvId)")
    return budgets


def registered(name: str) -> bool:
    """Whether `name` is a Gymnasium id, or 'module:EnvId' whose module registers EnvId when imported (as
    gym.make accepts: the way to bring your own environment)."""
    module, colon, env_id = name.rpartition(":")
    if colon:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UsageError(f"environment '{name}': cannot import module '{module}': {error}") from None
    return env_id in gym.registry


def is_torch_env(name: str) -> bool:
    """Whether `name` is a batched torch environment (its vector entry point a TorchVectorEnv), which steps on
    the agent's device. Gymnasium's own vector entry points (CartPole-v1's, in numpy) do not count."""
    if not registered(name):
        return False
    vector_class = gym.registry[name.rpartition(":")[2]].vector_entry_point
    return isinstance(vector_class, type) and issubclass(vector_class, torch_envs.TorchVectorEnv)


def make_env(env_id: str, **kwargs) -> gym.Env:
    """One environment instance. Observations must be a flat Box: the agents are MLPs."""
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as error:
        raise UsageError(f"environment {env_id} needs a missing package: {error}") from None
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env.close()
        raise UsageError(f"environment {env_id} has observations {env.observation_space}; the lab's agents need "
                         f"a flat Box (pixel environments are not supported)")
    return env


class ExactState(gym.Wrapper):
    """An environment whose `exact_state` can be read and set: what, besides its random stream, decides its
    future (the physics and every time limit's step counter), so that a checkpoint can save the running episodes
    in place of ending them. `exact_state` is None for a kind of environment not known to be restorable: Box2D's
    worlds, for one, are C++ objects that Python cannot copy. Known: MuJoCo (its MjData, whole: positions,
    velocities, actuator states, the time and the solver's warm start), classic control (the plain attributes
    of its environment: state, last action, step counters), and any environment with an `exact_state` property
    of its own (the lab's hybrid CartPole)."""

    @property
    def exact_state(self) -> dict | None:
        inner = self.env.unwrapped
        if hasattr(inner, "exact_state"):
            physics = inner.exact_state
        elif is_mujoco(inner):
            physics = copy.deepcopy(inner.data)
        elif type(inner).__module__.startswith("gymnasium.envs.classic_control."):
            physics = plain_attributes(inner)
        else:
            return None
        return {"physics": physics, "elapsed_steps": [layer._elapsed_steps for layer in self.time_limits()]}

    @exact_state.setter
    def exact_state(self, state: dict) -> None:
        inner = self.env.unwrapped
        if hasattr(inner, "exact_state"):
            inner.exact_state = state["physics"]
        elif is_mujoco(inner):
            import mujoco
            mujoco.mj_copyData(inner.data, inner.model, state["physics"])  # in place: the renderer holds `data`
        else:
            vars(inner).update(copy.deepcopy(state["physics"]))
        for layer, elapsed in zip(self.time_limits(), state["elapsed_steps"], strict=True):
            layer._elapsed_steps = elapsed

    def time_limits(self) -> list[gym.wrappers.TimeLimit]:
        layers, layer = [], self.env
        while isinstance(layer, gym.Wrapper):
            if isinstance(layer, gym.wrappers.TimeLimit):
                layers.append(layer)
            layer = layer.env
        return layers


def is_mujoco(env: gym.Env) -> bool:
    return type(env).__module__.startswith("gymnasium.envs.mujoco.") and hasattr(env, "data")


def plain_attributes(env: gym.Env) -> dict:
    """A copy of an environment's attributes that are numbers, arrays or None: a classic-control task's whole
    state (its constants come along, harmlessly), without its renderer's objects."""
    return {name: copy.deepcopy(value) for name, value in vars(env).items()
            if value is None or isinstance(value, (bool, int, float, np.generic, np.ndarray))}


def make_restorable_env(env_id: str) -> ExactState:
    return ExactState(make_env(env_id))
