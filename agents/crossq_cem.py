"""CrossQ whose actions are searched on the critic: the cross-entropy method (CEM) started from the actor's
action, then gradient ascent on the action. The actor is the search's prior and, by default, the TD target's.

Papers: Kalashnikov et al. 2018, "QT-Opt: Scalable Deep Reinforcement Learning for Vision-Based Robotic
Manipulation" (CEM over a Q function for acting and for targets, https://arxiv.org/abs/1806.10293); Bharadhwaj
et al. 2020, "Model-Predictive Control via Cross-Entropy and Gradient-Based Optimization" (CEM's answer refined
by gradient steps, https://arxiv.org/abs/2004.08763); Riedmiller and Braun 1993, Rprop (the steps); Hansen et al.
2024, "TD-MPC2: Scalable, Robust World Models for Continuous Control" (a learned policy prior for the planner,
and for the TD targets, https://arxiv.org/abs/2310.16828); Fujimoto et al. 2018, "Addressing Function
Approximation Error in Actor-Critic Methods" (TD3's target policy smoothing, https://arxiv.org/abs/1802.09477);
Rubinstein 1999 (the cross-entropy method); CrossQ (see agents/crossq.py), this agent's parent.

What changes from crossq:
- acting and evaluating: a = argmax_a min_i Q_i(s, a), the critics in evaluation mode, found by a search in the
  action space rescaled to [-1, 1]^|A|, started from the prior's mean action tanh(mu(s)):
  1. CEM: start from N(mean_0, init_std^2); each iteration samples `population` actions per state, scores
     them with the critics, and refits mean and std to the `elites` best. init_std = 1 spreads the first
     population over the whole box.
  2. Ascent: `ascent_steps` Rprop steps on CEM's mean, a <- clip(a + step * sign(dQ/da)), each coordinate's
     step growing by 1.2 while its gradient keeps its sign and halving when it flips (from `ascent_lr`).
  3. The answer is the best-scoring of the start, CEM's mean and the ascent's end: never worse than the prior.
  Exploring adds Gaussian noise of std `exploration_noise` (rescaled space) to the answer, clipped;
- the prior is crossq's actor, trained as crossq trains it (L_pi = mean(alpha * log pi - min_i Q_i), every
  `policy_delay` updates); it never acts itself;
- the TD target (`td_target`):
  'prior' (default, TD-MPC2's choice): crossq's, a' ~ pi(.|s') with its entropy bonus; the search serves
  acting and evaluation only;
  'search' (QT-Opt's): a' = the search's answer from 0, without entropy, smoothed as TD3 smooths its target:
      y = r + gamma * (1 - terminated) * min_i Q_i(s', clip(argmax(s') + clip(eps, -c, c), -1, 1)),
      eps ~ N(0, target_noise^2), c = target_noise_clip (TD3's 0.2 and 0.5).
The critics' update itself, the joint (s, s') pass in training mode, is crossq's `critic_step`.

Why CEM and ascent, chosen by measurement (tests/test_crossq.py holds the check): on a concave score maximised at
0.8 in every coordinate, the former search, CEM alone (2 iterations of 32 candidates, 4 elites, std 0.5:
QT-Opt's recipe at half its population), misses by 0.02, 0.33, 0.61 and 0.96 (mean of the largest coordinate
error over 256 problems, started from 0) at |A| = 1, 3, 6 and 17: its samples cover a vanishing part of the
box as |A| grows. The whole box as the first spread (std 1) gives 0.01, 0.14, 0.45, 1.02; 6 iterations of 64
candidates 0.00, 0.01, 0.04, 0.41; 6 of 128 still 0.21 at |A| = 17, at 12 times the cost. CEM then 15 Rprop
steps: 0.002, 0.005, 0.011, 0.029 (and 0 on a score maximised at a corner), at about twice the cost (15
forward and backward passes of one action per state against CEM's 64 forward passes). Rprop's steps follow
the sign of the gradient alone, so they need no tuning to the scale of Q. CEM keeps a global search for
critics with several maxima; the ascent supplies the precision that sampling cannot.

Why the prior's targets, measured (benchmarks/validation.py's task: HalfCheetah-v5, 20,000 steps, critics 128
wide, seeds 0-2; docs/results.md has every figure): the search's greedy a' finds the critics' sharpest peaks,
which their errors make too high. With 'search' targets (and, before the prior existed, the search warm-started
from the previous step's answer) crossq_cem reached 72% of crossq's IQM at best: 61% unsmoothed, 72% with TD3's
smoothing, and no better with a wider smoothing, other exploration noise, a wider search, a 4-sample averaged
target, a lagged search copy or two updates per step. The prior's soft targets average a' over a distribution
that the entropy keeps wide, as crossq's do: final returns 4598.7, 2783.9, 4741.0 against crossq's 5239.9,
1539.9, 5328.7 in the same session (IQM 4041.2 against 4036.2). The search when evaluating is worth little more
than the prior's mean would be: re-evaluated on 5 episodes, 4510, 2780, 4740 against 4436, 2052, 5648.

Cost: with 'prior' targets an update is crossq's, and each environment step adds one search for its state:
population * iterations + ascent_steps + 1 scored (state, action) pairs, the ascent's with a backward pass.
With 'search' targets each update searches for every sampled s', batch_size times that: use narrow critics
there. Every step of a search for a batch of states is a few tensor operations on [batch, population, |A|],
never a loop over states or samples. The critics stay 256 wide (crossq's are 1024) so that every search, and
a CPU run, stays short.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from agents import crossq
from agents.common import make_generator
from lab import UsageError


TD_TARGETS = ("prior", "search")


@dataclasses.dataclass
class Hyperparameters(crossq.Hyperparameters):
    """crossq's (its actor is the search's prior), and the search's."""
    critic_hidden: int = 256  # width of the critics' two hidden layers (every search multiplies their cost)
    td_target: str = "prior"  # a' of the TD target: the prior's sample, as crossq's ('prior'), or the search's
    # answer ('search', QT-Opt's)
    population: int = 32  # CEM: candidate actions scored per state and iteration (QT-Opt: 64)
    elites: int = 4  # CEM: best candidates that the next sampling distribution is fitted to (QT-Opt: 6)
    iterations: int = 2  # CEM: sample-score-refit rounds (QT-Opt: 2)
    init_std: float = 1.0  # CEM: initial std of the sampling distribution, in the action range scaled to [-1, 1]
    min_std: float = 0.05  # CEM: floor of the refitted std, so the search never collapses to a point early
    ascent_steps: int = 15  # Rprop steps of gradient ascent on CEM's answer (0: CEM alone)
    ascent_lr: float = 0.1  # Rprop's first step in each coordinate, in the scaled range
    exploration_noise: float = 0.2  # std of the Gaussian noise on the action when exploring, scaled range
    target_noise: float = 0.2  # td_target 'search': std of the noise on a', scaled range (TD3's smoothing); 0: none
    target_noise_clip: float = 0.5  # that noise is clipped to +-this (TD3's)

    positive = crossq.Hyperparameters.positive + ("population", "elites", "iterations", "init_std", "ascent_lr")

    def check(self) -> None:
        super().check()
        if self.td_target not in TD_TARGETS:
            raise UsageError(f"hyperparameter td_target must be one of {', '.join(TD_TARGETS)}, got '{self.td_target}'")
        if self.elites > self.population:
            raise UsageError(f"hyperparameter elites ({self.elites}) must not exceed population ({self.population})")


