"""What hypertune.py is made of, apart from processes: the search space, the target metric, the median pruner,
and the trial loop that runs wherever the backend puts it.

The optimiser (bayesian-optimization) maximises a function of points in a box; `SearchSpace` maps between
that box and an agent's hyperparameters: a `log` parameter is searched as its log10, an `int` one as a real
number rounded to the nearest integer. (The package's own integer parameters, experimental in 3.4, had its
suggestions return points already evaluated.) The target of a trial is `trial_metric`, the pruner's decisions are
`MedianPruner.should_prune`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import statistics
import traceback
from pathlib import Path

from agents import agent_module, closest, hyperparameter_types, resolve_hyperparameters, split_preset
from lab import UsageError
from lab.results import iqm
from lab.rollout import RunSpec
from lab.runner import ERROR

SCALES = ("linear", "log", "int")


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    low: float
    high: float
    scale: str  # one of SCALES

    def bounds(self) -> tuple:
        """The parameter's interval as the optimiser searches it."""
        if self.scale == "log":
            return (math.log10(self.low), math.log10(self.high))
        if self.scale == "int":  # each integer gets an interval of width 1, the ends included
            return (self.low - 0.5, self.high + 0.5)
        return (self.low, self.high)

    def value(self, x: float):
        """The hyperparameter's value at the optimiser's coordinate x."""
        if self.scale == "log":
            return float(10 ** x)
        if self.scale == "int":
            return int(min(max(round(x), self.low), self.high))
        return float(x)


def parse_param(text: str, agent: str, fixed: dict | None = None) -> Param:
    """'q_lr=1e-4:3e-3:log' -> Param, checked against the agent's hyperparameter dataclass and, at both
    bounds, against the agent's own checks with the `fixed` hyperparameters of every trial."""
    form = "expected NAME=LOW:HIGH[:log|:int], e.g. q_lr=1e-4:3e-3:log"
    name, sep, spec = text.partition("=")
    name = name.strip()
    parts = spec.split(":")
    if not sep or not name or len(parts) not in (2, 3):
        raise UsageError(f"--param '{text}': {form}")
    scale = parts[2].strip() if len(parts) == 3 else "linear"
    if len(parts) == 3 and scale not in SCALES[1:]:
        raise UsageError(f"--param '{text}': unknown scale '{scale}'; valid: log, int (or none: linear)")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"--param '{text}': bounds must be numbers; {form}") from None
    agent_name = split_preset(agent)[0]
    types = hyperparameter_types(agent_module(agent_name))
    if name not in types:
        raise UsageError(f"--param '{text}': unknown hyperparameter '{name}' for {agent_name}; {closest(name, types)}")
    kind = types[name]
    if kind not in (int, float):
        raise UsageError(f"--param '{text}': {name} is a {kind.__name__}; only int and float hyperparameters "
                         f"can be searched (fix it with --set {name}=VALUE)")
    if kind is int and scale != "int":
        raise UsageError(f"--param '{text}': {name} is an int; write {name}={parts[0]}:{parts[1]}:int")
    if scale == "int" and not (low.is_integer() and high.is_integer()):
        raise UsageError(f"--param '{text}': int bounds must be whole numbers, got {parts[0]} and {parts[1]}")
    if not low < high:
        raise UsageError(f"--param '{text}': the low bound must be below the high one, got {low:g} and {high:g}")
    if scale == "log" and low <= 0:
        raise UsageError(f"--param '{text}': a log scale needs a positive low bound, got {low:g}")
    param = Param(name, low, high, scale)
    for bound in (low, high):  # the agent's own checks: positive fields, [0, 1] fields, recipe rules
        try:
            resolve_hyperparameters(agent, {**(fixed or {}), name: kind(bound)})
        except UsageError as error:
            raise UsageError(f"--param '{text}': bound {bound:g} is invalid: {error}") from None
    return param


class SearchSpace:
    def __init__(self, params: list[Param]):
        names = [p.name for p in params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"--param given twice for {', '.join(duplicates)}")
        if not params:
            raise UsageError("nothing to search: give at least one --param NAME=LOW:HIGH[:log|:int]")
        self.params = {p.name: p for p in params}

    def pbounds(self) -> dict[str, tuple]:
        return {name: p.bounds() for name, p in self.params.items()}

    def settings(self, point: dict[str, float]) -> dict:
        """Optimiser point -> hyperparameter overrides."""
        return {name: p.value(point[name]) for name, p in self.params.items()}


# Returns of a uniformly random policy and of a good one (a well-tuned agent's at the lab's default budget),
# per environment: multi-environment sweeps average (IQM - random) / (good - random) over environments, so
# that each counts alike whatever its scale (as Atari's human-normalised score does).
REFERENCE_RETURNS = {
    "Pendulum-v1": (-1200.0, -150.0),
    "TorchPendulum-v0": (-1200.0, -150.0),
    "CartPole-v1": (22.0, 500.0),
    "TorchCartPoleContinuous-v0": (22.0, 500.0),
    "MountainCarContinuous-v0": (-33.0, 93.0),
    "LunarLanderContinuous-v3": (-200.0, 250.0),
    "BipedalWalker-v3": (-100.0, 300.0),
    "HalfCheetah-v5": (-280.0, 10_000.0),
    "Hopper-v5": (18.0, 3_500.0),
    "Walker2d-v5": (2.0, 4_500.0),
    "Ant-v5": (-60.0, 5_000.0),
    "Humanoid-v5": (120.0, 5_000.0),
}


