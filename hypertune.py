"""Bayesian optimisation of an agent's hyperparameters: trials in parallel, a median pruner, resume.

    python hypertune.py --agent sac_baseline --envs Pendulum-v1 --steps 8000 --trials 16 --workers 2 \\
        --param q_lr=1e-4:3e-3:log --param tau=0.002:0.05:log --param batch_size=64:512:int
    python hypertune.py --agent crossq --envs Pendulum-v1 --steps 8000   # the agent's default search space
    python hypertune.py                      # the quick sweep: QUICK_SWEEP, a few minutes on two cores
    python hypertune.py --resume NAME        # after Ctrl-C or a crash: what was registered is kept

Without --param, the agent's SEARCH_SPACE (declared in its file beside PRESETS, with its sources) is searched.

The optimiser is bayesian-optimization's (3.x): a Gaussian process over the search box, its upper
confidence bound maximised for each suggestion, wrapped in the constant liar so that trials running at once
are given distinct points. The first `--random-trials` points are drawn uniformly. Each trial trains the agent
with its point through the lab's rollout loop, on every environment and seed one after another, in a worker
process (or a Ray task, with --backend ray: lab/ray_backend.py); its target is `lab.tuning.trial_metric`
(the IQM over seeds of the final evaluation returns; over several environments, the mean of the normalised
IQMs). Each run evaluates `--reports` times; at each of those checkpoints the median pruner
(`lab.tuning.MedianPruner`) may stop the trial, which is then registered with the value it reached.

runs/NAME/ holds config.json (the options), trials.json (every trial: values, status, metric, reports,
error), optimizer.json (the optimiser's state), and trial_NNN/: its TensorBoard record (hyperparameters and
metric, for the HParams view), error.txt if it failed, and ENV/seed_S/ with each run's logs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from multiprocessing.connection import wait
from pathlib import Path

from agents import agent_module, resolve_hyperparameters, split_preset
from envs import resolve_envs
from lab import UsageError
from lab.cli import (RUNS, ArgumentParser, add_backend_arguments, canonical_agents, check_agents_drive,
                     check_backend, exit_on_usage_error, new_run_root, non_negative_float, non_negative_int, positive_int,
                     refuse_changed, resolve_device, resume_root)
from lab.rollout import train, write_json
from lab.progress import board
from lab.runner import INTERRUPTED, enter_worker, install_stop_handlers, stop_workers, worker_slots
from lab.tuning import (MedianPruner, Param, SearchSpace, check_metric_envs, parse_param, run_trial, trial_dir,
                        trial_metric)

CONFIG, TRIALS, OPTIMIZER = "config.json", "trials.json", "optimizer.json"
FINISHED = ("complete", "pruned")  # registered with the optimiser
RESUMABLE_OPTIONS = ("workers", "backend", "address", "cpus_per_run", "gpus_per_run")  # what --resume may change
# `python hypertune.py` with no options: a sweep that shows the machinery end to end in a few minutes on two
# cores (as learn_simple.py with none runs the quick check), on the agent's default search space.
QUICK_SWEEP = ["--agent", "sac_baseline", "--envs", "Pendulum-v1", "--steps", "5000", "--trials", "8"]


def trial_worker(conn, run_root: Path, config: dict, trial: dict, threads: int, cpus, train_fn) -> None:
    """A trial in its own process: its Ctrl-C handling, threads and cores, then the trial loop."""
    enter_worker(threads, cpus)
    run_trial(conn, run_root, config, trial, train_fn, send_progress=True)


class LocalTrials:
    """The sweep's trials in processes of this machine, each on its share of the cores, each talking to the
    sweep over a pipe. lab.ray_backend.RayTrials has the same interface: start, events, answer, release, stop,
    close."""

    def __init__(self, sweep, workers: int):
        self.sweep = sweep
        self.slots = worker_slots(workers, sweep.open_trials())
        self.capacity = len(self.slots)
        self.free = list(range(self.capacity))
        self.running = {}  # connection -> (process, slot)
        self.context = multiprocessing.get_context("spawn")

    def start(self, trial: dict):
        slot = self.free.pop(0)
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=trial_worker, name=f"trial {trial['trial']}", args=(
            theirs, self.sweep.run_root, self.sweep.config, trial, *self.slots[slot], self.sweep.train_fn))
        process.start()
        theirs.close()
        self.running[ours] = (process, slot)
        return ours

    def events(self) -> list[tuple]:
        """(connection, message) for each report or outcome ready, a failure for a worker that died mute."""
        events = []
        for conn in wait(list(self.running)):
            try:
                events.append((conn, conn.recv()))
            except EOFError:  # killed, or out of memory
                events.append((conn, ("failed", "worker died (killed by a signal or out of memory?)", 0)))
        return events

    def answer(self, conn, decision: bool) -> None:
        with contextlib.suppress(OSError):  # a worker that died after reporting: its EOF comes next
            conn.send(decision)

    def release(self, conn) -> None:
        process, slot = self.running.pop(conn)
        process.join()
        self.free.append(slot)

    def stop(self) -> None:
        stop_workers([process for process, _ in self.running.values()])

    def close(self) -> None:
        pass


class Sweep:
    """The optimiser, the pruner and the table of trials of one sweep, saved after every change of state."""

    def __init__(self, run_root: Path, config: dict, train_fn=train, random_state: int | None = None):
        from bayes_opt import BayesianOptimization
        from bayes_opt.acquisition import ConstantLiar, UpperConfidenceBound
        self.run_root, self.config, self.train_fn = run_root, config, train_fn
        self.space = SearchSpace([Param(**p) for p in config["params"]])
        # UCB with the package's default kappa: with a dozen trials whose early stops register poor values,
        # expected improvement kept re-suggesting the neighbourhood of the best point. The liar registers each
        # pending point at the worst target seen so far, so the next suggestion moves away from points being
        # evaluated, as parallel workers need.
        self.optimizer = BayesianOptimization(
            f=None, pbounds=self.space.pbounds(), verbose=0,
            random_state=config["seed"] if random_state is None else random_state,
            acquisition_function=ConstantLiar(UpperConfidenceBound(kappa=2.576), strategy="min"),
            allow_duplicate_points=True)
        self.pruner = MedianPruner(config["min_reports"], config["prune_margin"], config["prune_warmup"],
                                   config["prune"])
        self.trials: list[dict] = []

    @classmethod
    def resumed(cls, run_root: Path, train_fn=train, here: bool = True) -> Sweep:
        """The sweep as last saved; trials that were running are run again from the start.

        trials.json is the record resumed from: the optimiser is rebuilt by registering its finished trials
        in the order they were registered (a Gaussian process is its data), so it cannot disagree with the
        table, even if the sweep died between writing the two files. The random stream is reseeded past the
        trials made so far, so that new random points are not the old ones again."""
        try:
            config = json.loads((run_root / CONFIG).read_text())
            resolve_device(config["device"], here)
            trials = json.loads((run_root / TRIALS).read_text()) if (run_root / TRIALS).exists() else []
            sweep = cls(run_root, config, train_fn, random_state=config["seed"] + 1_000_003 * len(trials))
            sweep.trials = trials
            for trial in sorted((t for t in trials if t["status"] in FINISHED), key=lambda t: t["registered"]):
                sweep.optimizer.register(params=trial["point"], target=trial["metric"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            if isinstance(error, UsageError):
                raise UsageError(f"cannot resume '{run_root}': {error}") from None
            raise UsageError(f"cannot resume '{run_root}': its files are missing or damaged ({error!r})") from None
        for trial in sweep.trials:
            if trial["status"] in ("running", "interrupted"):
                trial.update(status="queued", reports=[], steps=0)
                shutil.rmtree(trial_dir(run_root, trial["trial"]), ignore_errors=True)
            for env, seed, step, value in trial["reports"]:
                sweep.pruner.history.setdefault((env, seed, step), {})[trial["trial"]] = value
        return sweep

    def save(self) -> None:
        write_json(self.run_root / TRIALS, self.trials)
        temporary = self.run_root / (OPTIMIZER + ".tmp")
        self.optimizer.save_state(temporary)
        os.replace(temporary, self.run_root / OPTIMIZER)

    def next_trial(self) -> dict:
        """A queued trial (from an interrupted sweep), else a new one at the optimiser's next point."""
        for trial in self.trials:
            if trial["status"] == "queued":
                return trial
        if len(self.trials) < self.config["random_trials"]:
            point = self.optimizer.random_sample(1)[0]
        else:
            point = self.optimizer.suggest()
        point = {name: float(value) for name, value in point.items()}
        trial = {"trial": len(self.trials), "settings": self.space.settings(point), "point": point,
                 "status": "queued", "metric": None, "reports": [], "steps": 0, "error": None, "wall_s": None}
        self.trials.append(trial)
        return trial

    def open_trials(self) -> int:
        """Trials still to start: queued ones, and those the budget has not created yet."""
        queued = sum(trial["status"] == "queued" for trial in self.trials)
        return queued + self.config["trials"] - len(self.trials)

    def finish(self, trial: dict, outcome: tuple) -> None:
        """Record a trial's outcome (a worker's last message) and register it with the optimiser."""
        status, *result = outcome
        if status == "failed":
            error, steps = result
            trial.update(status="failed", error=error)
        else:
            finals, steps = result
            metric = trial_metric(finals, list(self.config["steps"]))
            if math.isfinite(metric):
                trial.update(status=status, metric=metric)
            else:
                trial.update(status="failed", error=f"metric is {metric}")
        trial.update(steps=steps, wall_s=round(time.time() - trial.pop("started"), 1))
        if trial["status"] in FINISHED:
            trial["registered"] = sum(t["status"] in FINISHED for t in self.trials) - 1  # the order, for resume
            self.optimizer.register(params=trial["point"], target=trial["metric"])
        self.save()
        if trial["status"] in FINISHED:
            self.log_hparams(trial)
        value = f"{trial['metric']:.2f}" if trial["metric"] is not None else trial["error"]
        print(f"[trial {trial['trial']}] {trial['status']}: {value}  ({describe(trial['settings'])})", flush=True)

    def log_hparams(self, trial: dict) -> None:
        if not self.config["log"]:
            return
        from torch.utils.tensorboard import SummaryWriter
        with SummaryWriter(str(trial_dir(self.run_root, trial["trial"]))) as writer:
            writer.add_hparams({**trial["settings"], "status": trial["status"]},
                               {"tune/metric": trial["metric"], "tune/steps": trial["steps"]}, run_name=".")

    def run(self, workers: int | None, ray_options=None) -> int:
        """Run every open trial, at most `workers` at once, in local processes or, given `ray_options`
        (address, cpus_per_run, gpus_per_run), as Ray tasks; returns the exit code (0, 1 if a trial failed,
        130 when interrupted)."""
        if ray_options is None:
            pool = LocalTrials(self, workers)
        else:
            from lab.ray_backend import RayTrials
            pool = RayTrials(self, workers, ray_options)
        running = {}  # the pool's key -> trial
        showing = {}  # trial number -> the label of its run on the progress board
        interrupted = False
        progress = board()
        try:
            with progress:
                while True:
                    while len(running) < pool.capacity and self.open_trials() > 0:
                        trial = self.next_trial()
                        trial.update(status="running", started=time.time())
                        running[pool.start(trial)] = trial
                        self.save()
                    if not running:
                        break
                    for key, message in pool.events():
                        trial = running[key]
                        if message[0] == "progress":  # a live report: shown, nothing to answer
                            show(progress, showing, trial["trial"], message[1])
                            continue
                        if message[0] == "report":
                            pool.answer(key, not self.should_prune(trial, *message[1:]))
                            continue
                        del running[key]  # before finishing it: an interruption now must not mark it interrupted
                        pool.release(key)
                        if trial["trial"] in showing:
                            progress.finish(showing.pop(trial["trial"]))
                        self.finish(trial, message)
        except KeyboardInterrupt:
            interrupted = True
            pool.stop()
            for trial in running.values():
                trial["status"] = "interrupted"
                trial.pop("started", None)
            self.save()
        except BaseException:
            # Any other failure of the sweep itself: its workers, left waiting for decisions, must not outlive it.
            pool.stop()
            raise
        finally:
            pool.close()
        print()
        print(self.table())
        if interrupted:
            print(f"interrupted: continue with  python hypertune.py --resume {self.run_root}", file=sys.stderr)
            return INTERRUPTED
        return 1 if any(trial["status"] == "failed" for trial in self.trials) else 0

    def should_prune(self, trial: dict, env: str, seed: int, step: int, value: float) -> bool:
        """A trial's report at an evaluation, recorded, and the pruner's decision on it."""
        trial["reports"].append([env, seed, step, value])
        progress = step / self.config["steps"][env]
        return self.pruner.should_prune(trial["trial"], (env, seed, step), value, progress)

    def table(self) -> str:
        """The trials ranked by metric (failed and unfinished ones last), then the best as a ready command."""
        ranked = sorted(self.trials, key=lambda t: -t["metric"] if t["metric"] is not None else math.inf)
        names = list(self.space.params)
        lines = [f"{'rank':>4} {'trial':>5} {'status':<11} {'metric':>10} {'steps':>8}  " + "  ".join(names)]
        for rank, trial in enumerate(ranked, 1):
            metric = f"{trial['metric']:10.2f}" if trial["metric"] is not None else f"{'-':>10}"
            values = "  ".join(f"{trial['settings'][name]:.4g}" for name in names)
            lines.append(f"{rank:>4} {trial['trial']:>5} {trial['status']:<11} {metric} {trial['steps']:>8}  {values}")
        best = next((t for t in ranked if t["status"] == "complete"), None)
        if best is not None:
            settings = {**self.config["settings"], **best["settings"]}
            budgets = set(self.config["steps"].values())
            steps = f" --steps {budgets.pop()}" if len(budgets) == 1 else ""
            command = (f"python learn_simple.py --agent {self.config['agent']} --envs {' '.join(self.config['steps'])}"
                       f"{steps} " + " ".join(f"--set {key}={value}" for key, value in settings.items()))
            lines += ["", f"best: trial {best['trial']}, metric {best['metric']:.2f}", f"  {command}"]
        return "\n".join(lines)


