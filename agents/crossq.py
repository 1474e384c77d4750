"""CrossQ: SAC without target networks, with Batch Renormalization in critic and actor.

Paper: Bhatt, Palenicek et al. 2024, "CrossQ: Batch Normalization in Deep Reinforcement Learning for Greater
Sample Efficiency and Simplicity", ICLR (https://arxiv.org/abs/1902.05605).
Reference code: SBX `sbx/crossq/crossq.py`; the authors' https://github.com/adityab/CrossQ

What changes from sac_baseline (its parent), each from the paper:
- no target critics: the TD target bootstraps from the online critic;
- the critic evaluates (s, a) and (s', a') in ONE forward pass in training mode, so BatchRenorm normalises both
  halves with the same statistics. With two passes (or a target network), the batch statistics of s' batches
  would differ from those of s batches, and Q(s', a') would be computed on a shifted input distribution;
- BatchRenorm after the input and every hidden layer of critic and actor; evaluation mode (running statistics)
  when acting, when computing a' and when the actor's loss reads the critic;
- actor updated once every `policy_delay` (3) critic updates; Adam with beta1 = 0.5; learning rates 1e-3;
- wide critics: the paper uses 2048 units. The lab's default is 1024 (SBX's too): a quarter of the arithmetic
  per layer, and on one CPU core it is the difference between a 1-hour and a 4-hour 100k-step run; the
  paper's ablation shows most of the gain already at 1024. Set critic_hidden=2048 for the paper's recipe.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from agents.common import BatchRenorm, HyperparametersBase, OffPolicyAgent, tanh_gaussian, temperature
from lab import UsageError


@dataclasses.dataclass
class Hyperparameters(HyperparametersBase):
    buffer_size: int = 1_000_000  # replay capacity in transitions (never more than the run's step budget)
    gamma: float = 0.99  # discount factor
    batch_size: int = 256  # transitions per gradient update (the joint critic pass sees twice as many rows)
    learning_starts: int = 1_000  # uniform-random actions and no updates before this many transitions
    policy_lr: float = 1e-3  # Adam learning rate of the actor
    q_lr: float = 1e-3  # Adam learning rate of the critics and of the temperature
    adam_beta1: float = 0.5  # Adam's first-moment decay, lowered as in the paper
    policy_delay: int = 3  # one actor (and temperature) update every this many critic updates
    autotune: bool = True  # learn the temperature towards the target entropy (from 1, as CleanRL)
    alpha: float = 0.2  # entropy temperature when autotune is off
    target_entropy_scale: float = 1.0  # target entropy = -target_entropy_scale * |A|
    replay_ratio: float = 1.0  # gradient updates per environment transition
    critic_hidden: int = 1024  # width of the critics' two hidden layers (paper: 2048)
    actor_hidden: int = 256  # width of the actor's two hidden layers
    n_critics: int = 2  # Q functions in the ensemble; targets use their minimum
    bn_momentum: float = 0.01  # rate at which BatchRenorm's running statistics follow the batches
    bn_warmup: int = 100_000  # each layer's training passes as plain BatchNorm (the actor's: 1 per policy_delay)
    bn_r_max: float = 3.0  # BatchRenorm's bound on the std correction r
    bn_d_max: float = 5.0  # BatchRenorm's bound on the mean correction d

    positive = ("buffer_size", "batch_size", "policy_lr", "q_lr", "policy_delay", "replay_ratio", "critic_hidden",
                "actor_hidden", "n_critics", "bn_momentum", "bn_r_max")
    unit_interval = ("gamma", "adam_beta1", "bn_momentum")

    def check(self) -> None:
        super().check()
        check_batch_renorm_recipe(self)


def check_batch_renorm_recipe(h) -> None:
    """What the generic bounds miss: batch statistics need 2 rows, r_max below 1 would invert BatchRenorm's
    clipping, and Adam rejects beta1 = 1."""
    if h.batch_size < 2:
        raise UsageError(f"hyperparameter batch_size must be >= 2 (batch statistics), got {h.batch_size}")
    if h.bn_r_max < 1:
        raise UsageError(f"hyperparameter bn_r_max must be >= 1, got {h.bn_r_max}")
    if h.adam_beta1 >= 1:
        raise UsageError(f"hyperparameter adam_beta1 must be < 1, got {h.adam_beta1}")


PRESETS: dict[str, dict] = {
    # The quick check's: every code path at a small fraction of the arithmetic.
    "quick": {"critic_hidden": 128, "actor_hidden": 64, "batch_size": 128},
}

# hypertune.py's search when no --param is given, in --param's syntax: the learning rates around CrossQ's 1e-3,
# the discount, and the actor's delay around the paper's 3. As for SAC, Eimer et al. 2023
# (https://arxiv.org/abs/2306.01324) find that most hyperparameters matter and that they interact benignly.
SEARCH_SPACE = {"q_lr": "1e-4:3e-3:log", "policy_lr": "1e-4:3e-3:log", "gamma": "0.9:0.999",
                "policy_delay": "1:5:int"}

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def batch_renorm(features: int, h: Hyperparameters) -> BatchRenorm:
    return BatchRenorm(features, h.bn_momentum, warmup_steps=h.bn_warmup, r_max=h.bn_r_max, d_max=h.bn_d_max)


def renormalised_mlp(in_dim: int, hidden: int, out_dim: int, h: Hyperparameters) -> nn.Sequential:
    """BRN -> (Linear -> ReLU -> BRN) x 2 -> Linear, as SBX's CrossQ networks."""
    return nn.Sequential(batch_renorm(in_dim, h), nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                         batch_renorm(hidden, h), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                         batch_renorm(hidden, h), nn.Linear(hidden, out_dim))


