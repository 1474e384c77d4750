"""The GPU path in one command: throughput of the vectorised PPO and of the off-policy agents with and without
torch.compile, and the check that no agent's hot path waits for the device.

    python benchmarks/gpu.py                       # on CUDA: the whole table, in under 8 minutes on one GPU
    python benchmarks/gpu.py --device cpu --smoke  # the same code at toy sizes (the tests run this)

Rows: `ppo_baseline:vectorised` on TorchPendulum-v0 at 1, 64, 1024 and 4096 environments (timed over rollouts
after the first, whose update compiles nothing but warms the allocator); sac_baseline and crossq with their
defaults on HalfCheetah-v5 and TorchPendulum-v0, one environment, with `--compile off|on|cudagraphs` (timed
from 500 steps after learning starts, so compilation is not counted); then lab/sync_check.py's check for every
agent (on CUDA only: on another device it reports that nothing was checked). Evaluation time is excluded from
every rate, as in benchmarks/throughput.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import write_markdown  # noqa: E402  (after the path is set)
from benchmarks.throughput import rate, timed_lab_run  # noqa: E402

PPO_ENVS = (1, 64, 1024, 4096)
PPO_NUM_STEPS = 32  # the vectorised preset's rollout length per environment
OFF_POLICY = ("sac_baseline", "crossq")
OFF_POLICY_ENVS = ("HalfCheetah-v5", "TorchPendulum-v0")
LEARNING_STARTS, WARMUP = 1000, 500  # timing starts LEARNING_STARTS + WARMUP steps in


def ppo_rate(num_envs: int, rollouts: int, device: str) -> float:
    steps_per_rollout = PPO_NUM_STEPS * num_envs
    return timed_lab_run({"agent": "ppo_baseline:vectorised", "env": "TorchPendulum-v0", "seed": 0,
                          "steps": rollouts * steps_per_rollout, "eval_every": steps_per_rollout,
                          "num_envs": num_envs, "device": device},
                         (steps_per_rollout, rollouts * steps_per_rollout))


def off_policy_rate(agent: str, env: str, compile_mode: str, warmup: int, timed_steps: int, device: str,
                    settings: dict) -> float:
    """Timed from `warmup` steps after learning starts; the three step counts are multiples of `warmup`."""
    start = settings["learning_starts"] + warmup
    return timed_lab_run({"agent": agent, "env": env, "seed": 0, "steps": start + timed_steps,
                          "eval_every": warmup, "device": device, "compile": compile_mode, "settings": settings},
                         (start, start + timed_steps))


def sync_results(device: str, steps: int) -> list[tuple[str, str, str]]:
    from lab.sync_check import CASES, run_without_syncs
    results = []
    for agent, env in CASES:
        try:
            checked = run_without_syncs(agent, env, device, warmup_steps=steps, checked_steps=steps)
            results.append((agent, env, "no sync" if checked else f"not checked ({device}: CUDA only)"))
        except RuntimeError as error:
            results.append((agent, env, "SYNC: " + str(error).splitlines()[0][:120]))
        print(f"  sync check {agent} on {env}: {results[-1][2]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--compile", nargs="+", choices=("off", "on", "cudagraphs"),
                        help="compile modes of the off-policy rows (default: all three on CUDA, off elsewhere)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks that every row runs")
    parser.add_argument("--markdown", type=Path, help="also write the table, dated, with machine and command")
    args = parser.parse_args()
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    compile_modes = args.compile or (["off", "on", "cudagraphs"] if args.device.startswith("cuda") else ["off"])
    if "cudagraphs" in compile_modes and not args.device.startswith("cuda"):
        parser.error(f"--compile cudagraphs needs --device cuda, not {args.device}")

    from lab.sync_check import SHORT
    envs_counts, rollouts, warmup, timed_steps = ((1, 4), 2, 50, 50) if args.smoke else (PPO_ENVS, 6, WARMUP, 2000)
    rows = ["| agent | environment | environments | compile | steps/s |", "|---|---|---|---|---|"]
    for num_envs in envs_counts:
        value = ppo_rate(num_envs, rollouts, args.device)
        rows.append(f"| ppo_baseline:vectorised | TorchPendulum-v0 | {num_envs} | off | {rate(value)} |")
        print(rows[-1], flush=True)
    for agent in OFF_POLICY:
        settings = ({**SHORT[agent], "learning_starts": 100} if args.smoke
                    else {"learning_starts": LEARNING_STARTS})
        for env in OFF_POLICY_ENVS:
            for compile_mode in compile_modes:
                value = off_policy_rate(agent, env, compile_mode, warmup, timed_steps, args.device, settings)
                rows.append(f"| {agent} | {env} | 1 | {compile_mode} | {rate(value)} |")
                print(rows[-1], flush=True)
    rows += ["", "| sync check | environment | result |", "|---|---|---|"]
    sync_steps = 10 if args.smoke else 40
    rows += [f"| {agent} | {env} | {result} |" for agent, env, result in sync_results(args.device, sync_steps)]
    title = f"The GPU path on {args.device}" + (" (smoke sizes)" if args.smoke else "")
    print(f"\n## {title}\n\n" + "\n".join(rows))
    if args.markdown:
        write_markdown(args.markdown, title, "\n".join(rows))


if __name__ == "__main__":
    main()
