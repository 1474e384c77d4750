"""Evaluate saved policies, deterministically, on more episodes (rl-zoo's enjoy.py): a policy file, a run's seed
directory, or a whole run.

    python evaluate.py runs/keep --episodes 20                 # every seed's policy.pt and best.pt, IQM tables
    python evaluate.py runs/keep/sac_baseline/Pendulum-v1/seed_0 --video 1
    python evaluate.py runs/walker/crossq/BipedalWalker-v3/seed_0/best.pt --env BipedalWalkerHardcore-v3

Episodes are reset with seeds disjoint from training's and from the run's own evaluations, so the figures are
new draws of the same policies: a seed's policy.pt matches its final_return in distribution, not exactly.
`--video N` writes N episodes of each policy evaluated to a GIF beside its file (NAME.gif, or NAME_ENV.gif
with --env).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from envs import make_env
from lab import UsageError
from lab.cli import CONFIG, ArgumentParser, exit_on_usage_error, non_negative_int, positive_int, resolve_device
from lab.policy import BEST, POLICY, load_policy
from lab.results import aggregate, format_table
from lab.rollout import RESULT, episode_returns, record_video

EVALUATE_SEED_OFFSET = 2_000_003  # beyond training's resets and the run's evaluations (lab.rollout)
WHICH = {"both": (POLICY, BEST), "policy": (POLICY,), "best": (BEST,)}


def policy_files(path: Path, which: tuple[str, ...]) -> list[Path]:
    """The policy files `path` names: itself, a seed directory's, or every seed directory's in a run."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UsageError(f"{path} does not exist; give a policy file, a seed directory or a run directory")
    seed_dirs = [path] if (path / RESULT).exists() or any((path / name).exists() for name in WHICH["both"]) \
        else sorted(p.parent for p in path.glob(f"*/*/seed_*/{RESULT}"))
    files = [seed_dir / name for seed_dir in seed_dirs for name in which if (seed_dir / name).exists()]
    if not files:
        raise UsageError(f"no {' or '.join(which)} under {path}: is it a run (or seed) directory of a finished run? "
                         f"Runs keep their policies since this lab's policy files exist")
    return files


def evaluate_file(path: Path, args, device: str) -> dict:
    """Load one policy file, play `args.episodes` episodes, optionally record a video; returns a record."""
    agent, policy = load_policy(path, device=device, env=args.env)
    env_id = args.env or policy["env"]
    env = make_env(env_id)
    seed = EVALUATE_SEED_OFFSET + policy["seed"] * args.episodes
    try:
        returns = episode_returns(agent, env, args.episodes, seed, device)
    finally:
        env.close()
    if args.video:
        video = path.with_name(f"{path.stem}_{env_id}.gif" if args.env else f"{path.stem}.gif")
        record_video(agent, env_id, args.video, seed, device, video)
    return {"path": path, "agent": policy["agent"], "env": env_id, "seed": policy["seed"], "step": policy["step"],
            "trained_return": policy["eval_return"], "returns": returns}


def describe(record: dict) -> str:
    returns = record["returns"]
    trained = record["trained_return"]
    during = f"{trained:9.1f} at step {record['step']}" if trained is not None else "-"
    return (f"{str(record['path']):<60} {np.mean(returns):9.1f} ± {np.std(returns):7.1f}   "
            f"(training's evaluation: {during})")


def run_table(records: list[dict], name: str) -> str:
    """The IQM table of one kind of policy file (policy.pt or best.pt) over a run's seeds, as learn_simple
    prints it; steps/s and wall s are the training's."""
    rows, expected = [], {}
    for record in records:
        if record["path"].name != name:
            continue
        result_path = record["path"].parent / RESULT
        training = json.loads(result_path.read_text()) if result_path.exists() else {}
        rows.append({"agent": record["agent"], "env": record["env"], "final_return": float(np.mean(record["returns"])),
                     "sps": training.get("sps", float("nan")), "wall_s": training.get("wall_s", 0.0)})
        expected[record["agent"], record["env"]] = expected.get((record["agent"], record["env"]), 0) + 1
    return format_table(aggregate(rows, expected)) if rows else ""


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="policy files (policy.pt, best.pt), seed directories or run directories")
    parser.add_argument("--episodes", type=positive_int, default=10, help="episodes per policy (default 10)")
    parser.add_argument("--which", choices=list(WHICH), default="both",
                        help="in directories: the final policy (policy.pt), the best (best.pt) or both (default)")
    parser.add_argument("--env", default=None,
                        help="evaluate on this environment instead of the one trained on (same spaces), e.g. a "
                             "Hardcore variant")
    parser.add_argument("--video", type=non_negative_int, default=0, metavar="EPISODES",
                        help="record this many episodes of each policy to a GIF beside its file (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.env is not None:
        make_env(args.env).close()  # an unknown id is one line, before any policy is loaded
    files = [file for path in args.paths for file in policy_files(path, WHICH[args.which])]
    print(f"{len(files)} policies, {args.episodes} episodes each, deterministic; mean ± std of the return")
    records = []
    for file in files:
        record = evaluate_file(file, args, device)
        print(describe(record), flush=True)
        records.append(record)
    whole_runs = [path for path in args.paths if (path / CONFIG).exists()]
    if whole_runs:
        for name, caption in ((POLICY, "final policies"), (BEST, "best policies")):
            table = run_table(records, name)
            if table:
                print(f"\n{caption} ({name}), IQM over seeds of the mean over {args.episodes} episodes:")
                print(table)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_usage_error(main))
