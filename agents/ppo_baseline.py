"""Proximal Policy Optimization with generalized advantage estimation, as in CleanRL's `ppo_continuous_action.py`.

Papers: Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (https://arxiv.org/abs/1707.06347);
Schulman et al. 2015, "High-Dimensional Continuous Control Using Generalized Advantage Estimation"
(https://arxiv.org/abs/1506.02438); Huang et al. 2022, "The 37 Implementation Details of PPO"
(https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/).
Reference code: https://github.com/vwxyzjn/cleanrl/blob/master/cleanrl/ppo_continuous_action.py

Same algorithm, networks and hyperparameter names as CleanRL; what differs comes from the lab's interface or is
for speed:
- the agent never sees the environment, so the observation and reward normalisation that CleanRL gets from
  gymnasium wrappers (NormalizeObservation, NormalizeReward, each clipped to ±10) live here, switchable;
- a time-limit truncation bootstraps from the true last observation (CleanRL cuts it like a termination);
- a `Discrete` action space gets a categorical policy from the same networks, as CleanRL's `ppo.py`; a
  `MultiDiscrete`, or a `Tuple` or `Dict` of Box and discrete spaces, gets the product of a Gaussian per Box and
  a categorical per discrete choice (`ActionLayout`), as minRL's mixed actor;
- the rollout's log-probs and values are computed in one batch when it is full, not one step at a time;
- Adam is the fused implementation (one kernel for all parameters); `target_kl` 0 means no early stop;
- with no entropy bonus (`ent_coef` 0, the default) the entropy is not a loss term but a metric, computed once
  per update (CleanRL adds 0 times it to every minibatch's loss).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import gymnasium as gym
import torch
from torch import nn

from agents.common import (LOG_SQRT_2PI, HyperparametersBase, action_bounds, load_rng_state, make_generator,
                           observation_shape, plasticity, rng_state)
from lab import UsageError


@dataclasses.dataclass
class Hyperparameters(HyperparametersBase):
    learning_rate: float = 3e-4  # Adam learning rate (the start of the schedule when anneal_lr)
    num_steps: int = 2048  # steps per environment in each rollout
    anneal_lr: bool = True  # decay the learning rate linearly to 0 over the run's total_steps
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # GAE's lambda: 0 is the one-step TD error, 1 the Monte Carlo return
    num_minibatches: int = 32  # minibatches per pass over a rollout
    update_epochs: int = 10  # passes over each rollout
    norm_adv: bool = True  # normalise advantages within each minibatch
    clip_coef: float = 0.2  # the surrogate's clipping range: the probability ratio is kept in [1 - c, 1 + c]
    clip_vloss: bool = True  # clip the value update around the rollout's values too
    ent_coef: float = 0.0  # weight of the entropy bonus
    vf_coef: float = 0.5  # weight of the value loss
    max_grad_norm: float = 0.5  # clip the global gradient norm to this
    target_kl: float = 0.0  # stop a rollout's epochs once the approximate KL exceeds this; 0 never stops
    norm_obs: bool = True  # normalise observations by their running mean and std, then clip to ±10
    norm_reward: bool = True  # divide rewards by the running std of the discounted return, then clip to ±10
    hidden_size: int = 64  # width of the two hidden layers of actor and critic
    optimizer: str = "adam"  # 'adam' (PPO's, eps 1e-5) or 'rmsprop' (SB3's A2C: alpha 0.99, eps 1e-5)

    positive = ("learning_rate", "num_steps", "num_minibatches", "update_epochs", "clip_coef", "max_grad_norm",
                "hidden_size")
    unit_interval = ("gamma", "gae_lambda")

    def check(self) -> None:
        super().check()
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"hyperparameter optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"got '{self.optimizer}'")


OPTIMIZERS = ("adam", "rmsprop")


PRESETS: dict[str, dict] = {
    # For many environments at once (learn_vectorised.py, 16 to thousands): the defaults' 2048 steps per
    # environment would make one update per 2048 x num_envs steps. Short rollouts instead update every
    # 32 x num_envs steps; minibatches are a quarter of the rollout, so they grow with num_envs (large batches
    # suit a GPU), and 4 epochs keep each rollout's policy change small. Isaac Gym- and Brax-style PPO use
    # rollouts of 16 to 32 steps for the same reason. With 16 CartPole copies: 500 at 100k steps (README).
    "vectorised": {"num_steps": 32, "num_minibatches": 4, "update_epochs": 4},
    # A2C (Mnih et al. 2016, https://arxiv.org/abs/1602.01783) as SB3's A2C runs it (its defaults, which the
    # rl-zoo keeps for CartPole with 8 environments): rollouts of 5 steps per environment, one gradient step on
    # all of it, so the probability ratio is 1 and PPO's clipping never acts: the loss is the plain policy
    # gradient -A * log pi plus the value and entropy terms. Returns are n-step (GAE with lambda 1), advantages
    # not normalised, RMSprop at a constant 7e-4, no observation or reward normalisation; vf_coef 1, since SB3
    # weighs the value's mean squared error by its vf_coef 0.5 and this agent weighs half that error.
    # Reference: https://github.com/DLR-RM/stable-baselines3/blob/master/stable_baselines3/a2c/a2c.py
    "a2c": {"num_steps": 5, "num_minibatches": 1, "update_epochs": 1, "learning_rate": 7e-4, "anneal_lr": False,
            "optimizer": "rmsprop", "gae_lambda": 1.0, "norm_adv": False, "clip_vloss": False,
            "norm_obs": False, "norm_reward": False, "vf_coef": 1.0},
    # Vanilla policy gradient (REINFORCE with a learned value baseline; Williams 1992, Sutton et al. 2000) as
    # Spinning Up's VPG (https://spinningup.openai.com/en/latest/algorithms/vpg.html), which minRL's VPG follows:
    # one gradient step per batch of whole-rollout experience, advantages from GAE with lambda 1 (the return
    # minus the baseline; a cut episode bootstraps from the value), normalised per batch. Spinning Up fits the
    # baseline with 80 extra steps per batch; here it shares the one step (and Adam), the simplest honest form.
    # Batches of PPO's 2048 steps; Adam at 3e-3 (Spinning Up's 3e-4 would make 146 steps in 300k too few).
    "vpg": {"num_steps": 2048, "num_minibatches": 1, "update_epochs": 1, "learning_rate": 3e-3,
            "anneal_lr": False, "gae_lambda": 1.0, "clip_vloss": False, "norm_reward": False},
}

# hypertune.py's search when no --param is given, in --param's syntax: the learning rate and GAE's lambda (whose
# joint landscape Eimer et al. 2023, https://arxiv.org/abs/2306.01324, show to be broad and benign), the
# clipping range around PPO's 0.2, the entropy bonus from nothing (1e-8) to strong, and the discount.
SEARCH_SPACE = {"learning_rate": "1e-5:1e-3:log", "gae_lambda": "0.8:0.99", "clip_coef": "0.1:0.4",
                "ent_coef": "1e-8:0.01:log", "gamma": "0.9:0.999"}

NORM_EPS, NORM_CLIP = 1e-8, 10.0  # gymnasium's epsilon in the normalisers; CleanRL's clip after them


class RunningMeanStd:
    """Running mean and variance of a stream of batches (Chan et al.'s parallel update, as gymnasium's)."""

    def __init__(self, shape: tuple[int, ...], device: torch.device):
        self.mean = torch.zeros(shape, device=device)
        self.var = torch.ones(shape, device=device)
        self.inv_std = torch.empty(shape, device=device)  # kept with var: normalising is then one multiply
        self.refresh_inv_std()
        self.count = 1e-4  # gymnasium's prior: the first batch all but replaces the initial mean 0 and var 1

    def update(self, x: torch.Tensor) -> None:
        """Fold in a batch x [batch, *shape]; in place, so that calls in inference mode keep normal tensors."""
        batch_var, batch_mean = torch.var_mean(x, dim=0, correction=0)
        count, batch_count = self.count, x.shape[0]
        total = count + batch_count
        delta = batch_mean - self.mean
        self.mean.add_(delta, alpha=batch_count / total)
        # var = (var * count + batch_var * batch_count + delta^2 * count * batch_count / total) / total
        self.var.mul_(count / total).add_(batch_var, alpha=batch_count / total)
        self.var.addcmul_(delta, delta, value=count * batch_count / total**2)
        self.count = total
        self.refresh_inv_std()

    def refresh_inv_std(self) -> None:
        """inv_std = 1 / sqrt(var + eps), written in place: whenever var changes."""
        torch.add(self.var, NORM_EPS, out=self.inv_std).rsqrt_()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) * self.inv_std).clamp(-NORM_CLIP, NORM_CLIP)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean.copy_(state["mean"])
        self.var.copy_(state["var"])
        self.refresh_inv_std()
        self.count = state["count"]


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """CleanRL's orthogonal initialisation: weights of gain `std`, constant biases."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim: int, hidden: int, out_dim: int, out_std: float) -> nn.Sequential:
    return nn.Sequential(layer_init(nn.Linear(in_dim, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, hidden)),
                         nn.Tanh(), layer_init(nn.Linear(hidden, out_dim), std=out_std))


