"""An environment with hybrid (discrete and continuous) actions, for agents that take mixed action spaces.

HybridCartPole-v0: CartPole-v1's cart and pole, pushed each step by a direction and a force chosen together,
    action = (direction in Discrete(2): 0 left, 1 right;  throttle in Box([-1, 1])),
    force = (throttle + 1) / 2, a fraction of CartPole's 10 N,
    reward = 1 - ENERGY_COST * force^2 per step the pole stays up (CartPole's 1, less the push's energy),
episodes end as CartPole-v1's (pole past 12 degrees, cart off the track, or 500 steps). A policy needs both
parts: with one direction alone the pole falls within a few dozen steps; CartPole's full push in every step
(the discrete policy) keeps it up but earns only 1 - ENERGY_COST; small pushes in the right direction earn
close to 1. So the best return is close to 500, full pushes reach 500 * (1 - ENERGY_COST) = 250. The throttle
spans [-1, 1] rather than the force's [0, 1], as SB3 advises for every Box: a Gaussian policy starts centred
there, and its mean (the deterministic action) is not clipped to no push at all.

HybridCartPoleRelaxed-v0: the same task through one continuous action in Box([-1, 1]), its sign the direction
and its magnitude the force: the usual way to give such a task to a purely continuous agent, for comparison.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv

ENERGY_COST = 0.5  # reward lost per step at the full push; quadratic in the push
FULL_FORCE = 10.0  # newtons: CartPole's force_mag


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
        direction, throttle = action
        return self.push(int(direction), (float(np.clip(np.asarray(throttle).reshape(-1)[0], -1, 1)) + 1) / 2)

    def push(self, direction: int, fraction: float):
        self.cartpole.force_mag = FULL_FORCE * fraction
        obs, reward, terminated, truncated, info = self.cartpole.step(direction)
        return obs, reward - ENERGY_COST * fraction**2, terminated, truncated, info

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


class HybridCartPoleRelaxed(HybridCartPole):
    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def step(self, action):
        signed = float(np.clip(np.asarray(action).reshape(-1)[0], -1, 1))
        return self.push(int(signed > 0), abs(signed))


def register() -> None:
    for env_id, env_class in (("HybridCartPole-v0", HybridCartPole), ("HybridCartPoleRelaxed-v0",
                                                                       HybridCartPoleRelaxed)):
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=env_class, max_episode_steps=500)
