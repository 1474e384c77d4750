"""Hybrid actions: ppo_baseline on HybridCartPole-v1's (engine, push) against its two continuous relaxations and
a random policy, as a markdown table.

    python benchmarks/hybrid_actions.py                          # 4 seeds, 100,000 steps, into runs/hybrid_actions
    python benchmarks/hybrid_actions.py --name hybrid_cartpole   # only the table, when that run has finished

It runs learn_simple.py (ppo_baseline on HybridCartPole-v1, and on HybridCartPoleSigned-v1 and
HybridCartPoleBox2-v1, the same task through Box actions only: see envs/hybrid.py) unless runs/NAME already
holds its results, plays RANDOM_EPISODES episodes of uniformly random hybrid actions, and prints each one's IQM
final return with its 95% stratified bootstrap interval (lab/stats.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import dated  # noqa: E402  (after the path is set)
from envs import make_env  # noqa: E402
from lab.cli import RUNS  # noqa: E402
from lab.stats import stratified_bootstrap_ci  # noqa: E402

HYBRID, SIGNED, BOX2 = "HybridCartPole-v1", "HybridCartPoleSigned-v1", "HybridCartPoleBox2-v1"
RANDOM_EPISODES = 100


def random_returns(episodes: int) -> list[float]:
    env = make_env(HYBRID)
    env.action_space.seed(0)
    returns = []
    for episode in range(episodes):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += reward
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def row(contender: str, space: str, values: list[float]) -> str:
    value, low, high = stratified_bootstrap_ci(values)
    return f"| {contender} | {space} | {value:.1f} | [{low:.1f}, {high:.1f}] | {len(values)} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="hybrid_actions", help="the run, in runs/NAME")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    results_path = RUNS / args.name / "results.json"
    if not results_path.exists():
        subprocess.run([sys.executable, str(ROOT / "learn_simple.py"), "--agent", "ppo_baseline", "--envs", HYBRID,
                        SIGNED, BOX2, "--seeds", str(args.seeds), "--steps", str(args.steps), "--name", args.name],
                       check=True)
    records = json.loads(results_path.read_text())["records"]
    finals = {env: [r["final_return"] for r in records if r["env"] == env] for env in (HYBRID, SIGNED, BOX2)}
    rows = ["| policy | action space | IQM final return | 95% CI | seeds or episodes |", "|---|---|---|---|---|",
            row("ppo_baseline", "Tuple(Discrete(2), Box([-1, 1])): engine off or fired, and the push", finals[HYBRID]),
            row("ppo_baseline, relaxed", "Box([-1, 1]): fired when \\|a\\| > 0.5, push a", finals[SIGNED]),
            row("ppo_baseline, relaxed", "Box([-1, 1])^2: fired when a > 0, push b", finals[BOX2]),
            row("uniformly random", "engine and push", random_returns(RANDOM_EPISODES))]
    report = dated(f"Hybrid actions, {args.steps:,} steps", "\n".join(rows))
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
