"""One process, vectorised environments, the agent on CUDA when there is one: runs one after another.

    python learn_vectorised.py --agent ppo_baseline:vectorised --envs CartPole-v1 --num-envs 16 --seeds 4
    python learn_vectorised.py --agent sac_baseline --envs TorchPendulum-v0 --num-envs 64 --device cuda
    python learn_vectorised.py --agent crossq --envs HalfCheetah-v5 --num-envs 8 --vectorisation async

Each (agent, environment, seed) run is `lab.rollout.train` with `--num-envs` copies of the environment stepped
as one batch: Gymnasium copies in this process (`sync`) or one process each (`async`), or, for the batched
torch environments (TorchPendulum-v0, TorchCartPoleContinuous-v0), on the agent's device. Options, logs,
results.json, --resume and errors are learn_simple.py's. A run that fails is reported and the next one starts;
Ctrl-C stops the current one, keeps its logs, and writes results.json for those that finished. On a terminal, a
live line shows the run in flight (lab/progress.py); otherwise plain lines.
"""

from __future__ import annotations

import contextlib
import signal
import sys

from lab.cli import ArgumentParser, add_run_arguments, exit_on_usage_error, listing, positive_int
from lab.progress import LiveBoard, live_output
from lab.rollout import RunSpec, train
from lab.runner import interrupt_once, report_failure, run_plan, write_failure


def run_here(specs: list[RunSpec]) -> tuple[list[dict], list[dict], bool]:
    """The runs one after another in this process; a failure is recorded and the next run starts."""
    records, failures = [], []
    signal.signal(signal.SIGINT, interrupt_once)  # a second Ctrl-C must not cut the closing of the logs short
    board = LiveBoard() if live_output() else None  # else train prints plain lines
    with board or contextlib.nullcontext():
        for index, spec in enumerate(specs):
            try:
                records.append(train(spec, on_progress=board.update if board else None))
            except KeyboardInterrupt:
                failures.append({"agent": spec.agent, "env": spec.env, "seed": spec.seed, "error": "interrupted"})
                failures += [{"agent": s.agent, "env": s.env, "seed": s.seed, "error": "not started"}
                             for s in specs[index + 1:]]
                return records, failures, True
            except Exception as error:
                write_failure(spec, error)
                failures.append(report_failure(spec, f"{type(error).__name__}: {error}"))
            finally:
                if board:
                    board.finish(spec.label)
    return records, failures, False


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(parser, device="auto")
    parser.add_argument("--num-envs", type=positive_int, default=16,
                        help="copies of each environment, stepped as one batch (default 16)")
    parser.add_argument("--vectorisation", choices=("sync", "async"), default="sync",
                        help="Gymnasium copies in this process (sync, default) or one process each (async); "
                             "batched torch environments ignore it")
    args = parser.parse_args()
    if args.list:
        print(listing())
        return 0
    return run_plan(args, parser, run_here, f"one after another, {args.num_envs} environments each")


if __name__ == "__main__":
    sys.exit(exit_on_usage_error(main))