PRESETS: dict[str, dict] = {
    # The quick check's: every code path at a small fraction of the arithmetic.
    "quick": {"critic_hidden": 64, "actor_hidden": 64, "batch_size": 128, "population": 16, "elites": 2,
              "ascent_steps": 3},
}

# hypertune.py's search when no --param is given, in --param's syntax: the critics' learning rate, the discount,
# and the exploration noise, which alone decides how far acting strays from the search's answer.
SEARCH_SPACE = {"q_lr": "1e-4:3e-3:log", "gamma": "0.9:0.999", "exploration_noise": "0.05:0.5"}


ASCENT_MAX_STEP = 0.5  # Rprop's largest step, a quarter of the box: the ascent refines, CEM searches


def cem_maximise(score: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor, h: Hyperparameters,
                 generator: torch.Generator) -> torch.Tensor:
    """argmax over a in [-1, 1]^A of score, for a batch of problems at once: CEM, then Rprop ascent; the answer
    is the best-scoring of the start, CEM's mean and the ascent's end.

    score: [B, P, A] candidates -> [B, P] values, differentiable in the candidates; mean: [B, A] starting
    means. Returns [B, A].
    """
    start = mean
    std = torch.full_like(mean, h.init_std)
    batch, action_dim = mean.shape
    for _ in range(h.iterations):
        noise = torch.randn((batch, h.population, action_dim), device=mean.device, generator=generator)
        candidates = torch.addcmul(mean.unsqueeze(1), std.unsqueeze(1), noise).clamp(-1, 1)  # [B, P, A]
        best = score(candidates).topk(h.elites, dim=1).indices  # [B, E]
        elites = candidates.gather(1, best.unsqueeze(-1).expand(-1, -1, action_dim))  # [B, E, A]
        std, mean = torch.std_mean(elites, dim=1, correction=0)
        std = std.clamp(min=h.min_std)
    found = mean
    if h.ascent_steps > 0:
        # Acting runs in inference mode, whose tensors autograd cannot use: the ascent works on copies outside it.
        with torch.inference_mode(False), torch.enable_grad():
            ascending = mean.clone().requires_grad_(True)
            # capturable on CUDA: its sign updates then use torch.where, not boolean-mask indexing (a host sync)
            rprop = torch.optim.Rprop([ascending], lr=h.ascent_lr, step_sizes=(1e-4, ASCENT_MAX_STEP),
                                      maximize=True, capturable=ascending.device.type == "cuda")
            for _ in range(h.ascent_steps):
                (ascending.grad,) = torch.autograd.grad(score(ascending.unsqueeze(1)).sum(), ascending)
                rprop.step()
                with torch.no_grad():
                    ascending.clamp_(-1, 1)
        found = ascending.detach()
    with torch.no_grad():  # the best of the start, CEM's answer and the ascent's: never worse than the start
        finalists = torch.stack([start, mean, found], dim=1)  # [B, 3, A]
        best = score(finalists).argmax(dim=1, keepdim=True)  # [B, 1]
        return finalists.gather(1, best.unsqueeze(-1).expand(-1, -1, action_dim)).squeeze(1)


