"""Validation: the lab's agents and their peers on tasks with several action dimensions, same budgets and seeds.

    python benchmarks/validation.py                          # every group, CPU scale, into runs/validation
    python benchmarks/validation.py --only sac --workers 2   # SAC against SB3's only
    python benchmarks/validation.py --resume                 # after Ctrl-C, a crash or a reboot
    python benchmarks/validation.py --scale paper --device cuda --name validation_gpu

Groups (CONTENDERS): `sac` is sac_baseline against SB3's SAC, both with their own defaults, on
LunarLanderContinuous-v3 (2 action dimensions) and HalfCheetah-v5 (6); `crossq` is crossq and crossq_cem at
one critic width against SBX's CrossQ at that width too, on HalfCheetah-v5. The peers are no dependencies of
the lab: they are included when they import, so run this with a side environment's python that has the lab's
requirements and `pip install stable-baselines3 sbx-rl "jax[cpu]"`.

Every (contender, environment, seed) is a job in a process of its own with one thread. Each is evaluated
by the lab's own `evaluate` (deterministic policy, 10 episodes, the same evaluation seeds for every
contender) at every fifth of its budget. A job writes its record to its directory when it finishes, and the
lab's jobs also checkpoint every 10,000 steps, so `--resume` skips finished jobs and continues the lab's
unfinished ones (a peer's unfinished job restarts). The table: IQM of the final returns over seeds with its
95% stratified bootstrap interval (lab/stats.py), and the ratio to the group's peer.

Scales: `cpu` (the default) runs the budgets below with the CrossQ family's critics 128 wide (their default
and SBX's is 1024, which on one core costs hours per run); a 2-core machine finishes the whole `cpu` scale in
about three hours. `paper` runs the published widths (1024 for all three) at the
budgets of the rl-baselines3-zoo (LunarLanderContinuous 500k steps, HalfCheetah 1M), which is a GPU's job.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import dated  # noqa: E402  (after the path is set)
from lab import UsageError  # noqa: E402
from lab.cli import RUNS, ArgumentParser, exit_on_usage_error, positive_int  # noqa: E402
from lab.results import iqm  # noqa: E402
from lab.stats import stratified_bootstrap_ci  # noqa: E402

LUNAR, CHEETAH = "LunarLanderContinuous-v3", "HalfCheetah-v5"
# group -> (environment -> (seeds, steps at the cpu scale, steps at the paper scale))
TASKS = {
    "sac": {LUNAR: (4, 50_000, 500_000), CHEETAH: (4, 30_000, 1_000_000)},
    "crossq": {CHEETAH: (3, 20_000, 1_000_000)},
}
CPU_CRITIC_WIDTH = 128
# group -> contender -> (kind, what it runs, settings at the cpu scale, settings at the paper scale)
CONTENDERS = {
    "sac": {
        "lab sac_baseline": ("lab", "sac_baseline", {}, {}),
        "SB3 SAC": ("sb3", "SAC", {}, {}),
    },
    "crossq": {
        "lab crossq": ("lab", "crossq", {"critic_hidden": CPU_CRITIC_WIDTH}, {}),
        "lab crossq_cem": ("lab", "crossq_cem", {"critic_hidden": CPU_CRITIC_WIDTH}, {}),
        "SBX CrossQ": ("sbx", "CrossQ", {"policy_kwargs": {"net_arch": {"pi": [256, 256],
                                                                         "qf": [CPU_CRITIC_WIDTH] * 2}}}, {}),
    },
}
PEER = {"sac": "SB3 SAC", "crossq": "SBX CrossQ"}
PEER_MODULES = {"sb3": "stable_baselines3", "sbx": "sbx"}
EVALUATIONS, CHECKPOINT_EVERY = 5, 10_000
RESULT = "result.json"


def slug(text: str) -> str:
    return text.replace(" ", "_").replace(":", "-")


def available(kind: str) -> bool:
    if kind == "lab":
        return True
    try:
        __import__(PEER_MODULES[kind])
        return True
    except ImportError:
        return False


class PeerPolicy:
    """A peer's model behind the lab's acting interface, so that the lab's `evaluate` evaluates it."""

    def __init__(self, model):
        self.model = model

    def act(self, obs, explore: bool = False):
        import torch
        action, _ = self.model.predict(obs.cpu().numpy(), deterministic=not explore)
        return torch.as_tensor(action)


def run_peer(job: dict) -> dict:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.callbacks import BaseCallback

    from envs import make_env
    from lab.rollout import EVAL_SEED_OFFSET, evaluate, write_json
    library = __import__(PEER_MODULES[job["kind"]])
    model_class = getattr(library, job["what"])
    eval_env = make_env(job["env"])
    eval_seed = EVAL_SEED_OFFSET + job["seed"] * job["eval_episodes"]  # the lab's evaluation seeds for this seed
    evaluations, started, evaluating = [], time.perf_counter(), [0.0]

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % job["eval_every"] == 0 or self.num_timesteps == job["steps"]:
                begun = time.perf_counter()
                evaluations.append((self.num_timesteps, evaluate(PeerPolicy(self.model), eval_env,
                                                                 job["eval_episodes"], eval_seed, "cpu")))
                evaluating[0] += time.perf_counter() - begun
                print(f"[{job['label']}] {self.num_timesteps:>9}/{job['steps']} steps  eval "
                      f"{evaluations[-1][1]:9.1f}", flush=True)
            return True

    model = model_class("MlpPolicy", gym.make(job["env"]), seed=job["seed"], device=job["device"],
                        **job["settings"])
    model.learn(job["steps"], callback=Evaluate())
    wall = time.perf_counter() - started
    record = {"agent": job["contender"], "env": job["env"], "seed": job["seed"], "steps": job["steps"],
              "final_return": evaluations[-1][1], "wall_s": round(wall, 3),
              "sps": round(job["steps"] / max(wall - evaluating[0], 1e-9), 1), "evaluations": evaluations,
              "train_return": float(np.mean([e["r"] for e in list(model.ep_info_buffer)[-10:]]))
              if model.ep_info_buffer else None}
    eval_env.close()
    Path(job["dir"]).mkdir(parents=True, exist_ok=True)
    write_json(Path(job["dir"]) / RESULT, record)
    return record


