"""The Ray backend of learn_simple.py and hypertune.py (`--backend ray`): it changes where work runs, nothing else.

Each (agent, environment, seed) run of learn_simple.py, and each trial of hypertune.py, is a Ray task that
asks for `--cpus-per-run` CPUs (also its torch threads) and `--gpus-per-run` GPUs (a fraction shares one), so
that Ray places it on a node of the cluster. The task runs the lab's own code, shipped to every node
(`py_modules`): the same rollout loop, the same logs, the same result records. The records come back as the
tasks' results; the logs are written on the node that ran the task, under the run directory's absolute path,
which is therefore meant to be on storage that every node shares (README, "Running on a cluster").

A run's task is retried (`--retries`) when its worker or node dies, and continues from the run's last
checkpoint when that storage is shared; a trial's task is not retried (its reports to the pruner would come
twice): the trial is recorded as failed. Ctrl-C cancels every task, which raises KeyboardInterrupt inside it,
so that it closes its logs as a local worker does; those that have not stopped after GRACE_S are killed.

Ray is imported here only, and only when this backend is chosen: it is an optional dependency.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import torch

from lab import UsageError
from lab.rollout import RESULT, RunSpec, train, write_json
from lab.runner import GRACE_S, failure_entry, install_stop_handlers, report_failure, write_failure
from lab.tuning import run_trial

INSTALL = "pip install -r requirements-ray.txt"
POLL_S = 0.2  # the sweep's wait for trial messages between looks at its tasks


def import_ray():
    # Ray merges log lines that differ only in numbers: it would print one seed's progress for all of them.
    # Read when ray is imported.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError:
        raise UsageError(f"--backend ray needs Ray, which is not installed here; install it with: {INSTALL}") \
            from None
    return ray


def check_address(address: str | None) -> None:
    """A HOST:PORT address must answer: Ray itself would wait minutes for a head that is not there."""
    if address is None or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address '{address}': expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise UsageError(f"--address {address}: no Ray head answers there ({error.strerror or error}); "
                         f"start one with: ray start --head --port {port}") from None


def check_request(options, device: str) -> dict:
    """The resources each task asks Ray for, from the options and the runs' device (cpu or cuda, as
    lab.cli.resolve_device leaves it for Ray); refuses a request Ray cannot schedule, and one that no node of a
    local instance (this machine) could meet."""
    gpus = options.gpus_per_run if options.gpus_per_run is not None else (1.0 if device == "cuda" else 0.0)
    if device == "cuda" and gpus == 0:
        raise UsageError("--device cuda under Ray needs --gpus-per-run above 0 (e.g. 0.25: four runs per GPU)")
    if (gpus > 1 and gpus != int(gpus)) or 0 < gpus < 1e-4:  # what Ray can schedule
        raise UsageError(f"--gpus-per-run {gpus:g}: a fraction of one GPU (0.0001 to 1) or a whole number of GPUs")
    if options.address is None:
        cores, cards = len(os.sched_getaffinity(0)), torch.cuda.device_count()
        if options.cpus_per_run > cores:
            raise UsageError(f"--cpus-per-run {options.cpus_per_run}: the local Ray instance has {cores} cores")
        if gpus > cards:
            raise UsageError(f"--gpus-per-run {gpus:g}: the local Ray instance has {cards} GPUs")
    return {"num_cpus": options.cpus_per_run, "num_gpus": gpus}


def connect(options):
    """Join the cluster at --address, or start a local Ray instance on this process's cores; returns ray.
    Once per process: later calls return the connection made."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    import agents
    import envs
    import lab
    local = options.address is None
    # Before Ray starts its workers: they inherit this process's SIGINT disposition, and ray.cancel's
    # KeyboardInterrupt needs the default one.
    install_stop_handlers()
    try:
        # "local": a new instance, whatever Ray finds left of others on this machine
        ray.init(address="local" if local else options.address,
                 num_cpus=len(os.sched_getaffinity(0)) if local else None, include_dashboard=False if local else None,
                 runtime_env={"py_modules": [agents, envs, lab]}, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if local:
            raise UsageError(f"cannot start a local Ray instance: {message}") from None
        if "RAY_AUTH_MODE" not in os.environ and options.address != "auto":  # auto finds the head's token itself
            message += "; if the head uses token authentication (Ray's default), set RAY_AUTH_MODE=token (README)"
        raise UsageError(f"cannot join the Ray cluster at --address {options.address}: {message}") from None
    install_stop_handlers()  # ray.init replaced the SIGTERM handler with one that exits without closing any log
    return ray


def task_slots(ray, resources: dict) -> int:
    """How many tasks asking for `resources` the cluster's nodes hold at once. None: a warning, the tasks
    wait (a cluster may still be growing)."""
    slots, nodes = 0, []
    for node in ray.nodes():
        if node["Alive"]:
            cpus, gpus = node["Resources"].get("CPU", 0), node["Resources"].get("GPU", 0)
            nodes.append({"CPU": cpus, "GPU": gpus})
            fit = cpus // resources["num_cpus"]
            slots += int(min(fit, gpus // resources["num_gpus"]) if resources["num_gpus"] else fit)
    if not slots:
        print(f"warning: no node of the Ray cluster has {resources['num_cpus']} CPUs and {resources['num_gpus']:g} "
              f"GPUs for a task (its nodes: {nodes}); the tasks wait until such a node joins", file=sys.stderr,
              flush=True)
    return slots


def absolute(path) -> str:
    """The absolute path a node is to write at: a task's working directory is not the driver's."""
    return str(Path(path).resolve())


def stop_tasks(ray, refs: list) -> None:
    """Cancel the tasks (a KeyboardInterrupt in each), give them GRACE_S to close their logs, then kill them.
    Further Ctrl-Cs are ignored meanwhile, so that the closing is not cut short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for ref in refs:
        ray.cancel(ref)
    _, stuck = ray.wait(refs, num_returns=len(refs), timeout=GRACE_S)
    for ref in stuck:
        ray.cancel(ref, force=True)


def lost(error: BaseException) -> str:
    """A one-line account of a task Ray could not finish (its worker or node died, retries spent)."""
    detail = str(error).strip().splitlines()
    return f"Ray task lost: {type(error).__name__}" + (f": {detail[0]}" if detail else "")


# ---- learn_simple.py: one task per run ----

def run_task(spec: RunSpec, threads: int) -> dict:
    """One run, on the node Ray chose; returns its record, or {'error': first line} when it failed."""
    torch.set_num_threads(threads)
    Path(spec.run_dir).mkdir(parents=True, exist_ok=True)  # for error.txt, should train() fail before making it
    result = Path(spec.run_dir) / RESULT
    if result.exists():  # a retry whose first attempt finished before its node was lost
        return json.loads(result.read_text())
    try:
        # resume: a retry after a lost node continues from the run's last checkpoint (a new run has none)
        return train(dataclasses.replace(spec, resume=True))
    except Exception as error:  # KeyboardInterrupt (a cancel) goes on up: Ray records the task as cancelled
        write_failure(spec, error)
        return {"error": f"{type(error).__name__}: {error}".splitlines()[0]}


def schedule_runs(specs: list[RunSpec], options) -> tuple[list[dict], list[dict], bool]:
    """learn_simple's schedule on Ray: every run a task, at most --workers in flight (default: all, Ray
    queues them); returns (records, failures, interrupted)."""
    if not specs:
        return [], [], False
    ray = connect(options)
    resources = check_request(options, specs[0].device)
    task_slots(ray, resources)
    # A fresh worker process per run, as locally: a reused one keeps the CUDA device of its first run.
    task = ray.remote(max_calls=1)(run_task)
    resources.update(max_retries=options.retries, retry_exceptions=False)
    pending, running = [dataclasses.replace(spec, run_dir=absolute(spec.run_dir)) for spec in specs], {}
    limit = options.workers or len(specs)
    records, failures, interrupted = [], [], False

    def settle(ref, spec: RunSpec) -> None:
        outcome = run_outcome(ray, ref, spec, interrupted)
        (records if "final_return" in outcome else failures).append(outcome)

    try:
        while pending or running:
            while pending and len(running) < limit:
                spec = pending.pop(0)
                running[task.options(name=spec.label, **resources).remote(spec, options.cpus_per_run)] = spec
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                settle(ref, running.pop(ref))
    except KeyboardInterrupt:
        interrupted = True
        stop_tasks(ray, list(running))
        for ref, spec in running.items():
            settle(ref, spec)  # a run may have finished in the meantime
        failures += [failure_entry(spec, "not started") for spec in pending]
    finally:
        ray.shutdown()
    return records, failures, interrupted


def run_outcome(ray, ref, spec: RunSpec, interrupted: bool) -> dict:
    try:
        outcome = ray.get(ref)
    except ray.exceptions.RayError as error:
        if interrupted:  # cancelled, or killed when it did not stop in time
            return failure_entry(spec, "interrupted")
        return report_failure(spec, lost(error))
    if "error" in outcome:
        return report_failure(spec, outcome["error"])
    # The record came back through Ray: a copy here too, so that --resume knows the run finished even when
    # the node wrote its own on storage this machine does not see.
    result = Path(spec.run_dir) / RESULT
    if not result.exists():
        result.parent.mkdir(parents=True, exist_ok=True)
        write_json(result, outcome)
    return outcome


# ---- hypertune.py: one task per trial, its reports and the pruner's answers through an exchange actor ----

class Exchange:
    """The mailboxes between the sweep and its trials: reports and outcomes to the sweep, the pruner's
    decisions back to each trial. An async actor, so that a trial waiting for its answer holds up no other."""

    def __init__(self):
        self.to_sweep = asyncio.Queue()
        self.to_trial = collections.defaultdict(asyncio.Queue)

    async def send(self, trial: int, message) -> None:
        self.to_sweep.put_nowait((trial, message))

    async def receive(self, trial: int):
        return await self.to_trial[trial].get()

    async def answer(self, trial: int, decision: bool) -> None:
        self.to_trial[trial].put_nowait(decision)

    async def collect(self, timeout_s: float) -> list:
        """The (trial, message) pairs waiting for the sweep; if none, the first to arrive within timeout_s."""
        messages = []
        if self.to_sweep.empty():
            try:
                messages.append(await asyncio.wait_for(self.to_sweep.get(), timeout_s))
            except asyncio.TimeoutError:
                return []
        while not self.to_sweep.empty():
            messages.append(self.to_sweep.get_nowait())
        return messages


class ExchangeConnection:
    """A trial's end of the exchange, with the send/recv of the pipe a local trial has."""

    def __init__(self, exchange, trial: int):
        self.exchange, self.trial = exchange, trial

    def send(self, message) -> None:
        import ray
        ray.get(self.exchange.send.remote(self.trial, message))  # delivered before the task can end

    def recv(self):
        import ray
        return ray.get(self.exchange.receive.remote(self.trial))


def trial_task(exchange, run_root: str, config: dict, trial: dict, threads: int, train_fn) -> None:
    """One trial, on the node Ray chose: hypertune's trial loop, talking to the sweep through the exchange."""
    torch.set_num_threads(threads)
    run_trial(ExchangeConnection(exchange, trial["trial"]), Path(run_root), config, trial, train_fn)


class RayTrials:
    """hypertune's trials as Ray tasks: at most `capacity` at once (--workers; default as many as the
    cluster's CPUs hold). The interface of hypertune's LocalTrials: start, events, answer, release, stop, close."""

    def __init__(self, sweep, workers: int | None, options):
        self.sweep = sweep
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        self.ray = ray = connect(options)
        self.threads = options.cpus_per_run
        resources = check_request(options, sweep.config["device"])
        self.capacity = workers or max(1, task_slots(ray, resources))
        self.task = ray.remote(max_calls=1)(trial_task)  # a fresh worker process per trial, as in run_task
        self.resources = {**resources, "max_retries": 0}
        # On this node, which the sweep needs anyway; one call waits in it for each running trial.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.exchange = ray.remote(Exchange).options(num_cpus=0, scheduling_strategy=here,
                                                     max_concurrency=self.capacity + 16).remote()
        self.running = {}  # trial number -> its task

    def start(self, trial: dict) -> int:
        self.running[trial["trial"]] = self.task.options(name=f"trial {trial['trial']}", **self.resources).remote(
            self.exchange, absolute(self.sweep.run_root), self.sweep.config, trial, self.threads,
            self.sweep.train_fn)
        return trial["trial"]

    def events(self) -> list[tuple[int, tuple]]:
        """(trial, message) for each report or outcome the trials sent, and a failure outcome for each trial
        whose task ended without one (its worker or node died)."""
        ended, _ = self.ray.wait(list(self.running.values()), num_returns=len(self.running), timeout=0)
        # A task sends its outcome before it ends: with the ended ones known first, their outcomes are in.
        messages = self.ray.get(self.exchange.collect.remote(0 if ended else POLL_S))
        # A trial already given up as dead may have had a message on its way: it is no longer anyone's.
        messages = [(trial, message) for trial, message in messages if trial in self.running]
        told = {trial for trial, message in messages if message[0] != "report"}
        for trial, ref in self.running.items():
            if ref in ended and trial not in told:
                try:
                    self.ray.get(ref)
                    error = "trial ended without an outcome"
                except self.ray.exceptions.RayError as failure:
                    error = lost(failure)
                messages.append((trial, ("failed", error, 0)))
        return messages

    def answer(self, trial: int, decision: bool) -> None:
        self.exchange.answer.remote(trial, decision)

    def release(self, trial: int) -> None:
        del self.running[trial]

    def stop(self) -> None:
        stop_tasks(self.ray, list(self.running.values()))

    def close(self) -> None:
        self.ray.shutdown()
