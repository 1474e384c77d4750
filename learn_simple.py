"""Many (agent x environment x seed) runs at once, one process each, each on its share of the CPU cores.

    python learn_simple.py                       # the quick check: every agent, the quick suite, short budgets
    python learn_simple.py --agent sac_baseline --envs Pendulum-v1 --seeds 4 --steps 8000
    python learn_simple.py --list                # agents, presets, hyperparameters, suites

Each run is `lab.rollout.train` in its own process. A run that crashes is reported and the others go on;
Ctrl-C stops every run, closes its logs, and writes results.json for those that finished.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path

from lab import UsageError
from lab.cli import CONFIG, ArgumentParser, add_run_arguments, exit_on_usage_error, listing, plan_runs, positive_int
from lab.results import aggregate, format_table
from lab.rollout import RESULT, RunSpec, TrainingDiverged, train, write_json

ERROR = "error.txt"
INTERRUPTED = 130


def interrupt_once(signum, frame):
    # The first Ctrl-C stops the run; later ones (the terminal sends one to every process, the parent
    # forwards another) must not break the log-closing that the first one started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def worker(spec: RunSpec, threads: int, cpus: list[int] | None) -> None:
    """One run in its own process: its thread budget, its cores, its error file."""
    signal.signal(signal.SIGINT, interrupt_once)
    import torch
    torch.set_num_threads(threads)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # for error.txt, should train() fail before making it
    try:
        train(spec)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except BaseException as error:
        detail = str(error) if isinstance(error, (TrainingDiverged, UsageError)) else traceback.format_exc()
        (run_dir / ERROR).write_text(f"{type(error).__name__}: {error}\n\n{detail}")
        sys.exit(1)


def schedule(specs: list[RunSpec], workers: int) -> tuple[list[dict], list[dict], bool]:
    """Run the specs, at most `workers` at once; returns (records, failures, interrupted)."""
    if not specs:
        return [], [], False
    cores = sorted(os.sched_getaffinity(0))
    slots = min(workers, len(specs))
    threads = max(1, len(cores) // slots)
    # Pin each slot to its own cores when they go round: the runs then never compete for a core.
    pin = slots * threads <= len(cores)
    context = multiprocessing.get_context("spawn")
    pending, running = list(specs), {}  # running: sentinel -> (process, spec, slot)
    free_slots = list(range(slots))
    records, failures, interrupted = [], [], False
    try:
        while pending or running:
            while pending and free_slots:
                spec, slot = pending.pop(0), free_slots.pop(0)
                cpus = cores[slot * threads:(slot + 1) * threads] if pin else None
                process = context.Process(target=worker, args=(spec, threads, cpus), name=spec.label)
                process.start()
                running[process.sentinel] = (process, spec, slot)
            for sentinel in wait(list(running)):
                process, spec, slot = running.pop(sentinel)
                process.join()
                free_slots.append(slot)
                outcome = collect(process, spec)
                (records if "final_return" in outcome else failures).append(outcome)
    except KeyboardInterrupt:
        interrupted = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for process, spec, _ in running.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        for process, spec, _ in running.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join()
            outcome = collect(process, spec)  # a run may have finished in the meantime
            (records if "final_return" in outcome else failures).append(outcome)
        failures += [{"agent": spec.agent, "env": spec.env, "seed": spec.seed, "error": "not started"}
                     for spec in pending]
    return records, failures, interrupted


def collect(process, spec: RunSpec) -> dict:
    run_dir = Path(spec.run_dir)
    if process.exitcode == 0 and (run_dir / RESULT).exists():
        return json.loads((run_dir / RESULT).read_text())
    if (run_dir / ERROR).exists():
        error = (run_dir / ERROR).read_text().splitlines()[0]
    elif process.exitcode in (INTERRUPTED, -signal.SIGTERM):
        return {"agent": spec.agent, "env": spec.env, "seed": spec.seed, "error": "interrupted"}
    else:
        error = f"worker died with exit code {process.exitcode} (killed by a signal or out of memory?)"
    print(f"[{spec.label}] FAILED: {error} (details: {run_dir / ERROR})", file=sys.stderr, flush=True)
    return {"agent": spec.agent, "env": spec.env, "seed": spec.seed, "error": error}


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # a kill or a scheduler's timeout stops the runs as Ctrl-C does


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--workers", type=positive_int, default=len(os.sched_getaffinity(0)),
                        help="runs at once, one process each (default: the number of cores)")
    args = parser.parse_args()
    if args.list:
        print(listing())
        return 0
    run_root, specs, config = plan_runs(args, parser)
    # Explicitly: a job started in the background by a shell inherits SIGINT ignored, and would not stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    run_root.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        write_json(run_root / CONFIG, config)

    done = [spec for spec in specs if (Path(spec.run_dir) / RESULT).exists()]
    todo = [spec for spec in specs if spec not in done]
    for spec in todo:  # a failure from an earlier attempt must not be reported again
        (Path(spec.run_dir) / ERROR).unlink(missing_ok=True)
    print(f"{len(todo)} runs ({len(done)} already finished) with up to {args.workers} workers; logs in {run_root}",
          flush=True)
    started = time.perf_counter()
    records, failures, interrupted = schedule(todo, args.workers)
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
        print(f"interrupted: continue with  python learn_simple.py --resume {run_root}", file=sys.stderr)
        return INTERRUPTED
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(exit_on_usage_error(main))
