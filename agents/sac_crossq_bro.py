"""CrossQ scaled up for compute and regularised as BRO and SimBa do: a residual critic of ~5M parameters.

Papers: Nauman et al. 2024, "Bigger, Regularized, Optimistic: scaling for compute and sample-efficient
continuous control" (BRO, https://arxiv.org/abs/2405.16158); Lee et al. 2025, "SimBa: Simplicity Bias for
Scaling Up Parameters in Deep Reinforcement Learning" (https://arxiv.org/abs/2410.09754); Nikishin et al. 2022,
"The Primacy Bias in Deep Reinforcement Learning" (resets, https://arxiv.org/abs/2205.07802); CrossQ (see
agents/crossq.py), this agent's parent.

What changes from crossq, and why:
- residual critic (BRO's BroNet, SimBa's residual MLP): Linear -> norm -> ReLU, then `critic_blocks` blocks
      x <- x + norm(Linear(ReLU(norm(Linear(x)))))
  and a linear head. Skip connections keep a deep critic close to a simple function early on and gradients
  flowing; BRO shows such a critic keeps improving as it grows where a plain MLP stops. The normalisation is
  CrossQ's BatchRenorm rather than BRO's LayerNorm, so that the joint (s, s') pass still shares statistics
  and no target network is needed. At the default width of 768 with 2 blocks the two critics hold 4.8M
  parameters (2.4M each), BRO's ~5M critic;
- replay ratio 2 (BRO (Fast)'s): a bigger critic pays off with more updates per transition;
- weight decay on the linear layers' weights (AdamW, BRO's 1e-4): keeps weights small, the plasticity that
  a high replay ratio otherwise erodes (watch `weight_magnitude` and `dormant_ratio` in the logs);
- target entropy -|A|/2 (BRO, from DroQ/REDQ's line of work): less random exploration once the critic is good;
- optional full resets of networks, optimisers and temperature every `reset_every` critic updates, keeping
  the replay buffer (primacy bias: an early-overfit network learns anew from all data). Off by default: at
  the budgets a workstation runs, a reset costs more return than it wins back;
- batch 128 (BRO's): per row, the residual critic costs 2.2 times the multiply-adds of a 1024-wide CrossQ
  critic, and it is updated twice per transition; half the rows halve that bill, and BatchRenorm still sees
  256 rows in the joint pass.
Not taken from BRO: its quantile critic and dual-actor optimistic exploration, which would make this a
different algorithm from CrossQ rather than a scaled one.

The file is written as a diff of crossq: the hyperparameters it changes or adds, the residual critic, AdamW,
and the reset. The update's equations are crossq's, in agents/crossq.py.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from agents import crossq
from agents.common import temperature


@dataclasses.dataclass
class Hyperparameters(crossq.Hyperparameters):
    policy_lr: float = 1e-3  # AdamW learning rate of the actor
    q_lr: float = 1e-3  # AdamW learning rate of the critics and of the temperature
    batch_size: int = 128  # transitions per gradient update (the joint critic pass sees twice as many rows)
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay of the linear layers' weights, actor and critics
    target_entropy_scale: float = 0.5  # target entropy = -target_entropy_scale * |A|
    replay_ratio: float = 2.0  # gradient updates per environment transition
    reset_every: int = 0  # critic updates between full resets of networks, optimisers and temperature; 0: never
    critic_hidden: int = 768  # width of the critics' residual stream
    critic_blocks: int = 2  # residual blocks per critic, two linear layers each

    positive = crossq.Hyperparameters.positive + ("critic_blocks",)


PRESETS: dict[str, dict] = {
    # The quick check's: every code path at a small fraction of the arithmetic.
    "quick": {"critic_hidden": 64, "critic_blocks": 1, "actor_hidden": 64, "replay_ratio": 1.0},
}

# hypertune.py's search when no --param is given, in --param's syntax: crossq's learning rates and discount, and
# AdamW's weight decay around BRO's 1e-4 (its regulariser, the knob this agent adds).
SEARCH_SPACE = {"q_lr": "1e-4:3e-3:log", "policy_lr": "1e-4:3e-3:log", "gamma": "0.9:0.999",
                "weight_decay": "1e-5:1e-3:log"}


class ResidualBlock(nn.Module):
    """x + BRN(Linear(ReLU(BRN(Linear(x))))): BRO's block, BatchRenorm in place of LayerNorm."""

    def __init__(self, width: int, h: Hyperparameters):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), crossq.batch_renorm(width, h),
                                  nn.ReLU(inplace=True), nn.Linear(width, width), crossq.batch_renorm(width, h))

    def forward(self, x):
        return x + self.body(x)


class Critics(crossq.Critics):
    """crossq's ensemble, each Q a residual network: BRN -> Linear -> BRN -> ReLU -> blocks -> Linear."""

    @staticmethod
    def q_network(in_dim: int, h: Hyperparameters) -> nn.Module:
        width = h.critic_hidden
        return nn.Sequential(crossq.batch_renorm(in_dim, h), nn.Linear(in_dim, width), crossq.batch_renorm(width, h),
                             nn.ReLU(inplace=True), *[ResidualBlock(width, h) for _ in range(h.critic_blocks)],
                             nn.Linear(width, 1))


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """The linear layers' weights decay; biases and normalisation parameters do not (they set scale and shift,
    and shrinking them towards 0 would fight the normalisation)."""
    weights = [m.weight for m in module.modules() if isinstance(m, nn.Linear)]
    decayed = {id(p) for p in weights}
    rest = [p for p in module.parameters() if id(p) not in decayed]
    return [{"params": weights, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class Agent(crossq.Agent):
    name = "sac_crossq_bro"
    hyperparameters = Hyperparameters

    def build_learner(self) -> None:
        """crossq's, with the residual critic and AdamW; called again at every reset."""
        h = self.h
        self.actor = crossq.Actor(self.obs_dim, self.action_dim, h).to(self.device).eval()
        self.critic = Critics(self.obs_dim, self.action_dim, h).to(self.device).eval()
        self.log_alpha, self.target_entropy = temperature(h, self.action_dim, self.device)
        betas, fused = (h.adam_beta1, 0.999), self.device.type in ("cpu", "cuda")
        self.q_optimizer = torch.optim.AdamW(parameter_groups(self.critic, h.weight_decay), lr=h.q_lr, betas=betas,
                                             fused=fused)
        actor_groups = parameter_groups(self.actor, h.weight_decay)
        if h.autotune:
            actor_groups.append({"params": [self.log_alpha], "lr": h.q_lr, "weight_decay": 0.0})
        self.actor_optimizer = torch.optim.AdamW(actor_groups, lr=h.policy_lr, betas=betas, fused=fused)
        self.checkpointed = {"actor": self.actor, "critic": self.critic, "log_alpha": self.log_alpha,
                             "q_optimizer": self.q_optimizer, "actor_optimizer": self.actor_optimizer}

    def gradient_step(self) -> dict[str, torch.Tensor]:
        metrics = super().gradient_step()
        if self.h.reset_every and self.critic_updates % self.h.reset_every == 0:
            # Primacy bias: forget everything but the replay buffer. The fresh weights come from a seed of their
            # own, not from the global RNG's position, so resumed and uninterrupted runs reset alike.
            with torch.random.fork_rng(devices=[]):  # the networks are built on the CPU, then moved
                torch.default_generator.manual_seed(self.seed * 1_000_003 + self.critic_updates)
                self.build_learner()
            self.compile_networks()
            self.actor_metrics = {}
        return metrics