class Agent(crossq.Agent):
    name = "crossq_cem"
    hyperparameters = Hyperparameters

    def greedy(self, obs: torch.Tensor, start: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The search's answer for each state, in the scaled action range [-1, 1]; the critics in evaluation mode."""
        def min_q(candidates):  # [B, P, A] -> [B, P]
            population = candidates.shape[1]
            states = obs.unsqueeze(1).expand(-1, population, -1).flatten(0, 1)
            actions = candidates.flatten(0, 1) * self.action_scale + self.action_bias
            return self.critic(states, actions).min(dim=0).values.view(-1, population)

        return cem_maximise(min_q, start, self.h, generator)

    def prior(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor's mean action, in the scaled range: where the search starts."""
        return torch.tanh(self.actor(obs)[0])

    def policy(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        # Evaluating searches with a fixed stream of its own: the same batch of states always gets the same
        # actions, and evaluating draws nothing from training's stream.
        generator = self.generator if explore else make_generator(self.seed, self.device)
        scaled = self.greedy(obs, self.prior(obs), generator)
        if explore:
            noise = torch.randn(scaled.shape, device=self.device, generator=self.generator)
            scaled = (scaled + self.h.exploration_noise * noise).clamp(-1, 1)
        return scaled * self.action_scale + self.action_bias

    def next_actions_and_bonus(self, next_obs):
        """td_target 'prior': crossq's. 'search': a' = the search's answer from 0, smoothed, and no bonus:
        y = r + gamma * (1 - terminated) * min_i Q_i(s', a')."""
        if self.h.td_target == "prior":
            return super().next_actions_and_bonus(next_obs)
        start = torch.zeros((next_obs.shape[0], self.action_dim), device=self.device)
        next_scaled = self.greedy(next_obs, start, self.generator)
        if self.h.target_noise > 0:  # TD3's target smoothing: a' is not the critics' sharpest peak
            noise = torch.randn(next_scaled.shape, device=self.device, generator=self.generator)
            clip = self.h.target_noise_clip
            next_scaled = (next_scaled + (self.h.target_noise * noise).clamp(-clip, clip)).clamp(-1, 1)
        return next_scaled * self.action_scale + self.action_bias, 0.0
