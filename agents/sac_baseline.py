"""Soft Actor-Critic, as in CleanRL's `sac_continuous_action.py`, and its DroQ variant (preset `droq`).

Papers: Haarnoja et al. 2018, "Soft Actor-Critic" (https://arxiv.org/abs/1801.01290) and "Soft Actor-Critic
Algorithms and Applications" (automatic entropy tuning, https://arxiv.org/abs/1812.05905); Hiraoka et al. 2022,
"Dropout Q-Functions for Doubly Efficient Reinforcement Learning" (DroQ, https://arxiv.org/abs/2110.02034).
Reference code: https://github.com/vwxyzjn/cleanrl/blob/master/cleanrl/sac_continuous_action.py

DroQ is SAC with dropout and LayerNorm in the Q functions (Linear -> Dropout -> LayerNorm -> ReLU), which lets
a high replay ratio (20 critic updates per transition) learn fast without the ensemble REDQ (Chen et al. 2021,
https://arxiv.org/abs/2101.05982) needs. From REDQ, whose code DroQ's builds on,
https://github.com/TakuyaHiraoka/Dropout-Q-Functions-for-Doubly-Efficient-Reinforcement-Learning
it takes the actor's update: once per 20 critic updates, on the MEAN of the Q functions (the targets keep
their minimum). `sac_baseline:droq` sets exactly the paper's hyperparameters:
dropout 0.01, LayerNorm, replay ratio 20, one actor update per 20, the mean for the actor, 3e-4 for every
learning rate (actor, critics, temperature) and 5000 uniform-random steps before learning.

Same algorithm and hyperparameter names as CleanRL; what differs is for speed or for the lab's interface:
- the critics' weights are frozen during the actor's backward pass, so it computes no critic weight grads;
- the actor and temperature losses share one backward pass and one optimiser step (disjoint parameters);
- no `.item()` or other host read in the update, so on CUDA it never waits for the device;
- `replay_ratio` gradient updates per environment transition (CleanRL: 1);
- `learning_starts` defaults to 1000 instead of 5000, so short budgets (Pendulum at 8000 steps) learn.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from agents.common import HyperparametersBase, OffPolicyAgent, tanh_gaussian, temperature
from lab import UsageError


@dataclasses.dataclass
class Hyperparameters(HyperparametersBase):
    buffer_size: int = 1_000_000  # replay capacity in transitions (never more than the run's step budget)
    gamma: float = 0.99  # discount factor
    tau: float = 0.005  # Polyak averaging rate of the target critics
    batch_size: int = 256  # transitions per gradient update
    learning_starts: int = 1_000  # uniform-random actions and no updates before this many transitions
    policy_lr: float = 3e-4  # Adam learning rate of the actor
    q_lr: float = 1e-3  # Adam learning rate of the critics (and of the temperature, as in CleanRL)
    policy_frequency: int = 2  # the actor's turn comes every this many critic updates (TD3-style delay)
    policy_catch_up: bool = True  # at its turn the actor takes policy_frequency steps (CleanRL), else one
    target_network_frequency: int = 1  # Polyak update of the target critics every this many critic updates
    alpha: float = 0.2  # entropy temperature when autotune is off (autotune starts from 1, as CleanRL)
    autotune: bool = True  # learn the temperature towards the target entropy
    target_entropy_scale: float = 1.0  # target entropy = -target_entropy_scale * |A|
    replay_ratio: float = 1.0  # gradient updates per environment transition
    hidden_size: int = 256  # width of the two hidden layers of actor and critics
    n_critics: int = 2  # Q functions in the ensemble; targets use their minimum (clipped double Q)
    dropout: float = 0.0  # dropout rate after each hidden layer of the critics (DroQ: 0.01)
    layer_norm: bool = False  # LayerNorm after each hidden layer of the critics, before the ReLU (DroQ)
    actor_reduction: str = "min"  # what the actor's loss reads of the critics: their 'min' (SAC) or 'mean' (DroQ)

    positive = ("buffer_size", "batch_size", "policy_lr", "q_lr", "policy_frequency",
                "target_network_frequency", "replay_ratio", "hidden_size", "n_critics")
    unit_interval = ("gamma", "tau", "dropout")

    def check(self) -> None:
        super().check()
        if self.actor_reduction not in ACTOR_REDUCTIONS:
            raise UsageError(f"hyperparameter actor_reduction must be one of {', '.join(ACTOR_REDUCTIONS)}, "
                             f"got '{self.actor_reduction}'")


ACTOR_REDUCTIONS = ("min", "mean")


PRESETS: dict[str, dict] = {
    # Hiraoka et al. 2022, Table 3 (and REDQ's code for the actor's mean and its one update per 20).
    "droq": {"dropout": 0.01, "layer_norm": True, "replay_ratio": 20.0, "policy_frequency": 20,
             "policy_catch_up": False, "actor_reduction": "mean", "policy_lr": 3e-4, "q_lr": 3e-4,
             "learning_starts": 5000},
    # The quick check's: every code path, at a sixteenth of the matrix arithmetic.
    "quick": {"hidden_size": 64},
}

# hypertune.py's search when no --param is given, in --param's syntax. Eimer et al. 2023, "Hyperparameters in
# Reinforcement Learning and How To Tune Them" (https://arxiv.org/abs/2306.01324), find that nearly every
# hyperparameter of SAC matters and that their interactions are benign, so broad ranges are cheap to search:
# the learning rates an order of magnitude around CleanRL's defaults, the Polyak rate around SAC's 0.005, and
# the discount, on which every task's horizon depends. (The replay ratio matters too; it is left out because
# it multiplies a trial's cost.)
SEARCH_SPACE = {"q_lr": "1e-4:3e-3:log", "policy_lr": "1e-4:3e-3:log", "tau": "0.001:0.05:log",
                "gamma": "0.9:0.999"}

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Actor(nn.Module):
    """obs -> (mean, log_std) of a Gaussian over pre-tanh actions; log_std is squashed into [min, max]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(inplace=True),
                                   nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, 2 * action_dim)  # mean and log_std in one matmul

    def forward(self, obs):
        mean, log_std = self.head(self.trunk(obs)).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std


