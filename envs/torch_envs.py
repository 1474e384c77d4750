"""Environments written in batched torch: a whole vector of them steps as a few tensor operations on any device,
so that a training loop on the GPU never goes back to the host.

Each matches its Gymnasium counterpart step for step on the same actions (tests/test_torch_envs.py checks it):
- `TorchPendulum`: Pendulum-v1 (gymnasium/envs/classic_control/pendulum.py), 200-step time limit;
- `TorchCartPoleContinuous`: CartPole-v1's dynamics (gymnasium/envs/classic_control/cartpole.py) with a
  continuous force, force_mag * clip(a, -1, 1); a = +1 and -1 are CartPole-v1's actions 1 and 0. Reward 1 per
  step, terminated when the pole falls past 12 degrees or the cart leaves [-2.4, 2.4], 500-step time limit.

They follow Gymnasium 1.x's VectorEnv interface with autoreset disabled, as the lab's loop drives every vector
environment: `reset(options={"reset_mask": done})` resets the finished ones. Observations, rewards and flags
are tensors on the environment's device. The state is float64, as Gymnasium's, so trajectories agree to
float32 rounding over whole episodes; observations are float32.
"""

from __future__ import annotations

import functools
import math

import gymnasium as gym
import numpy as np
import torch


class TorchVectorEnv(gym.vector.VectorEnv):
    """The bookkeeping every batched torch environment shares: spaces, device, RNG, time limit, reset masks.
    A subclass defines INITIAL_LOW and INITIAL_HIGH (the initial state is uniform between them), `observe()` and
    `advance(actions) -> (reward, terminated)`. Nothing here reads the device from the host or copies to it after
    construction: a step, and a masked reset, only queue work on the device."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.DISABLED}

    def __init__(self, single_observation_space, single_action_space, num_envs: int, device, max_episode_steps: int):
        self.num_envs, self.device, self.max_episode_steps = num_envs, torch.device(device), max_episode_steps
        self.single_observation_space, self.single_action_space = single_observation_space, single_action_space
        self.observation_space = gym.vector.utils.batch_space(single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(single_action_space, num_envs)
        self.generator = torch.Generator(device=self.device)
        self.initial_low = torch.tensor(self.INITIAL_LOW, dtype=torch.float64, device=self.device)
        self.initial_high = torch.tensor(self.INITIAL_HIGH, dtype=torch.float64, device=self.device)
        self.state = self.initial_state(num_envs)
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    @property
    def exact_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What, besides `generator`, decides the environments' future: saved by a checkpoint, set on resuming."""
        return self.state.clone(), self.elapsed.clone()

    @exact_state.setter
    def exact_state(self, state: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.state, self.elapsed = (tensor.to(self.device) for tensor in state)

    def initial_state(self, n: int) -> torch.Tensor:
        """[n, state size] float64 draws from U(INITIAL_LOW, INITIAL_HIGH), from this environment's stream."""
        low, high = self.initial_low, self.initial_high
        return low + (high - low) * torch.rand((n, low.numel()), dtype=torch.float64, device=self.device,
                                               generator=self.generator)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.generator.manual_seed(seed)
        mask = (options or {}).get("reset_mask")
        if mask is None:
            self.state, self.elapsed = self.initial_state(self.num_envs), torch.zeros_like(self.elapsed)
        else:
            mask = torch.as_tensor(mask, dtype=torch.bool, device=self.device)
            # Drawing for every sub-environment and keeping the masked ones: no host read of the mask.
            self.state = torch.where(mask.unsqueeze(-1), self.initial_state(self.num_envs), self.state)
            self.elapsed = torch.where(mask, 0, self.elapsed)
        return self.observe(), {}

    def step(self, actions):
        actions = torch.as_tensor(actions, device=self.device).to(torch.float64).reshape(self.num_envs, -1)
        reward, terminated = self.advance(actions)
        self.elapsed += 1
        truncated = self.elapsed >= self.max_episode_steps  # as Gymnasium's TimeLimit: whether or not terminated
        return self.observe(), reward.float(), terminated, truncated, {}

    def observe(self) -> torch.Tensor:
        raise NotImplementedError

    def advance(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class TorchPendulum(TorchVectorEnv):
    """Pendulum-v1: state (theta, theta_dot), observation (cos theta, sin theta, theta_dot), torque in [-2, 2],
    reward -(angle^2 + 0.1 theta_dot^2 + 0.001 u^2), never terminates, truncated after 200 steps."""

    MAX_SPEED, MAX_TORQUE, DT, G, M, L = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0
    INITIAL_LOW, INITIAL_HIGH = (-math.pi, -1.0), (math.pi, 1.0)

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps: int = 200):
        high = np.array([1.0, 1.0, self.MAX_SPEED], dtype=np.float32)
        super().__init__(gym.spaces.Box(-high, high, dtype=np.float32),
                         gym.spaces.Box(-self.MAX_TORQUE, self.MAX_TORQUE, (1,), dtype=np.float32), num_envs, device,
                         max_episode_steps)

    def observe(self):
        theta, theta_dot = self.state.unbind(-1)
        return torch.stack([theta.cos(), theta.sin(), theta_dot], dim=-1).float()

    def advance(self, actions):
        theta, theta_dot = self.state.unbind(-1)
        u = actions[:, 0].clamp(-self.MAX_TORQUE, self.MAX_TORQUE)
        normalised_angle = torch.remainder(theta + math.pi, 2 * math.pi) - math.pi
        costs = normalised_angle ** 2 + 0.1 * theta_dot ** 2 + 0.001 * u ** 2
        angular_acceleration = 3 * self.G / (2 * self.L) * theta.sin() + 3.0 / (self.M * self.L ** 2) * u
        new_theta_dot = theta_dot + angular_acceleration * self.DT
        new_theta_dot = new_theta_dot.clamp(-self.MAX_SPEED, self.MAX_SPEED)
        self.state = torch.stack([theta + new_theta_dot * self.DT, new_theta_dot], dim=-1)
        return -costs, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)


