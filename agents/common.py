"""Pieces more than one agent needs: validated hyperparameters, seeding, a replay buffer that lives on the
device, the tanh-squashed Gaussian, Batch Renormalization, plasticity diagnostics, the entropy temperature,
and `OffPolicyAgent`, the base of every replay-based agent."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn

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
    """Generator and global torch RNG state (initialisation and dropout draw from the global one; dropout on
    CUDA from the device's)."""
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if generator.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(generator.device)
    return state


def load_rng_state(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], generator.device)


class ReplayBuffer:
    """A ring buffer of transitions (obs, action, reward, next_obs, terminated), preallocated on the device.

    Only `terminated` is stored: a truncated transition is an ordinary one whose target bootstraps from
    next_obs, because a time limit is not part of the MDP.
    """

    def __init__(self, capacity: int, obs_shape, action_shape, device):
        self.capacity, self.device = capacity, device
        self.obs = torch.zeros((capacity, *obs_shape), device=device)
        self.next_obs = torch.zeros((capacity, *obs_shape), device=device)
        self.actions = torch.zeros((capacity, *action_shape), device=device)
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

    def recent(self, n: int):
        """(obs, actions) of the latest min(n, size) transitions: fixed states for diagnostics, no RNG drawn."""
        n = min(n, self.size)
        index = (self.position - n + torch.arange(n, device=self.device)) % self.capacity
        return self.obs[index], self.actions[index]

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
    Constant terms are summed once, outside the per-element work.
    """
    u = torch.addcmul(mean, log_std.exp(), noise)
    per_element = 2 * (u + torch.nn.functional.softplus(-2 * u)) - 0.5 * noise.square() - log_std
    constant = mean.shape[-1] * (LOG_SQRT_2PI + 2 * LOG_2) + scale.log().sum()
    return torch.tanh(u) * scale + bias, per_element.sum(-1) - constant


class BatchRenorm(nn.Module):
    """Batch Renormalization (Ioffe 2017, https://arxiv.org/abs/1702.03275), as CrossQ uses it.

    Training mode normalises with the batch statistics, corrected towards the running ones:
        x_hat = (x - mu_B) / sigma_B * r + d,  r = clip(sigma_B / sigma, 1/r_max, r_max),
                                               d = clip((mu_B - mu) / sigma, -d_max, d_max)
    with r and d constants to the gradient. For the first `warmup_steps` training passes r = 1 and d = 0: plain
    BatchNorm, while the running statistics are still poor. Evaluation mode uses the running statistics only.
    The running statistics follow the biased batch variance with rate `momentum`, as SBX's.
    """

    def __init__(self, features: int, momentum: float = 0.01, eps: float = 1e-3, warmup_steps: int = 100_000,
                 r_max: float = 3.0, d_max: float = 5.0):
        super().__init__()
        self.momentum, self.eps, self.warmup_steps, self.r_max, self.d_max = momentum, eps, warmup_steps, r_max, d_max
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # a tensor: counting never syncs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            training=False, eps=self.eps)
        # The statistics first, from the fused kernel behind F.batch_norm (var_mean is ten times slower on a CPU),
        # so that r and d can be folded into the affine parameters of one fused, differentiable batch_norm.
        with torch.no_grad():
            _, batch_mean, batch_invstd = torch.native_batch_norm(x, None, None, None, None, True, 0.0, self.eps)
            batch_var = batch_invstd.pow(-2) - self.eps
            running_std = (self.running_var + self.eps).sqrt()
            renorming = self.steps >= self.warmup_steps
            r = torch.where(renorming, (1 / (batch_invstd * running_std)).clamp(1 / self.r_max, self.r_max), 1.0)
            d = torch.where(renorming, ((batch_mean - self.running_mean) / running_std).clamp(-self.d_max,
                                                                                                self.d_max), 0.0)
            self.running_mean.lerp_(batch_mean, self.momentum)
            self.running_var.lerp_(batch_var, self.momentum)
            self.steps += 1
        # ((x - mu_B) / sigma_B * r + d) * weight + bias, gradients through mu_B and sigma_B as in BatchNorm
        return nn.functional.batch_norm(x, None, None, self.weight * r, self.bias + self.weight * d, training=True,
                                        eps=self.eps)


def plasticity(network: nn.Module, x: torch.Tensor, tau: float = 0.025) -> dict[str, torch.Tensor]:
    """Diagnostics of lost plasticity, on a batch x: the dormant-neuron ratio (Sokar et al. 2023,
    https://arxiv.org/abs/2302.12902: the share of hidden units whose mean |activation|, divided by the layer's
    average, is at most tau) and the weight magnitude (the mean over linear layers of each layer's mean |w|).
    Activations are read at every ReLU/Tanh module, wherever it sits (residual blocks included)."""
    activities = []

    def record(module, inputs, output):
        activities.append(output.abs().mean(0))

    hooks = [m.register_forward_hook(record) for m in network.modules() if isinstance(m, (nn.ReLU, nn.Tanh))]
    try:
        with torch.no_grad():
            network(x)
    finally:
        for hook in hooks:
            hook.remove()
    dormant = torch.stack([(activity <= tau * activity.mean()).sum() for activity in activities]).sum() \
        if activities else torch.zeros((), device=x.device)
    units = sum(activity.numel() for activity in activities)
    weights = [m.weight.abs().mean() for m in network.modules() if isinstance(m, nn.Linear)]
    return {"dormant_ratio": dormant / max(units, 1), "weight_magnitude": torch.stack(weights).mean().detach()}


class OffPolicyAgent:
    """What every replay-based agent here shares, so that each agent file holds its algorithm and nothing else:
    checks and seeding, the action bounds, the replay buffer, a uniform-random warm-up, acting with a
    tanh-squashed Gaussian actor (`self.actor(obs) -> (mean, log_std)`), the replay-ratio schedule, plasticity
    diagnostics of the first critic, and checkpoints of everything named in `self.checkpointed`.

    A subclass's __init__ calls `setup`, builds its networks and optimisers, lists them in `self.checkpointed`,
    and defines `gradient_step()`. Its Hyperparameters need buffer_size, batch_size, learning_starts and
    replay_ratio.
    """

    name = "agent"  # for error messages

    def setup(self, h, observation_space, action_space, num_envs, device, seed, total_steps):
        h.check()
        if not hasattr(action_space, "low"):
            raise UsageError(f"{self.name} needs a continuous (Box) action space, got {action_space}")
        self.h, self.device, self.num_envs, self.seed = h, torch.device(device), num_envs, seed
        obs_shape = observation_shape(observation_space)
        self.obs_dim, self.action_dim = obs_shape[0], int(math.prod(action_space.shape))
        low, high = action_bounds(action_space, self.device)
        self.action_scale, self.action_bias = (high - low) / 2, (high + low) / 2
        torch.manual_seed(seed)  # network initialisation; everything else draws from the agent's generator
        self.generator = make_generator(seed, self.device)
        self.buffer = ReplayBuffer(max(1, min(h.buffer_size, total_steps)), obs_shape, (self.action_dim,),
                                   self.device)
        self.transitions = 0  # environment transitions observed
        self.actor_metrics: dict[str, torch.Tensor] = {}  # the latest actor update's, repeated until the next
        self.update_credit = 0.0  # gradient updates owed under replay_ratio, carried over between calls
        self.last_obs = self.last_action = None
        self.checkpointed: dict = {}
        self.compile_mode: str | None = None

    def act(self, obs: torch.Tensor, explore: bool = True) -> torch.Tensor:
        with torch.inference_mode():
            if explore and self.transitions < self.h.learning_starts:
                uniform = torch.rand((obs.shape[0], self.action_dim), device=self.device, generator=self.generator)
                action = self.action_bias + self.action_scale * (2 * uniform - 1)
            else:
                action = self.policy(obs, explore)
        if explore:
            self.last_obs, self.last_action = obs, action
        return action

    def policy(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """The tanh-squashed Gaussian's sample (explore) or mean, without the log-probability (unneeded here)."""
        mean, log_std = self.actor(obs)
        if explore:
            noise = torch.randn(mean.shape, device=self.device, generator=self.generator)
            mean = torch.addcmul(mean, log_std.exp(), noise)
        return torch.tanh(mean) * self.action_scale + self.action_bias

    def observe(self, next_obs, reward, terminated, truncated) -> None:
        # Only `terminated` reaches the buffer: a truncated step still bootstraps from next_obs.
        self.buffer.add(self.last_obs, self.last_action, reward, next_obs, terminated)
        self.transitions += next_obs.shape[0]

    def update(self) -> dict[str, torch.Tensor] | None:
        if self.transitions < self.h.learning_starts:
            return None
        self.update_credit += self.h.replay_ratio * self.num_envs
        metrics = None
        while self.update_credit >= 1:
            self.update_credit -= 1
            metrics = self.gradient_step()
        return metrics

    def compile(self, mode: str = "default") -> None:
        """torch.compile the networks: their forward passes, and in the update their backward passes too.
        mode 'reduce-overhead' also captures them as CUDA graphs (on CUDA). Networks built later (a reset)
        are compiled by `compile_networks`."""
        self.compile_mode = mode
        self.compile_networks()

    def compile_networks(self) -> None:
        if self.compile_mode is None:
            return
        for item in self.checkpointed.values():
            if isinstance(item, nn.Module):
                item.compile(mode=self.compile_mode, dynamic=False)

    def diagnostics(self) -> dict[str, torch.Tensor]:
        obs, actions = self.buffer.recent(self.h.batch_size)
        return plasticity(self.critic.qfs[0], torch.cat([obs, actions], dim=-1))

    def policy_state_dict(self) -> dict:
        """The networks (and tensors such as log_alpha) of `self.checkpointed`, copied: what acting and
        fine-tuning need, without the replay buffer, the optimisers and the random streams."""
        return {name: item.detach().clone() if isinstance(item, torch.Tensor) else copy.deepcopy(item.state_dict())
                for name, item in self.checkpointed.items() if isinstance(item, (torch.Tensor, nn.Module))}

    def load_policy_state_dict(self, state: dict) -> None:
        for name, item in self.checkpointed.items():
            if isinstance(item, torch.Tensor):
                with torch.no_grad():
                    item.copy_(state[name])
            elif isinstance(item, nn.Module):
                item.load_state_dict(state[name])

    # Attributes saved as they are: the seed (later draws derive from it), counters, other per-run state.
    SAVED_ATTRIBUTES = ("seed", "transitions", "update_credit", "critic_updates", "actor_metrics")

    def state_dict(self) -> dict:
        state = {name: item.detach().clone() if isinstance(item, torch.Tensor) else item.state_dict()
                 for name, item in self.checkpointed.items()}
        return {**state, "buffer": self.buffer.state_dict(), "rng": rng_state(self.generator),
                **{name: copied(getattr(self, name)) for name in self.SAVED_ATTRIBUTES}}

    def load_state_dict(self, state: dict) -> None:
        for name, item in self.checkpointed.items():
            if isinstance(item, torch.Tensor):
                with torch.no_grad():
                    item.copy_(state[name])
            else:
                item.load_state_dict(state[name])
        self.buffer.load_state_dict(state["buffer"])
        load_rng_state(self.generator, state["rng"])
        for name in self.SAVED_ATTRIBUTES:
            setattr(self, name, state[name])


def copied(value):
    """A checkpoint's copy of a saved attribute: tensors (also inside a dict) must not stay shared with the agent."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: copied(item) for key, item in value.items()}
    return value


def temperature(h, action_dim: int, device) -> tuple[torch.Tensor, float]:
    """SAC's entropy temperature as log(alpha), learnable from alpha = 1 when h.autotune (as CleanRL), and the
    target entropy -h.target_entropy_scale * |A|."""
    if h.autotune:
        log_alpha = torch.zeros((), device=device, requires_grad=True)
    else:  # a fixed temperature; 0 turns the entropy bonus off
        log_alpha = torch.tensor(math.log(h.alpha) if h.alpha > 0 else -math.inf, device=device)
    return log_alpha, -h.target_entropy_scale * action_dim
