"""Whether an agent's hot path waits for its GPU: act, observe and update on a batched torch environment, between
two logging steps, under torch.cuda.set_sync_debug_mode("error"), which raises at every call that makes the host
wait for the device (a host read such as `.item()` or a condition on a tensor, a copy from pageable host
memory). Logging steps read metrics on purpose and are left out, as are the first steps (learning starts, lazy
optimiser state). Used by tests/test_cuda.py and benchmarks/gpu.py."""

from __future__ import annotations

import torch

from agents import AGENTS, make_agent
from lab.rollout import make_vector_env

# Per agent, settings that make the check short: updates from the first steps, small networks and batches.
SHORT = {
    "sac_baseline": {"learning_starts": 64, "batch_size": 32, "hidden_size": 32},
    "crossq": {"learning_starts": 64, "batch_size": 32, "critic_hidden": 32, "actor_hidden": 32},
    "sac_crossq_bro": {"learning_starts": 64, "batch_size": 32, "critic_hidden": 32, "critic_blocks": 1,
                       "actor_hidden": 32},
    "crossq_cem": {"learning_starts": 64, "batch_size": 32, "critic_hidden": 32},
    "ppo_baseline": {"num_steps": 16, "num_minibatches": 2},
    "ppo_recurrent": {"num_steps": 16, "num_minibatches": 2, "sequence_length": 8},
}
NUM_ENVS = 8
# Every agent on a batched torch environment with continuous actions, and the PPOs on one with discrete actions
# (the categorical draw).
CASES = [(agent, "TorchPendulum-v0") for agent in AGENTS] + [(agent, "TorchCartPole-v0")
                                                             for agent in ("ppo_baseline", "ppo_recurrent")]


def run_without_syncs(agent_name: str, env_id: str, device: str = "cuda", warmup_steps: int = 40,
                      checked_steps: int = 40) -> bool:
    """Raise RuntimeError (naming the synchronising call, as CUDA's debug mode does) if one of `checked_steps`
    vector steps of the loop synchronises; `warmup_steps` first, unchecked. On another device the same steps
    run unchecked (a smoke test of this check): the result says whether they were checked."""
    envs = make_vector_env(env_id, NUM_ENVS, torch.device(device))
    agent = make_agent(agent_name, envs.single_observation_space, envs.single_action_space, num_envs=NUM_ENVS,
                       device=torch.device(device), seed=0, total_steps=10_000, settings=SHORT.get(agent_name))
    obs, _ = envs.reset(seed=0)

    def steps(count: int) -> None:
        nonlocal obs
        for _ in range(count):
            action = agent.act(obs)
            next_obs, reward, terminated, truncated, _ = envs.step(action)
            agent.observe(next_obs, reward, terminated, truncated)
            agent.update()
            obs, _ = envs.reset(options={"reset_mask": terminated | truncated})

    steps(warmup_steps)
    if agent.device.type != "cuda":
        steps(checked_steps)
        return False
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        steps(checked_steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return True
