"""Pieces more than one agent needs: validated hyperparameters and a replay buffer that lives on the device."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch

from lab import UsageError


@dataclasses.dataclass
class HyperparametersBase:
    """Every numeric hyperparameter is finite and non-negative; those named below have tighter bounds."""

    positive: ClassVar[tuple[str, ...]] = ()  # must be > 0
    unit_interval: ClassVar[tuple[str, ...]] = ()  # must lie in [0, 1]

    def check(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"hyperparameter {f.name} must be a finite number >= 0, got {value}")
            if f.name in self.positive and value <= 0:
                raise UsageError(f"hyperparameter {f.name} must be > 0, got {value}")
            if f.name in self.unit_interval and value > 1:
                raise UsageError(f"hyperparameter {f.name} must lie in [0, 1], got {value}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """The agent's own random stream: exploration noise and minibatch sampling never touch the global one."""
    return torch.Generator(device=device).manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict:
    """Generator and global torch RNG state (initialisation and dropout draw from the global one)."""
    return {"generator": generator.get_state(), "torch": torch.get_rng_state()}


def load_rng_state(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])


class ReplayBuffer:
    """A ring buffer of transitions (obs, action, reward, next_obs, terminated), preallocated on the device.

    Only `terminated` is stored: a truncated transition is an ordinary one whose target bootstraps from
    next_obs, because a time limit is not part of the MDP.
    """

    def __init__(self, capacity: int, obs_shape, action_shape, device, action_dtype=torch.float32):
        self.capacity, self.device = capacity, device
        self.obs = torch.zeros((capacity, *obs_shape), device=device)
        self.next_obs = torch.zeros((capacity, *obs_shape), device=device)
        self.actions = torch.zeros((capacity, *action_shape), dtype=action_dtype, device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.terminated = torch.zeros(capacity, device=device)
        self.position, self.size = 0, 0

    def add(self, obs, action, reward, next_obs, terminated) -> None:
        """Add a batch of transitions, one per environment: every argument has a leading [num_envs] axis."""
        n = obs.shape[0]
        end = self.position + n
        # A slice is one copy per field; only a batch that wraps around needs an index.
        index = slice(self.position, end) if end <= self.capacity else \
            torch.arange(self.position, end, device=self.device) % self.capacity
        self.obs[index], self.actions[index], self.next_obs[index] = obs, action, next_obs
        self.rewards[index], self.terminated[index] = reward, terminated.float()
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator):
        """A uniform minibatch (obs, actions, rewards, next_obs, terminated), drawn without a host sync."""
        index = torch.randint(self.size, (batch_size,), device=self.device, generator=generator)
        return self.obs[index], self.actions[index], self.rewards[index], self.next_obs[index], self.terminated[index]

    def state_dict(self) -> dict:
        filled = slice(0, self.size)
        return {"obs": self.obs[filled].clone(), "actions": self.actions[filled].clone(),
                "rewards": self.rewards[filled].clone(), "next_obs": self.next_obs[filled].clone(),
                "terminated": self.terminated[filled].clone(), "position": self.position, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.position, self.size = state["position"], state["size"]
        filled = slice(0, self.size)
        for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
            getattr(self, name)[filled] = state[name].to(self.device)


def observation_shape(space) -> tuple[int, ...]:
    if space.shape is None or len(space.shape) == 0:
        raise UsageError(f"agents need a Box observation space with a shape, got {space}")
    return tuple(space.shape)


def action_bounds(space, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) of a Box action space as tensors; infinite bounds are not supported by squashed policies."""
    low, high = np.asarray(space.low, dtype=np.float32), np.asarray(space.high, dtype=np.float32)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise UsageError(f"this agent needs a bounded action space, got low={low} high={high}")
    return torch.as_tensor(low, device=device), torch.as_tensor(high, device=device)


LOG_2 = math.log(2.0)
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def tanh_gaussian(mean, log_std, noise, scale, bias):
    """Squash u = mean + std * noise through tanh into the action bounds; return (action, log pi(action)).

    log pi(a) = log N(u; mean, std) - sum_i log(scale_i * (1 - tanh(u_i)^2))   (SAC paper, appendix C)
    with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), which stays finite where tanh(u) rounds to +-1.
    """
    u = mean + log_std.exp() * noise
    log_prob = (-0.5 * noise.pow(2) - log_std - LOG_SQRT_2PI).sum(-1)
    log_prob = log_prob - (2 * (LOG_2 - u - torch.nn.functional.softplus(-2 * u)) + scale.log()).sum(-1)
    return torch.tanh(u) * scale + bias, log_prob
