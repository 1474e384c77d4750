"""What the runners share around their scheduling: the plan, signals, failure records, results.json, the table.

A runner parses its options (lab/cli.py), then hands `run_plan` a `schedule(specs) -> (records, failures,
interrupted)` that decides where the runs go: processes or Ray tasks (learn_simple.py, lab/ray_backend.py), or
this process (learn_vectorised.py).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from lab import UsageError
from lab.cli import CONFIG, plan_runs
from lab.results import aggregate, format_table
from lab.rollout import RESULT, RunSpec, TrainingDiverged, write_json

ERROR = "error.txt"
INTERRUPTED = 130
GRACE_S = 30.0  # after Ctrl-C, how long workers get to close their logs before they are killed
Schedule = Callable[[list[RunSpec]], tuple[list[dict], list[dict], bool]]


def write_failure(spec: RunSpec, error: BaseException) -> None:
    """The run's error.txt: the error on its first line, then the traceback (none for a known kind)."""
    detail = str(error) if isinstance(error, (TrainingDiverged, UsageError)) else traceback.format_exc()
    (Path(spec.run_dir) / ERROR).write_text(f"{type(error).__name__}: {error}\n\n{detail}")


def report_failure(spec: RunSpec, error: str) -> dict:
    print(f"[{spec.label}] FAILED: {error} (details: {Path(spec.run_dir) / ERROR})", file=sys.stderr, flush=True)
    return failure_entry(spec, error)


def failure_entry(spec: RunSpec, error: str) -> dict:
    """A run's entry in results.json's failures: what it was, and why it has no result."""
    return {"agent": spec.agent, "env": spec.env, "seed": spec.seed, "error": error}


def worker_slots(workers: int, jobs: int) -> list[tuple[int, list[int] | None]]:
    """(torch threads, cores to pin to or None) for each of min(workers, jobs) worker processes: the cores
    shared out, each worker on its own when they go round, so that workers never compete for a core."""
    cores = sorted(os.sched_getaffinity(0))
    count = max(1, min(workers, jobs))
    threads = max(1, len(cores) // count)
    pin = count * threads <= len(cores)
    return [(threads, cores[slot * threads:(slot + 1) * threads] if pin else None) for slot in range(count)]


def interrupt_once(signum, frame):
    # The first Ctrl-C stops the work; later ones (the terminal sends one to every process, the parent
    # forwards another) must not break the log-closing that the first one started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def enter_worker(threads: int, cpus: list[int] | None) -> None:
    """What a worker process does first: its Ctrl-C handling, its thread budget, its cores."""
    signal.signal(signal.SIGINT, interrupt_once)
    import torch
    torch.set_num_threads(threads)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def stop_workers(processes: list) -> None:
    """After Ctrl-C: pass it on to every worker still running, give them GRACE_S to close their logs, then
    terminate the stragglers. Further Ctrl-Cs are ignored meanwhile, so that the closing is not cut short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    deadline = time.monotonic() + GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.terminate()
            process.join()


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # a kill or a scheduler's timeout stops the runs as Ctrl-C does


def install_stop_handlers() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt in the process that schedules the work. Explicitly for SIGINT:
    a job started in the background by a shell inherits it ignored, and would not stop."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_on_sigterm)


def run_plan(args, parser, schedule: Schedule, how: str) -> int:
    """Plan the runs (or reload them with --resume), run those not finished, write results.json, print the
    table; returns the exit code: 0, 1 when a run failed, 130 when interrupted. `how` describes the schedule."""
    run_root, specs, config = plan_runs(args, parser)
    install_stop_handlers()
    run_root.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        write_json(run_root / CONFIG, config)

    done = [spec for spec in specs if (Path(spec.run_dir) / RESULT).exists()]
    todo = [spec for spec in specs if spec not in done]
    for spec in todo:  # a failure from an earlier attempt must not be reported again
        (Path(spec.run_dir) / ERROR).unlink(missing_ok=True)
    print(f"{len(todo)} runs ({len(done)} already finished) {how}; logs in {run_root}", flush=True)
    started = time.perf_counter()
    records, failures, interrupted = schedule(todo)
    records = [json.loads((Path(spec.run_dir) / RESULT).read_text()) for spec in done] + records

    expected = {}
    for spec in specs:
        expected[spec.agent, spec.env] = expected.get((spec.agent, spec.env), 0) + 1
    summary = aggregate(records, expected)
    write_json(run_root / "results.json", {"run": run_root.name, "config": config, "records": records,
                                           "aggregates": summary, "failures": failures,
                                           "interrupted": interrupted})
    print()
    print(format_table(summary))
    print(f"\n{len(records)} runs finished, {len(failures)} failed or interrupted, "
          f"{time.perf_counter() - started:.0f} s; results: {run_root / 'results.json'}")
    if interrupted:
        print(f"interrupted: continue with  python {Path(sys.argv[0]).name} --resume {run_root}", file=sys.stderr)
        return INTERRUPTED
    return 1 if failures else 0
