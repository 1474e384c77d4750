"""Learning curves and final scores of runs: the IQM across seeds with 95% stratified bootstrap intervals.

    python plot.py runs/NAME                         # writes runs/NAME/plots/
    python plot.py runs/NAME runs/OTHER --out figures # several runs on the same axes
    python plot.py runs/NAME --no-baseline           # without the stored baselines

Per environment, ENV_curves.png (evaluation return against environment steps, one line per agent: the
IQM across seeds, with its 95% interval as a band) and ENV_final.png (each agent's final IQM with its
interval); summary.md tabulates the final figures and links the pictures. Runs stored as baselines
(`learn_simple.py --baseline`: under runs/baseline/) are overlaid where they share an environment. Statistics
as in rliable: lab/stats.py.

Which seeds count: a run's finished seeds come from its results.json; seeds that did not finish (interrupted,
failed) from their TensorBoard `eval/return`. Final scores are those of the finished seeds alone (a seed that
stopped early would score a shorter budget), and the table says per (agent, environment) how many of the
planned seeds (config.json) are missing from them. Curves use every seed that got to a step, drawn where at
least half did; a marker with "k/n" shows each step at which seeds drop out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from lab import UsageError
from lab.cli import BASELINES, ArgumentParser, exit_on_usage_error
from lab.rollout import run_dir_name
from lab.stats import stratified_bootstrap_ci

@dataclasses.dataclass
class Seeds:
    """One agent on one environment in a run: each seed's evaluations, which seeds reached the budget, and how
    many seeds were planned."""
    evaluations: dict = dataclasses.field(default_factory=dict)  # seed -> [(step, return), ...]
    finished: set = dataclasses.field(default_factory=set)
    planned: int = 0

    @property
    def missing(self) -> int:
        return max(self.planned, len(self.evaluations)) - len(self.finished)


Curves = dict  # (agent label, env) -> Seeds


def load_run(run_root: Path) -> Curves:
    """Every seed's evaluations in one run: results.json's records (the finished seeds), then the TensorBoard
    logs of the seed directories it does not have."""
    results, config_path = run_root / "results.json", run_root / "config.json"
    if not results.exists() and not config_path.exists():
        raise UsageError(f"{run_root} is not a run directory (no results.json or config.json); "
                         f"give runs/NAME as learn_simple.py or learn_vectorised.py wrote it")
    curves: Curves = defaultdict(Seeds)
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    records = json.loads(results.read_text())["records"] if results.exists() else []
    for record in records:
        seeds = curves[record["agent"], record["env"]]
        seeds.evaluations[record["seed"]] = [tuple(e) for e in record["evaluations"]]
        if "stopped_at" not in record:  # a trial the pruner stopped did not reach the budget
            seeds.finished.add(record["seed"])
    agent_of_directory = {run_dir_name(agent): agent for agent in config.get("agents", [])}
    for seed_dir in sorted({path.parent for path in run_root.glob("*/*/seed_*/events.out.tfevents.*")}):
        directory, env, seed = seed_dir.parent.parent.name, seed_dir.parent.name, int(seed_dir.name[5:])
        agent = agent_of_directory.get(directory, directory)
        if seed not in curves[agent, env].evaluations:
            evaluations = tensorboard_evaluations(seed_dir)
            if evaluations:
                curves[agent, env].evaluations[seed] = evaluations
    for seeds in curves.values():
        seeds.planned = config.get("seeds", 0)  # every (agent, environment) of a run has the same seeds
    return {key: seeds for key, seeds in curves.items() if seeds.evaluations}


def tensorboard_evaluations(seed_dir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(seed_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "eval/return" not in events.Tags()["scalars"]:
        return []
    return [(event.step, event.value) for event in events.Scalars("eval/return")]


def curve_statistics(seeds: dict[int, list]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps [n], (IQM, low, high) [n, 3] and the number of seeds [n] at every evaluation step that at least
    half the seeds reached."""
    by_step = defaultdict(list)
    for evaluations in seeds.values():
        for step, value in evaluations:
            by_step[step].append(value)
    steps = sorted(step for step, values in by_step.items() if 2 * len(values) >= len(seeds))
    return (np.array(steps), np.array([stratified_bootstrap_ci(np.array(by_step[step])) for step in steps]),
            np.array([len(by_step[step]) for step in steps]))


def final_returns(seeds: Seeds) -> np.ndarray:
    """The last evaluation of each seed that reached the budget."""
    return np.array([seeds.evaluations[seed][-1][1] for seed in sorted(seeds.finished)])