class TorchCartPoleContinuous(TorchVectorEnv):
    """CartPole-v1 with a continuous force: state (x, x_dot, theta, theta_dot), action a in [-1, 1]."""

    GRAVITY, MASS_CART, MASS_POLE, LENGTH, FORCE_MAG, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    THETA_THRESHOLD, X_THRESHOLD = 12 * 2 * math.pi / 360, 2.4
    INITIAL_LOW, INITIAL_HIGH = (-0.05,) * 4, (0.05,) * 4

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps: int = 500):
        high = np.array([self.X_THRESHOLD * 2, np.inf, self.THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
        super().__init__(gym.spaces.Box(-high, high, dtype=np.float32),
                         gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32), num_envs, device, max_episode_steps)

    def observe(self):
        return self.state.float()

    def advance(self, actions):
        x, x_dot, theta, theta_dot = self.state.unbind(-1)
        force = self.FORCE_MAG * actions[:, 0].clamp(-1.0, 1.0)
        total_mass, pole_mass_length = self.MASS_CART + self.MASS_POLE, self.MASS_POLE * self.LENGTH
        cos_theta, sin_theta = theta.cos(), theta.sin()
        temp = (force + pole_mass_length * theta_dot ** 2 * sin_theta) / total_mass
        theta_acc = (self.GRAVITY * sin_theta - cos_theta * temp) / (
            self.LENGTH * (4.0 / 3.0 - self.MASS_POLE * cos_theta ** 2 / total_mass))
        x_acc = temp - pole_mass_length * theta_acc * cos_theta / total_mass
        # Gymnasium's default integrator: explicit Euler
        x, x_dot = x + self.TAU * x_dot, x_dot + self.TAU * x_acc
        theta, theta_dot = theta + self.TAU * theta_dot, theta_dot + self.TAU * theta_acc
        self.state = torch.stack([x, x_dot, theta, theta_dot], dim=-1)
        terminated = (x.abs() > self.X_THRESHOLD) | (theta.abs() > self.THETA_THRESHOLD)
        return torch.ones(self.num_envs, dtype=torch.float64, device=self.device), terminated


class TorchCartPole(TorchCartPoleContinuous):
    """CartPole-v1 itself: action 0 pushes left and 1 right, with the full force."""

    def __init__(self, num_envs: int = 1, device="cpu", max_episode_steps: int = 500):
        super().__init__(num_envs, device, max_episode_steps)
        self.single_action_space = gym.spaces.Discrete(2)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def advance(self, actions):
        return super().advance(2 * actions - 1)


class SingleTorchEnv(gym.Env):
    """One copy of a batched torch environment on the CPU, as a plain numpy Gymnasium environment: what
    `gym.make` returns for these ids (evaluation uses it). Its time limit comes from gym.make's TimeLimit."""

    def __init__(self, vector_class, render_mode=None):
        self.vector = vector_class(num_envs=1, device="cpu", max_episode_steps=2**62)
        self.observation_space = self.vector.single_observation_space
        self.action_space = self.vector.single_action_space

    def reset(self, *, seed=None, options=None):
        obs, info = self.vector.reset(seed=seed)
        return obs[0].numpy(), info

    def step(self, action):
        obs, reward, terminated, _, info = self.vector.step(torch.as_tensor(action).reshape(1, -1))
        return obs[0].numpy(), float(reward[0]), bool(terminated[0]), False, info


# Environment id -> (batched class, time limit): registered with Gymnasium by envs/__init__.py.
TORCH_ENVS = {"TorchPendulum-v0": (TorchPendulum, 200), "TorchCartPoleContinuous-v0": (TorchCartPoleContinuous, 500),
              "TorchCartPole-v0": (TorchCartPole, 500)}


def register() -> None:
    for env_id, (vector_class, limit) in TORCH_ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=functools.partial(SingleTorchEnv, vector_class),
                         vector_entry_point=vector_class, max_episode_steps=limit)
