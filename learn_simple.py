"""Many (agent x environment x seed) runs at once, one process each, each on its share of the CPU cores
(or, with --backend ray, a Ray task each, placed by Ray on the nodes of a cluster).

    python learn_simple.py                       # the quick check: every agent, the quick suite, short budgets
    python learn_simple.py --agent sac_baseline --envs Pendulum-v1 --seeds 4 --steps 8000
    python learn_simple.py --list                # agents, presets, hyperparameters, suites

Each run is `lab.rollout.train` in its own process (lab/ray_backend.py for Ray). A run that crashes is reported
and the others go on; Ctrl-C stops every run, closes its logs, and writes results.json for those that finished.
On a terminal, a live line per run in flight shows its progress (lab/progress.py); otherwise each run prints
plain lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import wait
from pathlib import Path

from lab.cli import (ArgumentParser, add_backend_arguments, add_run_arguments, check_backend, exit_on_usage_error,
                     listing, positive_int)
from lab.progress import LiveBoard, live_output
from lab.rollout import RESULT, RunSpec, train
from lab.runner import (ERROR, INTERRUPTED, enter_worker, failure_entry, report_failure, run_plan, stop_workers,
                        worker_slots, write_failure)


def worker(spec: RunSpec, threads: int, cpus: list[int] | None, progress) -> None:
    """One run in its own process: its thread budget, its cores, its error file; its progress reports sent
    over the `progress` connection when there is one (else it prints its own lines)."""
    enter_worker(threads, cpus)
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # for error.txt, should train() fail before making it
    try:
        train(spec, on_progress=progress.send if progress is not None else None)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except BaseException as error:
        write_failure(spec, error)
        sys.exit(1)


def schedule(specs: list[RunSpec], workers: int) -> tuple[list[dict], list[dict], bool]:
    """Run the specs, at most `workers` at once; returns (records, failures, interrupted)."""
    if not specs:
        return [], [], False
    slots = worker_slots(workers, len(specs))
    context = multiprocessing.get_context("spawn")
    pending, running = list(specs), {}  # running: sentinel -> (process, spec, slot)
    reports = set()  # the workers' progress connections still open
    free_slots = list(range(len(slots)))
    records, failures, interrupted = [], [], False
    board = LiveBoard() if live_output() else None  # else each worker prints its own lines
    try:
        with board or contextlib.nullcontext():
            while pending or running:
                while pending and free_slots:
                    spec, slot = pending.pop(0), free_slots.pop(0)
                    ours, theirs = context.Pipe(duplex=False) if board else (None, None)
                    process = context.Process(target=worker, name=spec.label, args=(
                        dataclasses.replace(spec, progress=board is None), *slots[slot], theirs))
                    process.start()
                    running[process.sentinel] = (process, spec, slot)
                    if ours is not None:
                        theirs.close()
                        reports.add(ours)
                for ready in wait([*running, *reports]):
                    if ready in reports:
                        show_progress(ready, board, reports)
                        continue
                    process, spec, slot = running.pop(ready)
                    process.join()
                    free_slots.append(slot)
                    if board:
                        board.finish(spec.label)
                    outcome = collect(process, spec)
                    (records if "final_return" in outcome else failures).append(outcome)
    except KeyboardInterrupt:
        interrupted = True
        stop_workers([process for process, _, _ in running.values()])
        for process, spec, _ in running.values():
            outcome = collect(process, spec)  # a run may have finished in the meantime
            (records if "final_return" in outcome else failures).append(outcome)
        failures += [failure_entry(spec, "not started") for spec in pending]
    return records, failures, interrupted


def show_progress(connection, board: LiveBoard, reports: set) -> None:
    """Every report waiting on a worker's connection onto the board; a closed one (its run ended) is dropped."""
    try:
        while connection.poll():
            board.update(connection.recv())
    except (EOFError, OSError):
        reports.discard(connection)
        connection.close()


def collect(process, spec: RunSpec) -> dict:
    run_dir = Path(spec.run_dir)
    if process.exitcode == 0 and (run_dir / RESULT).exists():
        return json.loads((run_dir / RESULT).read_text())
    if (run_dir / ERROR).exists():
        error = (run_dir / ERROR).read_text().splitlines()[0]
    elif process.exitcode in (INTERRUPTED, -signal.SIGTERM):
        return failure_entry(spec, "interrupted")
    else:
        error = f"worker died with exit code {process.exitcode} (killed by a signal or out of memory?)"
    return report_failure(spec, error)


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="runs at once (default: one per core; with Ray, all: Ray queues them)")
    add_backend_arguments(parser, "run", retries=True)
    args = parser.parse_args()
    if args.list:
        print(listing())
        return 0
    check_backend(args)
    if args.backend == "ray":
        from lab.ray_backend import connect, schedule_runs
        connect(args)  # before anything is written: a cluster that cannot be joined leaves no run behind
        at_once = f"up to {args.workers} at once" if args.workers else "as many at once as the cluster holds"
        return run_plan(args, parser, lambda specs: schedule_runs(specs, args),
                        f"as Ray tasks, {at_once}")
    workers = args.workers or len(os.sched_getaffinity(0))
    return run_plan(args, parser, lambda specs: schedule(specs, workers), f"with up to {workers} workers")


if __name__ == "__main__":
    sys.exit(exit_on_usage_error(main))
