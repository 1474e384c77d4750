"""An environment with hybrid (discrete and continuous) actions, for agents that take mixed action spaces.

HybridCartPole-v1: CartPole-v1's cart and pole, and an engine that each step is either off or fired with a
push of the agent's choosing:
    action = (engine in Discrete(2): 0 off, 1 fire;  push in Box([-1, 1]): the force, a signed fraction of
              CartPole's 10 N, used only when the engine fires),
    reward = 1 per step the pole stays up, less IGNITION_COST for every step the engine fires,
episodes end as CartPole-v1's (pole past 12 degrees, cart off the track, or 500 steps). Firing every step
earns 500 * (1 - IGNITION_COST) = 250; the pole needs only an occasional well-aimed push, so a policy earns
close to 500 by deciding when to fire (a discrete choice) and how hard and which way to push when it does (a
continuous one). Like a thruster with an ignition cost, or a valve whose opening costs more than its flow.

The continuous relaxations, for comparison: the same task through Box actions only.
HybridCartPoleSigned-v1: one action a in Box([-1, 1]), LunarLanderContinuous's convention for its main engine:
    the engine fires when |a| > 0.5, with the push a (so from 5 N to 10 N either way).
HybridCartPoleBox2-v1: two actions (a, b) in Box([-1, 1])^2, the engine firing when a > 0, with the push b: the
    hybrid action with its discrete part replaced by a threshold on a continuous one.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv

IGNITION_COST = 0.5  # reward lost for each step the engine fires
FULL_FORCE = 10.0  # newtons: CartPole's force_mag
SIGNED_THRESHOLD = 0.5  # HybridCartPoleSigned-v1's engine fires when |a| exceeds this


class HybridCartPole(gym.Env):
    metadata = CartPoleEnv.metadata

    def __init__(self, render_mode: str | None = None):
        self.cartpole = CartPoleEnv(render_mode=render_mode)
        self.render_mode = render_mode
        self.observation_space = self.cartpole.observation_space
        self.action_space = gym.spaces.Tuple((gym.spaces.Discrete(2),
                                              gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self.cartpole.reset(seed=seed, options=options)

    def step(self, action):
        engine, push = action
        return self.fire(bool(engine), first(push))

    def fire(self, firing: bool, push: float):
        """One step with the engine off, or fired with `push` in [-1, 1] (clipped) of the full force."""
        push = float(np.clip(push, -1.0, 1.0)) if firing else 0.0
        self.cartpole.force_mag = FULL_FORCE * abs(push)
        obs, reward, terminated, truncated, info = self.cartpole.step(int(push > 0))
        return obs, reward - IGNITION_COST * firing, terminated, truncated, info

    def render(self):
        return self.cartpole.render()

    def close(self):
        self.cartpole.close()

    @property
    def exact_state(self) -> tuple:  # what a checkpoint saves (envs.ExactState): the inner CartPole's state
        return copy.deepcopy((self.cartpole.state, self.cartpole.steps_beyond_terminated))

    @exact_state.setter
    def exact_state(self, state: tuple) -> None:
        self.cartpole.state, self.cartpole.steps_beyond_terminated = copy.deepcopy(state)

    @property
    def np_random(self):  # the checkpoint saves and restores the stream that resets draw from
        return self.cartpole.np_random

    @np_random.setter
    def np_random(self, value):
        self.cartpole.np_random = value


def first(array) -> float:
    return float(np.asarray(array).reshape(-1)[0])


class HybridCartPoleSigned(HybridCartPole):
    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def step(self, action):
        push = first(action)
        return self.fire(abs(push) > SIGNED_THRESHOLD, push)


class HybridCartPoleBox2(HybridCartPole):
    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def step(self, action):
        engine, push = np.asarray(action, dtype=np.float64).reshape(-1)
        return self.fire(bool(engine > 0), float(push))


ENVIRONMENTS = {"HybridCartPole-v1": HybridCartPole, "HybridCartPoleSigned-v1": HybridCartPoleSigned,
                "HybridCartPoleBox2-v1": HybridCartPoleBox2}


def register() -> None:
    for env_id, env_class in ENVIRONMENTS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=env_class, max_episode_steps=500)