class Actor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, h: Hyperparameters):
        super().__init__()
        self.net = renormalised_mlp(obs_dim, h.actor_hidden, 2 * action_dim, h)

    def forward(self, obs):
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)


class Critics(nn.Module):
    """(obs [B, o], action [B, a]) -> Q values [n, B]."""

    def __init__(self, obs_dim: int, action_dim: int, h: Hyperparameters):
        super().__init__()
        self.qfs = nn.ModuleList([self.q_network(obs_dim + action_dim, h) for _ in range(h.n_critics)])

    @staticmethod
    def q_network(in_dim: int, h: Hyperparameters) -> nn.Module:
        return renormalised_mlp(in_dim, h.critic_hidden, 1, h)

    def forward(self, obs, action):
        x = torch.cat([obs, action], dim=-1)  # [B, o + a]
        return torch.stack([qf(x).squeeze(-1) for qf in self.qfs])  # [n, B]


class Agent(OffPolicyAgent):
    name = "crossq"
    hyperparameters = Hyperparameters  # a variant agent subclasses both

    def __init__(self, observation_space, action_space, num_envs=1, device="cpu", seed=0, total_steps=100_000,
                 **overrides):
        self.setup(self.hyperparameters(**overrides), observation_space, action_space, num_envs, device, seed,
                   total_steps)
        self.critic_updates = 0
        self.build_learner()

    def build_learner(self) -> None:
        """Networks, optimisers and temperature. Both networks rest in evaluation mode (acting, a' for the
        targets); the update switches to training mode where the recipe asks for batch statistics."""
        h = self.h
        self.actor = Actor(self.obs_dim, self.action_dim, h).to(self.device).eval()
        self.critic = Critics(self.obs_dim, self.action_dim, h).to(self.device).eval()
        self.log_alpha, self.target_entropy = temperature(h, self.action_dim, self.device)
        betas, fused = (h.adam_beta1, 0.999), self.device.type in ("cpu", "cuda")
        self.q_optimizer = torch.optim.Adam(self.critic.parameters(), lr=h.q_lr, betas=betas, fused=fused)
        actor_groups = [{"params": self.actor.parameters(), "lr": h.policy_lr}]
        if h.autotune:
            actor_groups.append({"params": [self.log_alpha], "lr": h.q_lr})
        self.actor_optimizer = torch.optim.Adam(actor_groups, betas=betas, fused=fused)
        self.checkpointed = {"actor": self.actor, "critic": self.critic, "log_alpha": self.log_alpha,
                             "q_optimizer": self.q_optimizer, "actor_optimizer": self.actor_optimizer}

    def gradient_step(self) -> dict[str, torch.Tensor]:
        """One critic update with the joint pass, and every `policy_delay` updates an actor update.

        [Q(s, a), Q(s', a')] = critic([s, s'], [a, a'])      one pass, training mode, a' ~ pi(.|s') (eval mode)
        y = r + gamma * (1 - terminated) * (min_i Q_i(s', a') - alpha * log pi(a'|s'))    (stop-gradient)
        L_Q = sum_i mean (Q_i(s, a) - y)^2
        L_pi = mean (alpha * log pi(a~|s) - min_i Q_i(s, a~))    critic in evaluation mode
        """
        obs, actions, rewards, next_obs, terminated = self.buffer.sample(self.h.batch_size, self.generator)
        with torch.no_grad():
            next_actions, next_bonus = self.next_actions_and_bonus(next_obs)
        metrics = self.critic_step(obs, actions, rewards, next_obs, terminated, next_actions, next_bonus)
        if self.critic_updates % self.h.policy_delay == 0:
            self.actor_metrics = self.actor_step(obs)
        return {**metrics, **self.actor_metrics}

    def next_actions_and_bonus(self, next_obs):
        """The target's a' ~ pi(.|s') and its entropy bonus -alpha * log pi(a'|s')."""
        next_mean, next_log_std = self.actor(next_obs)
        noise = torch.randn(next_mean.shape, device=self.device, generator=self.generator)
        next_actions, next_log_pi = tanh_gaussian(next_mean, next_log_std, noise, self.action_scale, self.action_bias)
        return next_actions, -self.log_alpha.detach().exp() * next_log_pi

    def critic_step(self, obs, actions, rewards, next_obs, terminated, next_actions, next_bonus):
        """The critics' update from one joint pass; `next_bonus` is added to min_i Q_i(s', a') in the target."""
        self.critic.train()
        joint_q = self.critic(torch.cat([obs, next_obs]), torch.cat([actions, next_actions]))  # [n, 2B]
        self.critic.eval()
        q, next_q = joint_q.split(obs.shape[0], dim=1)  # [n, B] each
        with torch.no_grad():
            next_q_value = rewards + (1 - terminated) * self.h.gamma * (next_q.min(dim=0).values + next_bonus)
        qf_loss = (q - next_q_value).pow(2).mean(dim=1).sum()
        self.q_optimizer.zero_grad(set_to_none=True)
        qf_loss.backward()
        self.q_optimizer.step()
        self.critic_updates += 1
        return {"qf_loss": qf_loss.detach(), "q_mean": q.detach().mean()}

    def actor_step(self, obs) -> dict[str, torch.Tensor]:
        self.actor.train()
        mean, log_std = self.actor(obs)
        self.actor.eval()
        noise = torch.randn(mean.shape, device=self.device, generator=self.generator)
        actions, log_pi = tanh_gaussian(mean, log_std, noise, self.action_scale, self.action_bias)
        alpha = self.log_alpha.exp()
        self.critic.requires_grad_(False)  # the actor's loss must not move the critics (nor pay for their grads)
        min_q = self.critic(obs, actions).min(dim=0).values
        actor_loss = (alpha.detach() * log_pi - min_q).mean()
        loss = actor_loss
        if self.h.autotune:
            loss = loss + (-alpha * (log_pi.detach() + self.target_entropy)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic.requires_grad_(True)
        self.actor_optimizer.step()
        return {"actor_loss": actor_loss.detach(), "alpha": alpha.detach(), "entropy": -log_pi.detach().mean()}
