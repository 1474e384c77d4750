"""PPO with memory: an LSTM (or GRU) between the observation and ppo_baseline's actor and critic heads, for
partially observable tasks (a sensor that reads positions and not velocities).

Papers: Hochreiter and Schmidhuber 1997 (the LSTM); Cho et al. 2014 (the GRU); Kapturowski et al. 2019,
"Recurrent Experience Replay in Distributed Reinforcement Learning" (R2D2: fixed-length sequences replayed from
the state stored at their start, https://openreview.net/forum?id=r1lyTjAqYX); PPO and GAE as in
agents/ppo_baseline.py, this agent's parent. Reference code: CleanRL's `ppo_atari_lstm.py` (one recurrent state per environment, reset
where an episode ends, the state at the rollout's start kept so the update replays the recurrence;
https://github.com/vwxyzjn/cleanrl/blob/master/cleanrl/ppo_atari_lstm.py) and sb3-contrib's RecurrentPPO (the
memory directly on the observation, MLP heads after it; https://github.com/Stable-Baselines-Team/stable-baselines3-contrib).

What changes from ppo_baseline:
- the network: (h_t, c_t) = LSTM(obs_t, (h_{t-1}, c_{t-1})) (or h_t = GRU(obs_t, h_{t-1})), then the baseline's
  policy and value MLPs on h_t. One memory serves actor and critic (CleanRL's; sb3-contrib's default gives the
  critic an LSTM of its own);
- the state: one per environment, carried from step to step, zeroed where `observe` reports an episode's end
  (terminated or truncated, which includes a checkpoint's cut). Evaluation keeps a state of its own, zeroed at
  each evaluation episode's start by `reset_evaluation()`, which the loop calls (agents without memory do not
  define it), so evaluating never disturbs the training episodes' memory;
- the rollout: besides what the baseline keeps, the state each step started from, the state it ended in, the
  episode starts, and log pi(a_t | s_t) and V(s_t) as computed while acting (a recurrent network cannot
  recompute them for one step alone);
- the update: minibatches are sequences of `sequence_length` consecutive steps of one environment (truncated
  backpropagation through time, as R2D2 cuts its sequences), each replayed from the state
  stored at its first step, with the state zeroed inside a sequence where an episode started. Before the first
  gradient step the replay gives back the log-probabilities stored while acting (tests/test_recurrent.py). The
  baseline replays sequences of one step; the rest of the update is its own;
- the value of a time limit's true last observation, V(s_{t+1}), is the critic after one more step of the
  memory from the state the step ended in: the bootstrap the episode would have had if it had gone on.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from agents import ppo_baseline
from agents.common import plasticity
from lab import UsageError


@dataclasses.dataclass
class Hyperparameters(ppo_baseline.Hyperparameters):
    cell: str = "lstm"  # the memory: 'lstm' or 'gru'
    memory_size: int = 64  # width of the memory's state (h; the LSTM also keeps a cell state c as wide)
    sequence_length: int = 16  # steps per replayed sequence (backpropagation through time); divides num_steps

    positive = ppo_baseline.Hyperparameters.positive + ("memory_size", "sequence_length")

    def check(self) -> None:
        super().check()
        if self.cell not in CELLS:
            raise UsageError(f"hyperparameter cell must be one of {', '.join(CELLS)}, got '{self.cell}'")
        if self.num_steps % self.sequence_length:
            raise UsageError(f"hyperparameter sequence_length ({self.sequence_length}) must divide num_steps "
                             f"({self.num_steps}): a rollout is cut into whole sequences")


CELLS = ("lstm", "gru")

PRESETS: dict[str, dict] = {
    # ppo_baseline's, for many environments at once: rollouts of 32 steps are two sequences per environment.
    "vectorised": ppo_baseline.PRESETS["vectorised"],
}

SEARCH_SPACE = ppo_baseline.SEARCH_SPACE  # the parent's; the memory's size is a choice of task, not of tuning


class RecurrentActorCritic(ppo_baseline.ActorCritic):
    """The memory on the observation, then ppo_baseline's actor and critic (and its distributions) on the
    memory's output. The state is one tensor [B, state_size]: (h, c) side by side for the LSTM, h for the GRU."""

    def __init__(self, obs_dim: int, layout: ppo_baseline.ActionLayout, h: Hyperparameters):
        super().__init__(h.memory_size, layout, h.hidden_size)  # the heads read the memory's output
        self.cell = (nn.LSTMCell if h.cell == "lstm" else nn.GRUCell)(obs_dim, h.memory_size)
        self.memory_size = h.memory_size
        self.state_size = h.memory_size * (2 if h.cell == "lstm" else 1)
        for name, parameter in self.cell.named_parameters():  # CleanRL's initialisation of its LSTM
            if "bias" in name:
                nn.init.constant_(parameter, 0.0)
            else:
                nn.init.orthogonal_(parameter, 1.0)

    def remember(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the memory: observation x [B, obs_dim], state [B, state_size] -> (output h [B,
        memory_size], next state)."""
        if isinstance(self.cell, nn.LSTMCell):
            h, c = self.cell(x, tuple(state.chunk(2, dim=-1)))
            return h, torch.cat([h, c], dim=-1)
        h = self.cell(x, state)
        return h, h

    def output(self, state: torch.Tensor) -> torch.Tensor:
        """The memory's output h within a state [..., state_size] (the LSTM's h comes first)."""
        return state[..., :self.memory_size]


class Agent(ppo_baseline.Agent):
    """ppo_baseline, acting and learning through a recurrent memory."""
    hyperparameters = Hyperparameters

    def __init__(self, observation_space, action_space, num_envs: int = 1, device="cpu", seed: int = 0,
                 total_steps: int = 100_000, **overrides):
        super().__init__(observation_space, action_space, num_envs=num_envs, device=device, seed=seed,
                         total_steps=total_steps, **overrides)
        state_size, shape = self.network.state_size, (self.h.num_steps, num_envs)
        self.state = torch.zeros(num_envs, state_size, device=self.device)  # each environment's memory
        self.episode_start = torch.ones(num_envs, dtype=torch.bool, device=self.device)  # the next act() starts one
        self.evaluation_state: torch.Tensor | None = None  # evaluation's memory; None: a fresh episode
        self.rollout.update({
            "state": torch.zeros(*shape, state_size, device=self.device),  # the state act() started from
            "next_state": torch.zeros(*shape, state_size, device=self.device),  # the state it ended in
            "episode_start": torch.zeros(shape, dtype=torch.bool, device=self.device),
            "logprobs": torch.zeros(shape, device=self.device),  # log pi(a_t | s_t) while acting
            "values": torch.zeros(shape, device=self.device),  # V(s_t) while acting
        })

    @property
    def sequence_length(self) -> int:
        return self.h.sequence_length

    def make_network(self, obs_dim: int) -> nn.Module:
        return RecurrentActorCritic(obs_dim, self.layout, self.h)

    @torch.inference_mode()
    def act(self, obs: torch.Tensor, explore: bool = True) -> torch.Tensor:
        x = self.normalized_obs(obs, explore)  # [B, obs_dim]
        if not explore:
            if self.evaluation_state is None or self.evaluation_state.shape[0] != x.shape[0]:
                self.evaluation_state = torch.zeros(x.shape[0], self.network.state_size, device=self.device)
            features, self.evaluation_state = self.network.remember(x, self.evaluation_state)
            return self.layout.to_env(self.network.mode(self.network.actor_mean(features)))
        r, t = self.rollout, self.step
        features, next_state = self.network.remember(x, self.state)
        out = self.network.actor_mean(features)
        action = self.network.sample(out, self.generator)
        r["obs"][t], r["actions"][t] = x, action  # the action unclipped: the log-prob is of the action as drawn
        r["state"][t], r["next_state"][t], r["episode_start"][t] = self.state, next_state, self.episode_start
        r["logprobs"][t] = self.network.log_prob(out, action)
        r["values"][t] = self.network.critic(features).squeeze(-1)
        self.state = next_state
        return self.layout.to_env(action)

    @torch.inference_mode()
    def observe(self, next_obs: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
                truncated: torch.Tensor) -> None:
        super().observe(next_obs, reward, terminated, truncated)
        # An ended episode's memory must not leak into the next one, which the next act() starts.
        self.episode_start = terminated | truncated
        self.state = self.state.masked_fill(self.episode_start[:, None], 0.0)

    def reset_evaluation(self) -> None:
        """The next act(explore=False) starts an evaluation episode, with an empty memory."""
        self.evaluation_state = None

    def rollout_estimates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs and values as stored while acting; V(true s_{t+1}) from one more step of the memory, from
        the state step t ended in (before any reset), all steps in one batch."""
        r = self.rollout
        features, _ = self.network.remember(r["next_obs"].flatten(0, 1), r["next_state"].flatten(0, 1))
        next_obs_values = self.network.critic(features).squeeze(-1).view(self.h.num_steps, self.num_envs)
        return r["logprobs"], r["values"], next_obs_values

    def replay_inputs(self) -> dict[str, torch.Tensor]:
        return {"obs": self.sequences(self.rollout["obs"]),  # [S, L, obs_dim]
                "episode_start": self.sequences(self.rollout["episode_start"]),  # [S, L]
                "state": self.sequences(self.rollout["state"])[:, 0]}  # each sequence's first state, [S, state_size]

    def replay(self, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrence as acting ran it: from each sequence's stored first state, zeroed where an episode
        starts (at the first step the stored state is zero already there), one step at a time."""
        state, features = mb["state"], []
        for t in range(self.sequence_length):
            state = state.masked_fill(mb["episode_start"][:, t, None], 0.0)
            h, state = self.network.remember(mb["obs"][:, t], state)
            features.append(h)
        features = torch.stack(features, dim=1)  # [n, L, memory_size]
        return self.network.actor_mean(features), self.network.critic(features).squeeze(-1)

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Plasticity of the value head, on the memory's outputs over the latest rollout."""
        return plasticity(self.network.critic, self.network.output(self.rollout["next_state"]).flatten(0, 1))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "memory": self.state.clone(), "episode_start": self.episode_start.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.state, self.episode_start = state["memory"].clone(), state["episode_start"].clone()
