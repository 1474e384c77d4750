"""CrossQ's critic without an actor: actions maximise the critic by the cross-entropy method (CEM), refined by
gradient ascent on the action.

Papers: Kalashnikov et al. 2018, "QT-Opt: Scalable Deep Reinforcement Learning for Vision-Based Robotic
Manipulation" (CEM over a Q function for acting and for targets, https://arxiv.org/abs/1806.10293); Bharadhwaj
et al. 2020, "Model-Predictive Control via Cross-Entropy and Gradient-Based Optimization" (CEM's answer refined
by gradient steps, https://arxiv.org/abs/2004.08763); Riedmiller and Braun 1993, Rprop (the steps); Hansen et al.
2024, "TD-MPC2" (a planner warm-started from its previous solution, https://arxiv.org/abs/2310.16828); Fujimoto
et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods" (TD3's target policy smoothing,
https://arxiv.org/abs/1802.09477);
Rubinstein 1999 (the cross-entropy method); CrossQ (see agents/crossq.py), this agent's parent.

What changes from crossq:
- no actor, no entropy temperature: a = argmax_a min_i Q_i(s, a), with the critics in evaluation mode, for
  acting, for evaluating and for the next actions a' of the TD target (QT-Opt's recipe);
- the search, in the action space rescaled to [-1, 1]^|A|:
  1. CEM: start from N(mean_0, init_std^2); each iteration samples `population` actions per state, scores
     them with the critics, and refits mean and std to the `elites` best. init_std = 1 spreads the first
     population over the whole box.
  2. Ascent: `ascent_steps` Rprop steps on CEM's mean, a <- clip(a + step * sign(dQ/da)), each coordinate's
     step growing by 1.2 while its gradient keeps its sign and halving when it flips (from `ascent_lr`);
     the result replaces CEM's answer only where it scores higher.
  mean_0 is 0 for targets and evaluation; when exploring it is the previous step's answer in the same
  environment (the warm start), reset to 0 when the episode ends;
- exploration: Gaussian noise of std `exploration_noise` (in the rescaled space) on the answer, clipped;
- the TD target has no entropy term, and smooths the search's answer as TD3 smooths its target policy:
      y = r + gamma * (1 - terminated) * min_i Q_i(s', clip(argmax(s') + clip(eps, -c, c), -1, 1)),
      eps ~ N(0, target_noise^2), c = target_noise_clip (TD3's 0.2 and 0.5); QT-Opt has no such noise.
The critics' update itself, the joint (s, s') pass in training mode, is crossq's `critic_step`.

Why CEM and ascent, chosen by measurement (tests/test_crossq.py holds the check): on a concave score maximised at
0.8 in every coordinate, the former search, CEM alone (2 iterations of 32 candidates, 4 elites, std 0.5:
QT-Opt's recipe at half its population), misses by 0.02, 0.33, 0.61 and 0.96 (mean of the largest coordinate
error over 256 problems) at |A| = 1, 3, 6 and 17: its samples cover a vanishing part of the box as |A| grows.
The whole box as the first spread (std 1) gives 0.01, 0.14, 0.45, 1.02; 6 iterations of 64 candidates 0.00,
0.01, 0.04, 0.41; 6 of 128 still 0.21 at |A| = 17, at 12 times the cost. CEM then 15 Rprop steps: 0.002,
0.005, 0.011, 0.029 (and 0 on a score maximised at a corner), at about twice the cost (15 forward and backward
passes of one action per state against CEM's 64 forward passes). Rprop's steps follow the sign of the gradient
alone, so they need no tuning to the scale of Q. CEM keeps a global search for critics with several maxima;
the ascent supplies the precision that sampling cannot.

Why the smoothing, measured (benchmarks/validation.py's task: HalfCheetah-v5, 20,000 steps, critics 128 wide,
seeds 0-2): with the precise search the greedy a' finds the critics' sharpest peaks, which their errors make too
high, and nothing (no target network, no actor's averaging) damps them. Without smoothing the final returns were
3648, 2225, 3066 (mean 2980, 61% of crossq's 4923 on the same seeds); with it 3824, 3415, 3388 (mean 3543, 72%).
A wider smoothing (noise 0.3) was worse: 3384, 4006, 2282 (mean 3224). TD3's exploration noise as well (0.1 in
place of 0.2) was worse: at 16,000 steps 3110, 3085, 2220 against 3509,
3230, 2887. A wider search when acting (128 candidates, 8 elites, 4 iterations) was worse on seed 1:
3192 against 3415 at 20,000 steps.

Cost: the targets score batch_size * (population * iterations + ascent_steps + 2) (state, action) pairs per
update, the ascent's with a backward pass; every step of a batch of states is a few tensor operations on
[batch, population, |A|], never a loop over states or samples. That is why the critic is narrower than
crossq's: 256 units. At 1024 each update would cost 16 times more.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from agents import crossq
from agents.common import HyperparametersBase, make_generator
from lab import UsageError


@dataclasses.dataclass
class Hyperparameters(HyperparametersBase):
    buffer_size: int = 1_000_000  # replay capacity in transitions (never more than the run's step budget)
    gamma: float = 0.99  # discount factor
    batch_size: int = 256  # transitions per gradient update (the joint critic pass sees twice as many rows)
    learning_starts: int = 1_000  # uniform-random actions and no updates before this many transitions
    q_lr: float = 1e-3  # Adam learning rate of the critics
    adam_beta1: float = 0.5  # Adam's first-moment decay, CrossQ's
    replay_ratio: float = 1.0  # gradient updates per environment transition
    critic_hidden: int = 256  # width of the critics' two hidden layers (CEM multiplies their cost)
    n_critics: int = 2  # Q functions in the ensemble; CEM and targets use their minimum
    population: int = 32  # CEM: candidate actions scored per state and iteration (QT-Opt: 64)
    elites: int = 4  # CEM: best candidates that the next sampling distribution is fitted to (QT-Opt: 6)
    iterations: int = 2  # CEM: sample-score-refit rounds (QT-Opt: 2)
    init_std: float = 1.0  # CEM: initial std of the sampling distribution, in the action range scaled to [-1, 1]
    min_std: float = 0.05  # CEM: floor of the refitted std, so the search never collapses to a point early
    ascent_steps: int = 15  # Rprop steps of gradient ascent on CEM's answer (0: CEM alone)
    ascent_lr: float = 0.1  # Rprop's first step in each coordinate, in the scaled range
    warm_start: bool = True  # when exploring, start CEM from the previous step's answer in that environment
    exploration_noise: float = 0.2  # std of the Gaussian noise on the action when exploring, scaled range
    target_noise: float = 0.2  # std of the noise on the target's a', scaled range (TD3's smoothing); 0: none
    target_noise_clip: float = 0.5  # that noise is clipped to +-this (TD3's)
    bn_momentum: float = 0.01  # rate at which BatchRenorm's running statistics follow the batches
    bn_warmup: int = 100_000  # training passes of plain BatchNorm before renormalisation starts
    bn_r_max: float = 3.0  # BatchRenorm's bound on the std correction r
    bn_d_max: float = 5.0  # BatchRenorm's bound on the mean correction d

    positive = ("buffer_size", "batch_size", "q_lr", "replay_ratio", "critic_hidden", "n_critics", "population",
                "elites", "iterations", "init_std", "ascent_lr", "bn_momentum", "bn_r_max")
    unit_interval = ("gamma", "adam_beta1", "bn_momentum")

    def check(self) -> None:
        super().check()
        crossq.check_batch_renorm_recipe(self)
        if self.elites > self.population:
            raise UsageError(f"hyperparameter elites ({self.elites}) must not exceed population ({self.population})")


PRESETS: dict[str, dict] = {
    # The quick check's: every code path at a small fraction of the arithmetic.
    "quick": {"critic_hidden": 64, "batch_size": 128, "population": 16, "elites": 2, "ascent_steps": 3},
}

# hypertune.py's search when no --param is given, in --param's syntax: the critics' learning rate, the discount,
# and the exploration noise, which alone decides how far acting strays from the search's answer.
SEARCH_SPACE = {"q_lr": "1e-4:3e-3:log", "gamma": "0.9:0.999", "exploration_noise": "0.05:0.5"}


ASCENT_MAX_STEP = 0.5  # Rprop's largest step, a quarter of the box: the ascent refines, CEM searches


def cem_maximise(score: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor, h: Hyperparameters,
                 generator: torch.Generator) -> torch.Tensor:
    """argmax over a in [-1, 1]^A of score, for a batch of problems at once: CEM, then Rprop ascent.

    score: [B, P, A] candidates -> [B, P] values, differentiable in the candidates; mean: [B, A] starting
    means. Returns [B, A].
    """
    std = torch.full_like(mean, h.init_std)
    batch, action_dim = mean.shape
    for _ in range(h.iterations):
        noise = torch.randn((batch, h.population, action_dim), device=mean.device, generator=generator)
        candidates = torch.addcmul(mean.unsqueeze(1), std.unsqueeze(1), noise).clamp(-1, 1)  # [B, P, A]
        best = score(candidates).topk(h.elites, dim=1).indices  # [B, E]
        elites = candidates.gather(1, best.unsqueeze(-1).expand(-1, -1, action_dim))  # [B, E, A]
        std, mean = torch.std_mean(elites, dim=1, correction=0)
        std = std.clamp(min=h.min_std)
    if h.ascent_steps == 0:
        return mean
    # Acting runs in inference mode, whose tensors autograd cannot use: the ascent works on copies outside it.
    with torch.inference_mode(False), torch.enable_grad():
        found = mean.clone().requires_grad_(True)
        # capturable on CUDA: its sign updates then use torch.where, not boolean-mask indexing (a host sync)
        rprop = torch.optim.Rprop([found], lr=h.ascent_lr, step_sizes=(1e-4, ASCENT_MAX_STEP), maximize=True,
                                  capturable=found.device.type == "cuda")
        for _ in range(h.ascent_steps):
            (found.grad,) = torch.autograd.grad(score(found.unsqueeze(1)).sum(), found)
            rprop.step()
            with torch.no_grad():
                found.clamp_(-1, 1)
    with torch.no_grad():
        improved = score(found.detach().unsqueeze(1)) > score(mean.unsqueeze(1))  # [B, 1]
        return torch.where(improved, found.detach(), mean)


class Agent(crossq.Agent):
    name = "crossq_cem"
    hyperparameters = Hyperparameters
    SAVED_ATTRIBUTES = crossq.Agent.SAVED_ATTRIBUTES + ("cem_start",)

    def build_learner(self) -> None:
        """The critics and their optimiser: crossq's, without the actor and the temperature."""
        h = self.h
        self.critic = crossq.Critics(self.obs_dim, self.action_dim, h).to(self.device).eval()
        fused = self.device.type in ("cpu", "cuda")
        self.q_optimizer = torch.optim.Adam(self.critic.parameters(), lr=h.q_lr, betas=(h.adam_beta1, 0.999),
                                            fused=fused)
        # Not learned, but kept with the learner: the warm start of each environment's search.
        self.cem_start = torch.zeros((self.num_envs, self.action_dim), device=self.device)
        self.checkpointed = {"critic": self.critic, "q_optimizer": self.q_optimizer}

    def greedy(self, obs: torch.Tensor, start: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The search's answer for each state, in the scaled action range [-1, 1]; the critics in evaluation mode."""
        def min_q(candidates):  # [B, P, A] -> [B, P]
            population = candidates.shape[1]
            states = obs.unsqueeze(1).expand(-1, population, -1).flatten(0, 1)
            actions = candidates.flatten(0, 1) * self.action_scale + self.action_bias
            return self.critic(states, actions).min(dim=0).values.view(-1, population)

        return cem_maximise(min_q, start, self.h, generator)

    def policy(self, obs: torch.Tensor, explore: bool) -> torch.Tensor:
        if not explore:  # a fixed stream of its own: the same batch of states always gets the same actions,
            # and evaluating draws nothing from training's stream
            fixed = make_generator(self.seed, self.device)
            scaled = self.greedy(obs, torch.zeros((obs.shape[0], self.action_dim), device=self.device), fixed)
        else:
            start = self.cem_start if self.h.warm_start else torch.zeros_like(self.cem_start)
            scaled = self.greedy(obs, start, self.generator)
            self.cem_start = scaled
            noise = torch.randn(scaled.shape, device=self.device, generator=self.generator)
            scaled = (scaled + self.h.exploration_noise * noise).clamp(-1, 1)
        return scaled * self.action_scale + self.action_bias

    def observe(self, next_obs, reward, terminated, truncated) -> None:
        super().observe(next_obs, reward, terminated, truncated)
        ended = (terminated | truncated).unsqueeze(-1)
        self.cem_start = torch.where(ended, 0.0, self.cem_start)  # a new episode's search starts afresh

    def gradient_step(self) -> dict[str, torch.Tensor]:
        """y = r + gamma * (1 - terminated) * min_i Q_i(s', a'),  a' = the search's argmax(s'); L_Q as crossq's."""
        obs, actions, rewards, next_obs, terminated = self.buffer.sample(self.h.batch_size, self.generator)
        with torch.no_grad():
            start = torch.zeros((next_obs.shape[0], self.action_dim), device=self.device)
            next_scaled = self.greedy(next_obs, start, self.generator)
            if self.h.target_noise > 0:  # TD3's target smoothing: a' is not the critics' sharpest peak
                noise = torch.randn(next_scaled.shape, device=self.device, generator=self.generator)
                clip = self.h.target_noise_clip
                next_scaled = (next_scaled + (self.h.target_noise * noise).clamp(-clip, clip)).clamp(-1, 1)
            next_actions = next_scaled * self.action_scale + self.action_bias
        return self.critic_step(obs, actions, rewards, next_obs, terminated, next_actions, 0.0)