@dataclasses.dataclass(frozen=True)
class GaussianPart:
    """A Box's coordinates: a Gaussian with a state-independent std, its means the actor's `outputs`."""
    outputs: slice  # of the actor's output: the means
    actions: slice  # of the flat action
    log_std: slice  # of the network's actor_logstd


@dataclasses.dataclass(frozen=True)
class CategoricalPart:
    """One discrete choice: a categorical over the logits `outputs`, stored as the index chosen."""
    outputs: slice  # of the actor's output: the logits
    action: int  # the column of the flat action holding the index


class ActionLayout:
    """An action space as a product of independent parts: a Gaussian per Box, a categorical per Discrete (and per
    entry of a MultiDiscrete), in any Tuple or Dict of them. The actor outputs every part's parameters side by
    side; the rollout stores an action as one flat float vector (an index is exact in a float32 up to 2^24);
    `to_env` rebuilds the space's own structure (a tensor, or a tuple or dict of them, batched) from it."""

    def __init__(self, space: gym.Space, device: torch.device):
        self.parts: list[GaussianPart | CategoricalPart] = []
        self.outputs = self.columns = self.gaussian_dims = 0  # running sizes while planning, then the totals
        self.device = device
        self.to_env = self._plan(space)

    def _plan(self, space: gym.Space):
        """Lay out `space`'s parts after those planned so far; return flat actions [N, columns] -> its structure."""
        start_column = self.columns
        if isinstance(space, gym.spaces.Box):
            size = math.prod(space.shape)
            columns = slice(start_column, start_column + size)
            self.parts.append(GaussianPart(slice(self.outputs, self.outputs + size), columns,
                                           slice(self.gaussian_dims, self.gaussian_dims + size)))
            self.outputs, self.columns, self.gaussian_dims = (self.outputs + size, self.columns + size,
                                                               self.gaussian_dims + size)
            low, high = (bound.flatten() for bound in action_bounds(space, self.device))
            # Clipped to the bounds on the way out, as CleanRL's ClipAction wrapper does; stored as drawn.
            return lambda flat: flat[:, columns].clamp(low, high).view(flat.shape[0], *space.shape)
        if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
            choices = [int(space.n)] if isinstance(space, gym.spaces.Discrete) else space.nvec.flatten().tolist()
            for n in choices:
                self.parts.append(CategoricalPart(slice(self.outputs, self.outputs + n), self.columns))
                self.outputs, self.columns = self.outputs + n, self.columns + 1
            columns = slice(start_column, self.columns)
            offset = torch.as_tensor(space.start, device=self.device).flatten()
            shape = () if isinstance(space, gym.spaces.Discrete) else space.shape
            return lambda flat: (flat[:, columns].long() + offset).view(flat.shape[0], *shape)
        if isinstance(space, gym.spaces.Tuple):
            parts = [self._plan(subspace) for subspace in space.spaces]
            return lambda flat: tuple(part(flat) for part in parts)
        if isinstance(space, gym.spaces.Dict):
            parts = {key: self._plan(subspace) for key, subspace in space.spaces.items()}
            return lambda flat: {key: part(flat) for key, part in parts.items()}
        raise UsageError(f"ppo_baseline needs a Box, Discrete or MultiDiscrete action space, or a Tuple or Dict "
                         f"of them, got {space}")


