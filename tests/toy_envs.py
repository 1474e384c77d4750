"""Tiny environments for tests, registered on import (use them as 'tests.toy_envs:Count-v0')."""

import os
import signal

import gymnasium as gym
import numpy as np


class Count(gym.Env):
    """The observation is the step count t (and a constant). Terminates when t reaches `terminate_at`, if set;
    the registered time limit truncates the rest. Reward 1 per step. `crash_at`: raise at that step."""

    def __init__(self, terminate_at: int | None = None, crash_at: int | None = None):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.terminate_at, self.crash_at, self.t = terminate_at, crash_at, 0

    def obs(self):
        return np.array([self.t, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.obs(), {}

    def step(self, action):
        self.t += 1
        if self.crash_at is not None and self.t >= self.crash_at:
            raise RuntimeError("the toy environment crashed on purpose")
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return self.obs(), 1.0, terminated, False, {}


class DieOnce(Count):
    """Count, whose process is killed (SIGKILL: no exception, no error file) at its `die_at`-th step, the first
    time only: a worker or node lost mid-run. The file named by $TOY_DIE_MARKER records that it died."""

    def __init__(self, die_at: int):
        super().__init__()
        self.die_at, self.steps_taken = die_at, 0

    def step(self, action):
        self.steps_taken += 1
        marker = os.environ["TOY_DIE_MARKER"]
        if self.steps_taken == self.die_at and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().step(action)


gym.register("Count-v0", entry_point=Count, max_episode_steps=5)
gym.register("Count200-v0", entry_point=Count, max_episode_steps=200)  # a toy: checkpoints cut its episodes
gym.register("CountTerminate-v0", entry_point=Count, max_episode_steps=5, kwargs={"terminate_at": 3})
gym.register("Crash-v0", entry_point=Count, max_episode_steps=50, kwargs={"crash_at": 40})
gym.register("DieOnce-v0", entry_point=DieOnce, max_episode_steps=50, kwargs={"die_at": 160})


class StructuredActions(Count):
    """Count's episodes, taking a Dict of a Box, a Discrete and a MultiDiscrete; every action received is kept
    (class-wide, as the runner builds its own instances) and must lie in the space."""
    received: list = []

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.action_space = gym.spaces.Dict({
            "push": gym.spaces.Box(-1.0, 1.0, (2,), np.float32), "gear": gym.spaces.Discrete(3, start=1),
            "valves": gym.spaces.MultiDiscrete([2, 2])})

    def step(self, action):
        assert self.action_space.contains(action), action
        StructuredActions.received.append(action)
        return super().step(0)


gym.register("StructuredActions-v0", entry_point=StructuredActions, max_episode_steps=5)


class Remember(gym.Env):
    """A memory task: the first observation shows a cue (-1 or +1, flagged by a second entry of 1), every later
    one is zero; each of the 4 steps after the first rewards the action that names the cue (Discrete: 1 for +1,
    0 for -1; Box: reward 1 - |action - cue|). Only an agent that remembers its episode's first observation
    earns the full 4 per episode; one without memory earns 2 on average."""

    def __init__(self, continuous: bool = False):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else gym.spaces.Discrete(2)
        self.continuous, self.cue, self.t = continuous, 1.0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue, self.t = float(self.np_random.choice([-1.0, 1.0])), 0
        return np.array([self.cue, 1.0], np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t == 1:  # the action taken while the cue is in sight earns nothing: only recall does
            reward = 0.0
        elif self.continuous:
            reward = 1.0 - abs(float(np.asarray(action).item()) - self.cue)
        else:
            reward = float(int(action) == (self.cue > 0))
        return np.zeros(2, np.float32), reward, False, False, {}


gym.register("Remember-v0", entry_point=Remember, max_episode_steps=5)
gym.register("RememberContinuous-v0", entry_point=Remember, max_episode_steps=5, kwargs={"continuous": True})
