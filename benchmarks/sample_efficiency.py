"""Sample efficiency: each agent's IQM over seeds at fixed budgets on the quick suite, as a markdown table.

    python benchmarks/sample_efficiency.py                           # every agent as the quick check runs it
    python benchmarks/sample_efficiency.py --agent sac_baseline crossq --seeds 8 --markdown table.md

It runs learn_simple.py on the quick suite with an evaluation at every budget, then reads from the run's
results.json, per agent, environment and budget, the IQM over seeds of the evaluation returns there and its
95% stratified bootstrap interval (lab/stats.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_markdown  # noqa: E402  (after the path is set)
from envs import SUITES  # noqa: E402
from lab.cli import quick_check_agents  # noqa: E402
from lab.stats import stratified_bootstrap_ci  # noqa: E402

BUDGET_FRACTIONS = (0.5, 1.0)  # of each quick-suite environment's steps


def table(results: dict) -> str:
    rows = ["| agent | environment | steps | IQM | 95% CI | seeds |", "|---|---|---|---|---|---|"]
    by_run: dict = {}
    for record in results["records"]:
        by_run.setdefault((record["agent"], record["env"]), []).append(dict(map(tuple, record["evaluations"])))
    for (agent, env), evaluations in by_run.items():
        steps = SUITES["quick"][env]
        for fraction in BUDGET_FRACTIONS:
            budget = int(steps * fraction)
            values = [seed[budget] for seed in evaluations if budget in seed]
            value, low, high = stratified_bootstrap_ci(values)
            rows.append(f"| {agent} | {env} | {budget} | {value:.1f} | [{low:.1f}, {high:.1f}] | {len(values)} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agent", nargs="+", default=quick_check_agents())
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    name = "sample_efficiency_" + datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    every = int(min(SUITES["quick"].values()) * min(BUDGET_FRACTIONS))
    command = [sys.executable, str(ROOT / "learn_simple.py"), "--agent", *args.agent, "--envs", "quick",
               "--seeds", str(args.seeds), "--eval-every", str(every), "--no-log", "--name", name]
    if args.workers:
        command += ["--workers", str(args.workers)]
    subprocess.run(command, check=True)
    result = table(json.loads((Path("runs") / name / "results.json").read_text()))
    print(result)
    if args.markdown:
        write_markdown(args.markdown, f"Sample efficiency on the quick suite, {args.seeds} seeds", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