class Critics(nn.Module):
    """An ensemble of `n` Q functions: (obs [B, o], action [B, a]) -> Q values [n, B].

    Separate MLPs rather than one batched matmul per layer: on a CPU that is as fast, and simpler. Dropout is
    active whenever the module is in training mode, which it always is: DroQ drops units in targets too.
    """

    def __init__(self, h: Hyperparameters, obs_dim: int, action_dim: int):
        super().__init__()

        def hidden_layer(in_dim):
            return [nn.Linear(in_dim, h.hidden_size), *([nn.Dropout(h.dropout)] if h.dropout > 0 else []),
                    *([nn.LayerNorm(h.hidden_size)] if h.layer_norm else []), nn.ReLU(inplace=True)]

        self.qfs = nn.ModuleList([
            nn.Sequential(*hidden_layer(obs_dim + action_dim), *hidden_layer(h.hidden_size),
                          nn.Linear(h.hidden_size, 1))
            for _ in range(h.n_critics)])

    def forward(self, obs, action):
        x = torch.cat([obs, action], dim=-1)  # [B, o + a]
        return torch.stack([qf(x).squeeze(-1) for qf in self.qfs])  # [n, B]


class Agent(OffPolicyAgent):
    name = "sac_baseline"

    def __init__(self, observation_space, action_space, num_envs=1, device="cpu", seed=0, total_steps=100_000,
                 **overrides):
        self.setup(Hyperparameters(**overrides), observation_space, action_space, num_envs, device, seed,
                   total_steps)
        h = self.h
        self.actor = Actor(self.obs_dim, self.action_dim, h.hidden_size).to(self.device)
        self.critic = Critics(h, self.obs_dim, self.action_dim).to(self.device)
        self.critic_target = Critics(h, self.obs_dim, self.action_dim).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.polyak_pairs = list(self.critic_target.parameters()), list(self.critic.parameters())
        self.log_alpha, self.target_entropy = temperature(h, self.action_dim, self.device)
        fused = self.device.type in ("cpu", "cuda")
        self.q_optimizer = torch.optim.Adam(self.critic.parameters(), lr=h.q_lr, fused=fused)
        actor_groups = [{"params": self.actor.parameters(), "lr": h.policy_lr}]
        if h.autotune:
            actor_groups.append({"params": [self.log_alpha], "lr": h.q_lr})
        self.actor_optimizer = torch.optim.Adam(actor_groups, fused=fused)
        self.critic_updates = 0
        self.checkpointed = {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target,
                             "log_alpha": self.log_alpha, "q_optimizer": self.q_optimizer,
                             "actor_optimizer": self.actor_optimizer}

    def gradient_step(self) -> dict[str, torch.Tensor]:
        """One critic update, and the actor/temperature and target updates when their turn comes.

        y = r + gamma * (1 - terminated) * (min_i Q_target_i(s', a') - alpha * log pi(a'|s')),  a' ~ pi(.|s')
        L_Q = sum_i mean (Q_i(s, a) - y)^2
        L_pi = mean (alpha * log pi(a~|s) - min_i Q_i(s, a~)),  a~ ~ pi(.|s)  (reparameterised; DroQ: mean_i)
        L_alpha = mean (-alpha * (log pi(a~|s) + target_entropy))
        """
        h = self.h
        obs, actions, rewards, next_obs, terminated = self.buffer.sample(h.batch_size, self.generator)
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_mean, next_log_std = self.actor(next_obs)
            noise = torch.randn(next_mean.shape, device=self.device, generator=self.generator)
            next_actions, next_log_pi = tanh_gaussian(next_mean, next_log_std, noise, self.action_scale,
                                                      self.action_bias)
            min_qf_next_target = self.critic_target(next_obs, next_actions).min(dim=0).values - alpha * next_log_pi
            next_q_value = rewards + (1 - terminated) * h.gamma * min_qf_next_target
        q = self.critic(obs, actions)  # [n_critics, B]
        qf_loss = (q - next_q_value).pow(2).mean(dim=1).sum()
        self.q_optimizer.zero_grad(set_to_none=True)
        qf_loss.backward()
        self.q_optimizer.step()
        self.critic_updates += 1

        if self.critic_updates % h.policy_frequency == 0:
            # CleanRL catches up on the skipped actor updates; DroQ (like REDQ) updates the actor just once.
            for _ in range(h.policy_frequency if h.policy_catch_up else 1):
                self.actor_metrics = self.actor_step(obs)
        if self.critic_updates % h.target_network_frequency == 0:
            with torch.no_grad():  # Polyak: target <- (1 - tau) * target + tau * online, all tensors in one call
                torch._foreach_lerp_(self.polyak_pairs[0], self.polyak_pairs[1], h.tau)
        return {"qf_loss": qf_loss.detach(), "q_mean": q.detach().mean(), **self.actor_metrics}

    def actor_step(self, obs) -> dict[str, torch.Tensor]:
        mean, log_std = self.actor(obs)
        noise = torch.randn(mean.shape, device=self.device, generator=self.generator)
        actions, log_pi = tanh_gaussian(mean, log_std, noise, self.action_scale, self.action_bias)
        alpha = self.log_alpha.exp()
        self.critic.requires_grad_(False)  # the actor's loss must not move the critics (nor pay for their grads)
        q = self.critic(obs, actions)
        q = q.min(dim=0).values if self.h.actor_reduction == "min" else q.mean(dim=0)
        actor_loss = (alpha.detach() * log_pi - q).mean()
        loss = actor_loss
        if self.h.autotune:
            alpha_loss = (-alpha * (log_pi.detach() + self.target_entropy)).mean()
            loss = loss + alpha_loss
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic.requires_grad_(True)
        self.actor_optimizer.step()
        return {"actor_loss": actor_loss.detach(), "alpha": alpha.detach(), "entropy": -log_pi.detach().mean()}