def run_job(job: dict) -> dict:
    """One (contender, environment, seed) in this process, on one thread; its record."""
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"  # JAX too
    import torch
    torch.set_num_threads(1)
    if job["kind"] != "lab":
        return run_peer(job)
    from lab.rollout import RunSpec, train
    return train(RunSpec(agent=job["what"], env=job["env"], seed=job["seed"], steps=job["steps"],
                         settings=job["settings"], run_dir=job["dir"], device=job["device"], log=False,
                         eval_every=job["eval_every"], eval_episodes=job["eval_episodes"],
                         checkpoint_every=CHECKPOINT_EVERY, resume=True))


def plan(args, root: Path) -> list[dict]:
    """Every job of the chosen groups, seed by seed: an unfinished benchmark has compared like with like."""
    contenders = {}
    for group in args.only:
        for contender, (kind, what, cpu_settings, paper_settings) in CONTENDERS[group].items():
            if available(kind):
                contenders.setdefault(group, {})[contender] = (kind, what, cpu_settings, paper_settings)
            else:
                print(f"{contender}: {PEER_MODULES[kind]} is not installed here, left out", flush=True)
    jobs = []
    for group in contenders:
        for env, (seeds, cpu_steps, paper_steps) in TASKS[group].items():
            steps = args.steps or (cpu_steps if args.scale == "cpu" else paper_steps)
            for seed in range(args.seeds or seeds):
                for contender, (kind, what, cpu_settings, paper_settings) in contenders[group].items():
                    jobs.append({"group": group, "contender": contender, "kind": kind, "what": what, "env": env,
                                 "seed": seed, "steps": steps, "eval_every": steps // EVALUATIONS,
                                 "settings": cpu_settings if args.scale == "cpu" else paper_settings,
                                 "eval_episodes": args.eval_episodes, "device": args.device,
                                 "label": f"{contender} {env} seed {seed}",
                                 "dir": str(root / slug(contender) / env / f"seed_{seed}")})
    return jobs


def table(jobs: list[dict]) -> str:
    rows = ["| group | environment | steps | contender | settings | seeds | IQM final return | 95% CI | vs peer: IQM - peer's (share of its magnitude) |",
            "|---|---|---|---|---|---|---|---|---|"]
    cells: dict = {}
    for job in jobs:
        path = Path(job["dir"]) / RESULT
        key = (job["group"], job["env"], job["steps"], job["contender"], json.dumps(job["settings"]))
        cells.setdefault(key, [0, []])[0] += 1
        if path.exists():
            cells[key][1].append(json.loads(path.read_text())["final_return"])
    iqms = {(group, env, contender): iqm(finals)
            for (group, env, _, contender, _), (_, finals) in cells.items() if finals}
    for (group, env, steps, contender, settings), (planned, finals) in cells.items():
        peer = iqms.get((group, env, PEER[group]))
        if finals:
            value, low, high = stratified_bootstrap_ci(finals)
            figures = f"{value:.1f} | [{low:.1f}, {high:.1f}]"
            # A difference, not a ratio: returns may be negative (LunarLander's early ones are).
            ratio = (f"{value - peer:+.1f} ({(value - peer) / abs(peer):+.0%})" if peer and contender != PEER[group]
                     else "-")
        else:
            figures, ratio = "- | -", "-"
        rows.append(f"| {group} | {env} | {steps} | {contender} | {settings if settings != '{}' else 'defaults'} | "
                    f"{len(finals)}/{planned} | {figures} | {ratio} |")
    return "\n".join(rows)


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    parser.add_argument("--scale", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--workers", type=positive_int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seeds", type=positive_int, default=None, help="seeds 0 .. N-1 (default: each task's)")
    parser.add_argument("--steps", type=positive_int, default=None, help="every budget (default: each task's)")
    parser.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation")
    parser.add_argument("--device", default="cpu", help="the lab's and the peers' device (default cpu)")
    parser.add_argument("--name", default="validation", help="results go to runs/NAME (default validation)")
    parser.add_argument("--resume", action="store_true", help="continue runs/NAME: finished jobs are kept")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    root = RUNS / args.name
    if root.exists() and not args.resume:
        raise UsageError(f"{root} exists: give --resume to continue it, or another --name")
    jobs = plan(args, root.resolve())
    pending = [job for job in jobs if not (Path(job["dir"]) / RESULT).exists()]
    print(f"{len(jobs)} jobs, {len(jobs) - len(pending)} finished already, {args.workers} at a time", flush=True)
    root.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    failed = 0
    with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_job, job): job for job in pending}
        try:
            for future in concurrent.futures.as_completed(futures):
                if future.exception() is not None:  # the others go on; the table shows the seed as missing
                    failed += 1
                    print(f"[{futures[future]['label']}] failed: {future.exception()!r}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            print("interrupted: --resume continues", file=sys.stderr)
            return 130
    report = dated(f"Validation at the {args.scale} scale", table(jobs))
    print(f"\n{report}")
    if args.markdown:
        args.markdown.write_text(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(exit_on_usage_error(main))
