"""Partially observable versions of classic tasks: the velocity entries of the observation removed, so that a
policy must infer them from the observations it remembers (a sensor that reads positions, not velocities).

The rl-zoo's `*NoVel` tasks (sb3-contrib's MaskVelocityWrapper), with the velocities removed rather than set to
zero: the same information, without inputs that are constant. Each id is the lab's own, registered with
Gymnasium; `partial` in envs.SUITES runs them together.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

# id -> (the fully observed task, the indices of its observation that are velocities)
NO_VELOCITY = {
    "CartPoleNoVel-v1": ("CartPole-v1", (1, 3)),  # x, x_dot, theta, theta_dot
    "PendulumNoVel-v1": ("Pendulum-v1", (2,)),  # cos theta, sin theta, theta_dot
    "MountainCarContinuousNoVel-v0": ("MountainCarContinuous-v0", (1,)),  # position, velocity
    # x, y, vx, vy, angle, angular velocity, left leg touching, right leg touching
    "LunarLanderNoVel-v3": ("LunarLander-v3", (2, 3, 5)),
    "LunarLanderContinuousNoVel-v3": ("LunarLanderContinuous-v3", (2, 3, 5)),
}


def without_velocities(env_id: str, velocities: tuple[int, ...], **kwargs) -> gym.Env:
    """`env_id` (made with `kwargs`, e.g. render_mode) whose observations lack the entries `velocities`."""
    env = gym.make(env_id, **kwargs)
    space = env.observation_space
    kept = np.setdiff1d(np.arange(space.shape[0]), velocities)
    observed = gym.spaces.Box(space.low[kept], space.high[kept], dtype=space.dtype)
    return gym.wrappers.TransformObservation(env, lambda obs: obs[kept], observed)


def register() -> None:
    for name, (env_id, velocities) in NO_VELOCITY.items():
        if name not in gym.registry:
            # No time limit of its own: the fully observed task's applies inside.
            gym.register(name, entry_point=without_velocities, kwargs={"env_id": env_id, "velocities": velocities})
