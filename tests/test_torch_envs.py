"""The batched torch environments against their Gymnasium counterparts, step for step on the same actions."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.torch_envs import TorchCartPole, TorchCartPoleContinuous, TorchPendulum


def gym_state(env):
    return np.asarray(env.unwrapped.state, dtype=np.float64)


def test_pendulum_matches_gymnasium_from_every_state_it_visits():
    reference, ours = gym.make("Pendulum-v1"), TorchPendulum(num_envs=1)
    rng = np.random.default_rng(0)
    for episode in range(3):
        obs, _ = reference.reset(seed=episode)
        ours.reset()
        ours.state = torch.as_tensor(gym_state(reference)).unsqueeze(0)  # the same start (the RNGs differ)
        assert np.allclose(ours.observe().numpy()[0], obs, atol=1e-6)
        for t in range(200):
            action = rng.uniform(-2.5, 2.5, size=1).astype(np.float32)  # also beyond the bounds: both clip
            obs, reward, terminated, truncated, _ = reference.step(action)
            our_obs, our_reward, our_terminated, our_truncated, _ = ours.step(torch.as_tensor(action).unsqueeze(0))
            assert np.allclose(our_obs.numpy()[0], obs, atol=1e-5), (episode, t)
            assert float(our_reward[0]) == pytest.approx(reward, rel=1e-5, abs=1e-5)
            assert (bool(our_terminated[0]), bool(our_truncated[0])) == (terminated, truncated)
            ours.state = torch.as_tensor(gym_state(reference)).unsqueeze(0)  # no drift carried to the next step
        assert truncated  # the 200-step time limit


def test_pendulum_trajectories_agree_over_whole_episodes():
    reference, ours = gym.make("Pendulum-v1"), TorchPendulum(num_envs=1)
    reference.reset(seed=3)
    ours.state = torch.as_tensor(gym_state(reference)).unsqueeze(0)
    for t in range(200):
        action = np.array([2.0 * np.sin(0.1 * t)], dtype=np.float32)  # a swing-up-like torque profile
        obs, reward, *_ = reference.step(action)
        our_obs, our_reward, *_ = ours.step(torch.as_tensor(action).unsqueeze(0))
        assert np.allclose(our_obs.numpy()[0], obs, atol=1e-3), t


@pytest.mark.parametrize("env_class", [TorchCartPoleContinuous, TorchCartPole])
def test_cart_pole_at_full_force_is_cart_pole(env_class):
    reference, ours = gym.make("CartPole-v1"), env_class(num_envs=1)
    rng = np.random.default_rng(1)
    for episode in range(5):
        obs, _ = reference.reset(seed=episode)
        ours.reset()
        ours.state = torch.as_tensor(gym_state(reference)).unsqueeze(0)
        done, steps = False, 0
        while not done:
            discrete = int(rng.integers(2))
            obs, reward, terminated, truncated, _ = reference.step(discrete)
            action = torch.tensor([[float(discrete)]] if env_class is TorchCartPole else [[2.0 * discrete - 1]])
            our_obs, our_reward, our_terminated, our_truncated, _ = ours.step(action)
            assert np.allclose(our_obs.numpy()[0], obs, atol=1e-6), (episode, steps)
            assert float(our_reward[0]) == reward == 1.0
            assert (bool(our_terminated[0]), bool(our_truncated[0])) == (terminated, truncated)
            done, steps = terminated or truncated, steps + 1
        assert terminated  # random pushes drop the pole long before the time limit


def test_cart_pole_force_is_continuous_and_clipped():
    env = TorchCartPoleContinuous(num_envs=4)
    env.reset(seed=0)
    env.state = torch.zeros(4, 4, dtype=torch.float64)
    env.step(torch.tensor([[-3.0], [-0.5], [0.5], [3.0]]))
    x_dot = env.state[:, 1]
    assert torch.allclose(x_dot[1], -x_dot[2]) and torch.allclose(x_dot[0], 2 * x_dot[1])  # -1 (clipped), -0.5
    assert torch.equal(x_dot[0], -x_dot[3])


@pytest.mark.parametrize("make", [TorchPendulum, TorchCartPoleContinuous])
def test_vector_interface_resets_only_masked_envs_and_limits_time(make):
    env = make(num_envs=3)
    obs, _ = env.reset(seed=7)
    again, _ = make(num_envs=3).reset(seed=7)
    assert obs.shape == (3, env.single_observation_space.shape[0]) and obs.dtype == torch.float32
    assert torch.equal(obs, again)  # seeded
    zero = torch.zeros(3, 1)
    for _ in range(3):
        env.step(zero)
    kept = env.state[[0, 2]].clone()
    obs, _ = env.reset(options={"reset_mask": torch.tensor([False, True, False])})
    assert torch.equal(env.state[[0, 2]], kept) and env.elapsed.tolist() == [3, 0, 3]
    truncations = []
    for _ in range(env.max_episode_steps - 3):
        *_, truncated, _ = env.step(zero)
        truncations.append(truncated)
    assert bool(truncations[-1][0]) and not bool(truncations[-1][1])  # env 1 restarted 3 steps later


def test_torch_envs_are_selectable_by_name_single_and_batched():
    from envs import make_env, resolve_envs
    assert resolve_envs(["TorchPendulum-v0"]) == {"TorchPendulum-v0": 20_000}
    single = make_env("TorchPendulum-v0")
    obs, _ = single.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.shape == (3,)
    steps, truncated = 0, False
    while not truncated:
        obs, reward, terminated, truncated, _ = single.step(np.zeros(1, np.float32))
        steps += 1
    assert steps == 200 and isinstance(reward, float) and not terminated
    batched = gym.make_vec("TorchCartPoleContinuous-v0", num_envs=5, vectorization_mode="vector_entry_point")
    obs, _ = batched.reset(seed=0)
    assert isinstance(batched, TorchCartPoleContinuous) and obs.shape == (5, 4) and batched.max_episode_steps == 500


def test_the_loop_steps_torch_envs_on_the_device_and_gymnasium_ids_as_copies():
    """Only TorchVectorEnv subclasses step on the device: CartPole-v1 has a numpy vector entry point of its own,
    which autoresets and knows no device, so the loop runs Gymnasium copies of it instead."""
    from lab.rollout import make_vector_env
    torch_envs = make_vector_env("TorchPendulum-v0", 3, torch.device("cpu"))
    assert isinstance(torch_envs, TorchPendulum) and torch_envs.num_envs == 3
    for vectorisation, kind in (("sync", gym.vector.SyncVectorEnv), ("async", gym.vector.AsyncVectorEnv)):
        copies = make_vector_env("CartPole-v1", 2, torch.device("cpu"), vectorisation)
        assert isinstance(copies, kind) and copies.metadata["autoreset_mode"] == gym.vector.AutoresetMode.DISABLED
        copies.close()