class ActorCritic(nn.Module):
    """Separate tanh MLPs for the value and the policy; the policy is the product of the layout's parts: for
    each Box a Gaussian with a state-independent std, for each discrete choice a categorical over logits. Its
    log-probability and entropy are the sums of the parts' (the parts are independent given the state)."""

    def __init__(self, obs_dim: int, layout: ActionLayout, hidden: int):
        super().__init__()
        self.parts = layout.parts
        self.critic = mlp(obs_dim, hidden, 1, out_std=1.0)
        # The Gaussians' means and the categoricals' logits; a small last layer starts the policy near uniform.
        self.actor_mean = mlp(obs_dim, hidden, layout.outputs, out_std=0.01)
        self.actor_logstd = nn.Parameter(torch.zeros(1, layout.gaussian_dims)) if layout.gaussian_dims else None

    def log_prob(self, out: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(action | s) [...] = sum over parts, from the actor's output `out` for s and the flat action."""
        total = 0.0
        for part in self.parts:
            if isinstance(part, CategoricalPart):
                index = action[..., part.action, None].long()
                total = total + out[..., part.outputs].log_softmax(-1).gather(-1, index).squeeze(-1)
            else:
                log_std = self.actor_logstd[:, part.log_std]
                z = (action[..., part.actions] - out[..., part.outputs]) * (-log_std).exp()
                total = total + (-0.5 * z.square() - log_std - LOG_SQRT_2PI).sum(-1)
        return total

    def entropy(self, out: torch.Tensor) -> torch.Tensor:
        """The policy's entropy [...] = sum over parts, at the states whose actor outputs are `out`."""
        total = torch.zeros(out.shape[:-1], device=out.device)
        for part in self.parts:
            if isinstance(part, CategoricalPart):
                log_p = out[..., part.outputs].log_softmax(-1)
                total = total - (log_p.exp() * log_p).sum(-1)
            else:
                total = total + (0.5 + LOG_SQRT_2PI + self.actor_logstd[:, part.log_std]).sum(-1)
        return total

    def sample(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A flat action [N, columns] drawn from the policy at the states whose actor outputs are `out` [N, ...]."""
        drawn = []
        for part in self.parts:
            if isinstance(part, CategoricalPart):
                probs = out[:, part.outputs].softmax(-1)
                # torch.multinomial's own draw for one sample (argmax of p / q, q ~ Exp(1)), without the check of
                # the probabilities that it reads on the host: on CUDA that read would wait for the device.
                q = torch.empty_like(probs).exponential_(1, generator=generator)
                drawn.append((probs / q).argmax(-1, keepdim=True).float())
            else:
                mean = out[:, part.outputs]
                noise = torch.randn(mean.shape, generator=generator, device=mean.device)
                drawn.append(torch.addcmul(mean, self.actor_logstd[:, part.log_std].exp(), noise))
        return drawn[0] if len(drawn) == 1 else torch.cat(drawn, dim=-1)

    def mode(self, out: torch.Tensor) -> torch.Tensor:
        """The most likely flat action: each Gaussian's mean, each categorical's likeliest index."""
        chosen = [out[:, part.outputs].argmax(-1, keepdim=True).float() if isinstance(part, CategoricalPart)
                  else out[:, part.outputs] for part in self.parts]
        return chosen[0] if len(chosen) == 1 else torch.cat(chosen, dim=-1)


class Agent:
    """PPO: collect `num_steps` transitions per environment, then `update_epochs` passes of clipped updates."""
    hyperparameters = Hyperparameters  # what a subclass (agents/ppo_recurrent.py) extends
    sequence_length = 1  # consecutive steps of one environment that the update replays as one; 1: steps alone

    def __init__(self, observation_space, action_space, num_envs: int = 1, device="cpu", seed: int = 0,
                 total_steps: int = 100_000, **overrides):
        self.h = h = self.hyperparameters(**overrides)
        h.check()
        self.device, self.num_envs = torch.device(device), num_envs
        obs_dim = math.prod(observation_shape(observation_space))
        self.layout = ActionLayout(action_space, self.device)

        torch.manual_seed(seed)  # only the initialisation draws from the global stream
        self.network = self.make_network(obs_dim).to(self.device)
        self.params = list(self.network.parameters())  # a list: clip_grad_norm_ is slower given a generator
        # fused: one kernel steps every parameter (4x faster than the default on a CPU, same update).
        self.optimizer = (torch.optim.Adam(self.params, lr=h.learning_rate, eps=1e-5, fused=True)
                          if h.optimizer == "adam" else
                          torch.optim.RMSprop(self.params, lr=h.learning_rate, alpha=0.99, eps=1e-5))
        self.generator = make_generator(seed, self.device)
        self.obs_rms = RunningMeanStd((obs_dim,), self.device)
        self.return_rms = RunningMeanStd((), self.device)
        self.returns = torch.zeros(num_envs, device=self.device)  # discounted return so far, per env, for norm_reward

        self.batch_size = h.num_steps * num_envs
        self.num_iterations = max(1, total_steps // self.batch_size)
        self.iteration = 1  # the rollout being collected, counted from 1 as in CleanRL's schedule
        self.step = 0  # position in the rollout
        # Rollout storage [num_steps, num_envs, ...]; observations are stored normalised, as the policy saw them.
        shape = (h.num_steps, num_envs)
        self.rollout = {
            "obs": torch.zeros(*shape, obs_dim, device=self.device),
            "actions": torch.zeros(*shape, self.layout.columns, device=self.device),  # flat, as the layout says
            "rewards": torch.zeros(shape, device=self.device),  # normalised when norm_reward
            "terminated": torch.zeros(shape, dtype=torch.bool, device=self.device),
            "truncated": torch.zeros(shape, dtype=torch.bool, device=self.device),
            "next_obs": torch.zeros(*shape, obs_dim, device=self.device),  # the true next observation, normalised
        }

    def make_network(self, obs_dim: int) -> nn.Module:
        return ActorCritic(obs_dim, self.layout, self.h.hidden_size)

    def normalized_obs(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        """obs [B, *obs_shape] -> [B, obs_dim], normalised when norm_obs (as the policy sees it)."""
        x = obs.reshape(obs.shape[0], -1).float()
        if self.h.norm_obs:
            if explore:  # the statistics follow the data collected, never evaluation
                self.obs_rms.update(x)
            x = self.obs_rms.normalize(x)
        return x

    @torch.inference_mode()
    def act(self, obs: torch.Tensor, explore: bool = True) -> torch.Tensor:
        x = self.normalized_obs(obs, explore)  # [num_envs, obs_dim]
        out = self.network.actor_mean(x)
        if not explore:
            return self.layout.to_env(self.network.mode(out))
        action = self.network.sample(out, self.generator)
        self.rollout["obs"][self.step] = x
        self.rollout["actions"][self.step] = action  # unclipped: the log-prob is of the action as drawn
        return self.layout.to_env(action)

    @torch.inference_mode()
    def observe(self, next_obs: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
                truncated: torch.Tensor) -> None:
        rollout, t = self.rollout, self.step
        x = next_obs.reshape(self.num_envs, -1).float()
        # Normalised with the statistics act() used for this step's obs; the next act() folds it in.
        rollout["next_obs"][t] = self.obs_rms.normalize(x) if self.h.norm_obs else x
        if self.h.norm_reward:
            self.returns.mul_(self.h.gamma).add_(reward)
            self.return_rms.update(self.returns)
            reward = (reward * self.return_rms.inv_std).clamp(-NORM_CLIP, NORM_CLIP)
            self.returns.masked_fill_(terminated | truncated, 0.0)  # the next episode's return starts afresh
        rollout["rewards"][t] = reward
        rollout["terminated"][t] = terminated
        rollout["truncated"][t] = truncated
        self.step += 1

    def update(self) -> dict[str, torch.Tensor] | None:
        """Learn from the rollout once it is full; None before then."""
        if self.step < self.h.num_steps:
            return None
        h, r = self.h, self.rollout
        self.step = 0
        frac = max(0.0, 1.0 - (self.iteration - 1) / self.num_iterations) if h.anneal_lr else 1.0
        learning_rate = frac * h.learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.iteration += 1

        with torch.no_grad():
            logprobs, values, next_obs_values = self.rollout_estimates()  # [T, N] each
            advantages = self.compute_advantages(values, next_obs_values)
        # The batch as sequences [S, L, ...] of L = sequence_length consecutive steps of one environment,
        # S = T * N / L; with L = 1 every step is a sequence of its own, in the rollout's order.
        batch = {**self.replay_inputs(), "actions": self.sequences(r["actions"]),
                 "logprobs": self.sequences(logprobs), "advantages": self.sequences(advantages),
                 "values": self.sequences(values), "returns": self.sequences(advantages + values)}  # the value target
        num_sequences = self.batch_size // self.sequence_length
        per_minibatch = max(1, num_sequences // h.num_minibatches)

        clipped, num_minibatches = torch.zeros((), device=self.device), 0
        for _ in range(h.update_epochs):
            # Minibatches are consecutive slices of a random permutation, as in CleanRL; permuting the whole
            # batch once per epoch turns each minibatch into views rather than a gather per tensor.
            permutation = torch.randperm(num_sequences, generator=self.generator, device=self.device)
            shuffled = {name: x[permutation] for name, x in batch.items()}
            for start in range(0, num_sequences, per_minibatch):
                mb = {name: x[start:start + per_minibatch] for name, x in shuffled.items()}
                mb_advantages, mb_values, mb_returns = mb["advantages"], mb["values"], mb["returns"]
                out, new_value = self.replay(mb)  # [n, L, outputs], [n, L]
                logratio = self.network.log_prob(out, mb["actions"]) - mb["logprobs"]
                ratio = logratio.exp()
                with torch.no_grad():
                    clipped += ((ratio - 1.0).abs() > h.clip_coef).float().mean()
                num_minibatches += 1

                if h.norm_adv:  # a minibatch of one has no unbiased std; its advantage becomes 0
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (
                        mb_advantages.std(correction=min(1, mb_advantages.numel() - 1)) + 1e-8)
                # Clipped surrogate (PPO eq. 7), negated to minimise: the max of two losses, the min of two objectives.
                pg_loss = torch.max(-mb_advantages * ratio,
                                    -mb_advantages * ratio.clamp(1 - h.clip_coef, 1 + h.clip_coef)).mean()

                v_loss = (new_value - mb_returns).square()
                if h.clip_vloss:
                    v_clipped = mb_values + (new_value - mb_values).clamp(-h.clip_coef, h.clip_coef)
                    v_loss = torch.max(v_loss, (v_clipped - mb_returns).square())
                v_loss = 0.5 * v_loss.mean()
                loss = pg_loss + h.vf_coef * v_loss
                if h.ent_coef:  # without a bonus the entropy is only a metric: computed once, after the epochs
                    loss = loss - h.ent_coef * self.network.entropy(out).mean()

                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, h.max_grad_norm, foreach=True)
                self.optimizer.step()
            with torch.no_grad():  # the epoch's last minibatch, as CleanRL's (http://joschu.net/blog/kl-approx.html)
                approx_kl = ((ratio - 1) - logratio).mean()
            if h.target_kl > 0 and approx_kl.item() > h.target_kl:  # the only host read, and only when asked
                break

        with torch.no_grad():
            entropy = self.network.entropy(out).mean()  # the last minibatch's states (after its step, for a Gaussian)
        var_returns = batch["returns"].var()
        explained_var = 1 - (batch["returns"] - batch["values"]).var() / var_returns
        return {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(), "entropy": entropy.detach(),
                "approx_kl": approx_kl, "clipfrac": clipped / num_minibatches,
                # 0 rather than CleanRL's NaN for constant returns: the runner takes a NaN metric for divergence.
                "explained_variance": torch.where(var_returns > 0, explained_var, 0.0),
                "learning_rate": torch.full((), learning_rate, device=self.device)}  # a fill, not a host copy

    def compile(self, mode: str = "default") -> None:
        """torch.compile the policy and value networks (forward, and backward in the update); mode
        'reduce-overhead' also captures them as CUDA graphs (on CUDA)."""
        self.network.actor_mean.compile(mode=mode, dynamic=False)
        self.network.critic.compile(mode=mode, dynamic=False)

    def rollout_estimates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(a_t | s_t), V(s_t) and V(true s_{t+1}) over the rollout, [T, N] each. The networks have not
        changed since they acted on it, so they are computed now in one batch: the numbers act() would have
        stored, for a fraction of the time."""
        r = self.rollout
        logprobs = self.network.log_prob(self.network.actor_mean(r["obs"]), r["actions"])
        return (logprobs, self.network.critic(r["obs"]).squeeze(-1),
                self.network.critic(r["next_obs"]).squeeze(-1))

    def sequences(self, x: torch.Tensor) -> torch.Tensor:
        """A rollout tensor [T, N, ...] as sequences [T / L * N, L, ...] of L = sequence_length steps of one
        environment, ordered by start time, then environment (for L = 1, the order of x.flatten(0, 1))."""
        return x.unflatten(0, (-1, self.sequence_length)).transpose(1, 2).flatten(0, 1)

    def replay_inputs(self) -> dict[str, torch.Tensor]:
        """What `replay` needs from the rollout, as sequences [S, ...]."""
        return {"obs": self.sequences(self.rollout["obs"])}

    def replay(self, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor's outputs and the values for a minibatch of sequences, [n, L, outputs] and [n, L]."""
        return self.network.actor_mean(mb["obs"]), self.network.critic(mb["obs"]).squeeze(-1)

    def compute_advantages(self, values: torch.Tensor, next_obs_values: torch.Tensor) -> torch.Tensor:
        """GAE (Schulman et al. 2015, eq. 16) over the rollout, by the backward recursion
            delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_t) - V(s_t)
            A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
        with done_t = terminated_t or truncated_t, and V(s_{t+1}) the next step's value, or for the rollout's
        last step the value of the observation that followed it (CleanRL's next_value). A step truncated by a
        time limit did not end the MDP: its r_t gets gamma * V(true next obs), so the cut still bootstraps.
        `values` V(s_t), `next_obs_values` V(true s_{t+1}) and the advantages are [num_steps, num_envs]."""
        r, gamma = self.rollout, self.h.gamma
        rewards = r["rewards"] + gamma * next_obs_values * (r["truncated"] & ~r["terminated"])
        next_values = torch.cat([values[1:], next_obs_values[-1:]])  # V(s_{t+1}), [T, N]
        not_done = (~(r["terminated"] | r["truncated"])).float()
        deltas = rewards + gamma * next_values * not_done - values
        decays = gamma * self.h.gae_lambda * not_done
        advantage, advantages = torch.zeros(self.num_envs, device=self.device), []
        for delta, decay in zip(reversed(deltas.unbind(0)), reversed(decays.unbind(0))):
            advantage = delta + decay * advantage
            advantages.append(advantage)
        return torch.stack(advantages[::-1])

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Plasticity of the value network, on the observations of the latest rollout."""
        return plasticity(self.network.critic, self.rollout["obs"].flatten(0, 1))

    def policy_state_dict(self) -> dict:
        """What acting and fine-tuning need: the networks and the normalisers' statistics (copied)."""
        return copy.deepcopy({"network": self.network.state_dict(), "obs_rms": self.obs_rms.state_dict(),
                              "return_rms": self.return_rms.state_dict()})

    def load_policy_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.return_rms.load_state_dict(state["return_rms"])

    def state_dict(self) -> dict:
        """A snapshot (copied, so the agent may go on) of everything a resumed run needs to continue exactly."""
        return copy.deepcopy({
            "network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
            "obs_rms": self.obs_rms.state_dict(), "return_rms": self.return_rms.state_dict(),
            "returns": self.returns, "rollout": self.rollout, "step": self.step, "iteration": self.iteration,
            "rng": rng_state(self.generator),
        })

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.return_rms.load_state_dict(state["return_rms"])
        self.returns.copy_(state["returns"])
        for name, tensor in self.rollout.items():
            tensor.copy_(state["rollout"][name])
        self.step, self.iteration = state["step"], state["iteration"]
        load_rng_state(self.generator, state["rng"])