def check_metric_envs(envs: list[str]) -> None:
    if len(envs) > 1:
        missing = [env for env in envs if env not in REFERENCE_RETURNS]
        if missing:
            raise UsageError(f"tuning on several environments normalises each one's return by reference scores, "
                             f"and {', '.join(missing)} has none; tune on it alone, or on environments from: "
                             f"{', '.join(REFERENCE_RETURNS)}")


def trial_metric(returns: dict[str, list[float]], envs: list[str]) -> float:
    """The target: per environment, the IQM across seeds of the final evaluation returns; with one environment
    that IQM itself, with several the mean over `envs` of their normalised IQMs (REFERENCE_RETURNS). An
    environment a pruned trial never reached counts as a random policy's (0): stopping early never helps."""
    if len(envs) == 1:
        return iqm(returns[envs[0]])
    scores = []
    for env in envs:
        random_return, good_return = REFERENCE_RETURNS[env]
        scores.append((iqm(returns[env]) - random_return) / (good_return - random_return) if env in returns else 0.0)
    return float(sum(scores) / len(scores))


@dataclasses.dataclass
class MedianPruner:
    """Stop a trial whose report at a checkpoint is below the median of the other trials' reports there.

    A checkpoint is (environment, seed, step): one evaluation of one run, so only like is compared with like.
    Decisions start at a checkpoint's `min_reports`-th report (the first min_reports - 1 trials to report
    there always go on), and only at checkpoints past `warmup` of their run's steps: early returns of an RL
    agent say little about its final ones (SAC on Pendulum at a quarter of 5000 steps has barely started to
    learn, whatever its hyperparameters). A trial is stopped when its value < median - margin * |median|, the
    median of the values the other trials reported there.
    """

    min_reports: int = 4
    margin: float = 0.0
    warmup: float = 0.5
    enabled: bool = True
    history: dict = dataclasses.field(default_factory=dict)  # checkpoint -> {trial: value}

    def should_prune(self, trial: int, checkpoint: tuple, value: float, progress: float) -> bool:
        """Record the report made at `progress` (step / steps) of its run; True when the trial should stop."""
        others = [v for t, v in self.history.get(checkpoint, {}).items() if t != trial]
        self.history.setdefault(checkpoint, {})[trial] = value
        if not self.enabled or progress < self.warmup or len(others) + 1 < self.min_reports:
            return False
        median = statistics.median(others)
        return value < median - self.margin * abs(median)


def trial_dir(run_root: Path, trial: int) -> Path:
    return run_root / f"trial_{trial:03d}"


def run_trial(conn, run_root: Path, config: dict, trial: dict, train_fn, send_progress: bool = False) -> None:
    """One trial: every (environment, seed) run in turn, wherever it runs (a local process, a Ray task).
    It sends each evaluation to the sweep over `conn` and waits for its decision (go on or stop), then its
    outcome: ('complete' | 'pruned', final returns per environment, steps trained), or ('failed', error,
    steps trained). With `send_progress`, also ('progress', lab.progress.Progress) reports, which need no
    answer; without, each run prints its own plain progress lines."""
    finals: dict[str, list[float]] = {}
    steps_trained, stop = 0, False
    directory = trial_dir(run_root, trial["trial"])
    runs = [(env, steps, seed) for env, steps in config["steps"].items() for seed in range(config["seeds"])]

    def on_eval(step, value, env, seed):
        nonlocal stop
        conn.send(("report", env, seed, step, value))
        stop = not conn.recv()
        return not stop

    def on_progress(progress):
        conn.send(("progress", dataclasses.replace(progress, label=f"trial {trial['trial']} {progress.label}")))

    try:
        for index, (env, steps, seed) in enumerate(runs):
            spec = RunSpec(agent=config["agent"], env=env, seed=seed, steps=steps,
                           settings={**config["settings"], **trial["settings"]},
                           run_dir=str(directory / env / f"seed_{seed}"), device=config["device"],
                           eval_every=math.ceil(steps / config["reports"]), eval_episodes=config["eval_episodes"],
                           log=config["log"], progress=not send_progress, checkpoint_every=0)
            record = train_fn(spec, functools.partial(on_eval, env=env, seed=seed),
                              on_progress if send_progress else None)
            finals.setdefault(env, []).append(record["final_return"])  # a stopped run's: its last evaluation
            steps_trained += record["steps"]
            # Stopped within the run, or at its last evaluation with other runs still to come.
            if stop and ("stopped_at" in record or index < len(runs) - 1):
                conn.send(("pruned", finals, steps_trained))
                return
        conn.send(("complete", finals, steps_trained))
    except KeyboardInterrupt:
        return
    except BaseException as error:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ERROR).write_text(traceback.format_exc())
        with contextlib.suppress(OSError):  # the sweep may be gone: then nobody is waiting for this
            conn.send(("failed", f"{type(error).__name__}: {error}", steps_trained))