def show(board, showing: dict, trial: int, report) -> None:
    """A trial's progress report onto the board; `showing` holds each trial's line, replaced when it moves on to
    its next run."""
    if showing.get(trial, report.label) != report.label:
        board.finish(showing[trial])
    showing[trial] = report.label
    board.update(report)


def fraction(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text}")
    return value


def describe(settings: dict) -> str:
    return ", ".join(f"{key}={value:.4g}" for key, value in settings.items())


def default_space(agent: str, fixed: set[str]) -> list[str]:
    """The agent's SEARCH_SPACE as --param texts, without the names --set fixes; printed, so that the sweep says
    what it searches."""
    space = agent_module(split_preset(agent)[0]).SEARCH_SPACE
    texts = [f"{name}={bounds}" for name, bounds in space.items() if name not in fixed]
    print(f"no --param: searching {agent}'s default space: " + "  ".join(texts), flush=True)
    return texts


def plan(args) -> tuple[Path, dict]:
    """Check every option before anything runs; returns the sweep's directory and its config."""
    device = resolve_device(args.device, here=args.backend == "local")
    (args.agent,) = canonical_agents([args.agent])
    fixed = resolve_hyperparameters(args.agent, args.set)  # the preset's values, then --set's
    param_texts = args.param or default_space(args.agent, {text.partition("=")[0].strip() for text in args.set})
    params = [parse_param(text, args.agent, fixed) for text in param_texts]
    space = SearchSpace(params)
    clash = sorted({text.partition("=")[0].strip() for text in args.set} & set(space.params))
    if clash:
        raise UsageError(f"{', '.join(clash)} both searched (--param) and fixed (--set); choose one")
    budgets = resolve_envs(args.envs)
    check_metric_envs(list(budgets))
    steps = {env: args.steps or budget for env, budget in budgets.items()}
    for env_id, budget in steps.items():
        if budget < args.reports:
            raise UsageError(f"--reports {args.reports} evaluations need at least as many steps; {env_id} has {budget}")
    check_agents_drive(steps, {args.agent: fixed})
    run_root = new_run_root(args.name)
    config = {"agent": args.agent, "steps": steps, "seeds": args.seeds, "trials": args.trials,
              "random_trials": (args.random_trials if args.random_trials is not None
                                else max(args.workers or 1, args.trials // 3)),
              "params": [vars(p) for p in params], "settings": fixed, "device": device,
              "reports": args.reports, "prune": args.prune, "min_reports": args.min_reports,
              "prune_margin": args.prune_margin, "prune_warmup": args.prune_warmup,
              "eval_episodes": args.eval_episodes, "log": args.log,
              "seed": args.seed, "command": sys.argv}
    return run_root, config


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agent", default="sac_baseline", help="the agent to tune, optionally name:preset")
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1"], metavar="ENV",
                        help="Gymnasium ids and/or suites (default Pendulum-v1)")
    parser.add_argument("--steps", type=positive_int, default=None, help="steps per run (default: the budget)")
    parser.add_argument("--seeds", type=positive_int, default=1, help="seeds per trial and environment (default 1)")
    parser.add_argument("--trials", type=positive_int, default=20, help="trials in the sweep (default 20)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="trials at once (default: the number of cores; with Ray, as many as the cluster's "
                             "CPUs hold)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=LOW:HIGH[:log|:int]",
                        help="a hyperparameter to search and its range (repeatable); default: the agent's "
                             "SEARCH_SPACE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a hyperparameter fixed for every trial (repeatable)")
    parser.add_argument("--random-trials", type=non_negative_int, default=None,
                        help="trials drawn uniformly before the optimiser's suggestions "
                             "(default: max(workers, trials // 3); with Ray and no --workers, trials // 3)")
    parser.add_argument("--reports", type=positive_int, default=4,
                        help="evaluations per run, each a checkpoint where the pruner may stop the trial (default 4)")
    parser.add_argument("--prune", action=argparse.BooleanOptionalAction, default=True,
                        help="median pruning (default on)")
    parser.add_argument("--min-reports", type=positive_int, default=4,
                        help="a checkpoint prunes from its N-th report on, the first N-1 trials there run on "
                             "(default 4)")
    parser.add_argument("--prune-margin", type=non_negative_float, default=0.0,
                        help="stop a trial only below median - margin * |median| (default 0)")
    parser.add_argument("--prune-warmup", type=fraction, default=0.5,
                        help="no pruning at evaluations before this fraction of a run's steps (default 0.5)")
    parser.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation (default 10)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="the optimiser's random seed (default 0)")
    parser.add_argument("--log", action=argparse.BooleanOptionalAction, default=True,
                        help="TensorBoard events (default on)")
    parser.add_argument("--name", default=None, help="the sweep's directory runs/NAME (default: a timestamp)")
    parser.add_argument("--resume", default=None, metavar="NAME", help="continue runs/NAME (or a directory)")
    add_backend_arguments(parser, "trial", retries=False)
    if len(sys.argv) == 1:
        print(f"no options: the quick sweep, as  python hypertune.py {' '.join(QUICK_SWEEP)}", flush=True)
    args = parser.parse_args(sys.argv[1:] or QUICK_SWEEP)
    check_backend(args)
    if args.backend == "ray":
        from lab.ray_backend import connect
        connect(args)  # before anything is written: a cluster that cannot be joined leaves no sweep behind
    else:
        args.workers = args.workers or len(os.sched_getaffinity(0))
    install_stop_handlers()

    if args.resume:
        refuse_changed(args, parser, [key for key in vars(args) if key not in ("resume", *RESUMABLE_OPTIONS)],
                       "sweep")
        run_root = resume_root(args.resume, RUNS, "sweep")
        sweep = Sweep.resumed(run_root, here=args.backend == "local")
    else:
        run_root, config = plan(args)
        run_root.mkdir(parents=True)
        write_json(run_root / CONFIG, config)
        sweep = Sweep(run_root, config)
    at_once = f"up to {args.workers} at once" if args.workers else "as many at once as the Ray cluster holds"
    print(f"{sweep.open_trials()} trials to run ({len(sweep.trials)} in the record), {at_once}; logs in {run_root}",
          flush=True)
    return sweep.run(args.workers, ray_options=args if args.backend == "ray" else None)


if __name__ == "__main__":
    sys.exit(exit_on_usage_error(main))