def plot(run_roots: list[Path], out: Path, baselines: list[Path] = ()) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    curves: Curves = {}
    for run_root in run_roots:
        for (agent, env), seeds in load_run(run_root).items():
            label = agent if len(run_roots) == 1 else f"{agent} ({run_root.name})"
            curves[label, env] = seeds
    environments = {env for _, env in curves}
    for baseline in baselines:
        for (agent, env), seeds in load_run(baseline).items():
            if env in environments:
                curves[f"{agent} (baseline {baseline.name})", env] = seeds
    if not curves:
        raise UsageError(f"no evaluations found in {', '.join(map(str, run_roots))}")
    out.mkdir(parents=True, exist_ok=True)
    rows = ["| environment | agent | seeds finished | missing | final IQM | 95% CI |", "|---|---|---|---|---|---|"]
    pictures = []
    for env in dict.fromkeys(env for _, env in curves):
        agents = [agent for agent, e in curves if e == env]
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for agent in agents:
            seeds = curves[agent, env]
            steps, stats, counts = curve_statistics(seeds.evaluations)
            total = max(seeds.planned, len(seeds.evaluations))
            line, = axes.plot(steps, stats[:, 0], label=f"{agent} ({len(seeds.finished)}/{total} seeds finished)")
            axes.fill_between(steps, stats[:, 1], stats[:, 2], color=line.get_color(), alpha=0.25, linewidth=0)
            for index in np.flatnonzero(counts < np.concatenate([[total], counts[:-1]])):  # where seeds drop out
                axes.plot(steps[index], stats[index, 0], marker="v", color=line.get_color())
                axes.annotate(f"{counts[index]}/{total}", (steps[index], stats[index, 0]), fontsize=7,
                              textcoords="offset points", xytext=(3, -10))
        axes.set(title=f"{env}: IQM over seeds, 95% bootstrap CI", xlabel="environment steps",
                 ylabel="evaluation return")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        name = env.replace(":", "_").replace("/", "_")
        figure.savefig(out / f"{name}_curves.png", dpi=120)
        plt.close(figure)

        finals = {agent: stratified_bootstrap_ci(final_returns(curves[agent, env])) for agent in agents
                  if curves[agent, env].finished}
        scored = [agent for agent in agents if agent in finals]
        figure, axes = plt.subplots(figsize=(7, 1.2 + 0.5 * max(1, len(scored))))
        positions = np.arange(len(scored))
        values = np.array([finals[agent] for agent in scored]).reshape(-1, 3)
        # As rliable draws interval estimates: a bar spanning the interval, the IQM marked across it (returns
        # may be negative, so a bar from 0 would mean nothing).
        axes.barh(positions, values[:, 2] - values[:, 1], left=values[:, 1], height=0.6, color="tab:blue", alpha=0.5)
        axes.scatter(values[:, 0], positions, marker="|", s=400, color="black", zorder=3, label="IQM")
        axes.set_yticks(positions, [f"{agent} ({len(curves[agent, env].finished)} seeds)" for agent in scored])
        axes.set(title=f"{env}: final IQM, 95% bootstrap CI", xlabel="final evaluation return")
        axes.grid(alpha=0.3, axis="x")
        figure.tight_layout()
        figure.savefig(out / f"{name}_final.png", dpi=120)
        plt.close(figure)
        pictures += [f"{name}_curves.png", f"{name}_final.png"]
        for agent in agents:
            seeds = curves[agent, env]
            figures = "{:.1f} | [{:.1f}, {:.1f}]".format(*finals[agent]) if agent in finals else "- | -"
            rows.append(f"| {env} | {agent} | {len(seeds.finished)} | {seeds.missing} | {figures} |")
    summary = out / "summary.md"
    summary.write_text(f"# {', '.join(run.name for run in run_roots)}\n\n" + "\n".join(rows) + "\n\n"
                       + "\n".join(f"![{picture}]({picture})" for picture in pictures) + "\n")
    return summary


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories (runs/NAME)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the first run's plots/)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help=f"overlay the runs stored in {BASELINES}/ (default on)")
    args = parser.parse_args()
    for run_root in args.runs:
        if not run_root.is_dir():
            raise UsageError(f"no run directory {run_root}")
    given = {run_root.resolve() for run_root in args.runs}
    baselines = [path for path in sorted(BASELINES.glob("*")) if path.is_dir() and path.resolve() not in given] \
        if args.baseline else []
    summary = plot(args.runs, args.out or args.runs[0] / "plots", baselines)
    print(f"wrote {summary.parent}: {', '.join(sorted(p.name for p in summary.parent.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_usage_error(main))
