"""Environment steps per second with updates, for the lab's agents and, when installed, their peers'.

    python benchmarks/throughput.py                  # all contenders, 3 interleaved repeats
    python benchmarks/throughput.py --only sac --repeats 1
    python benchmarks/throughput.py --only agents --repeats 1   # every lab agent with its defaults
    python benchmarks/throughput.py --only vectorised           # PPO on 16 environments vs on one
    python benchmarks/throughput.py --only memory               # ppo_recurrent beside ppo_baseline

Each measurement is a fresh process pinned to one core with one torch thread (as a learn_simple worker is),
and the repeats of all contenders are interleaved so that drifts in machine load hit them alike. Settings
mirror each other (see CONTENDERS); the `agents` group times every lab agent with its own defaults. SAC is
timed from the end of its warm-up (step 1000) to step 6000, PPO over its whole 20480 steps. The `vectorised`
group times the lab's PPO (its defaults) as a learn_simple worker runs it, on one environment, against
learn_vectorised's loop on 16 synchronous copies, both on one core, over 65536 steps (two rollouts of the
16 copies), and the `vectorised` preset on the 16 copies beside them. The `memory` group times ppo_recurrent
(LSTM, 64 wide, sequences of 16 steps) beside ppo_baseline, both with their defaults, as learn_simple runs them. `--scaling` also
times one learn_simple-style worker alone against two at once on two cores. The peers are no dependencies of
the lab: `pip install stable-baselines3 sbx-rl` to include them.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import AGENTS  # noqa: E402  (after the path is set)
from benchmarks.report import write_markdown  # noqa: E402

ENV = "HalfCheetah-v5"
SAC_WARMUP, SAC_STEPS, PPO_STEPS = 1000, 6000, 20480
# CrossQ learns from step 1000 and is timed from 1300, past the first updates (where JAX compiles SBX's), to 2600.
CROSSQ_START, CROSSQ_END = 1300, 2600
PPO_VECTORISED_ENVS = 16
PPO_VECTORISED_STEPS = 2 * PPO_VECTORISED_ENVS * 2048  # two rollouts of the 16 environments at num_steps 2048
ON_POLICY = ("ppo_baseline", "ppo_recurrent")  # timed over PPO_STEPS, as PPO
AGENT_STEPS = 500  # timed steps per off-policy agent in the `agents` group (the slowest take ~0.2 s a step)
# The lab's PPO with SB3's defaults: no normalisation wrappers, no value clipping.
PPO_AS_SB3 = {"norm_obs": False, "norm_reward": False, "clip_vloss": False}


def timed_lab_run(spec_fields: dict, marks_at: tuple[int, int]) -> float:
    """Steps per second of a lab run between two steps, evaluation time excluded (SB3's timing has none).
    The marks are taken at evaluations, so both steps must be multiples of eval_every (or the budget)."""
    import lab.rollout
    marks, evaluating = {}, []
    evaluate = lab.rollout.evaluate

    def timed_evaluate(*args):
        started = time.perf_counter()
        result = evaluate(*args)
        evaluating.append(time.perf_counter() - started)
        return result

    def mark(step, _):
        marks[step] = time.perf_counter() - sum(evaluating)
        return True

    lab.rollout.evaluate = timed_evaluate
    marks[0] = time.perf_counter()
    try:
        lab.rollout.train(lab.rollout.RunSpec(eval_episodes=1, log=False, progress=False, **spec_fields),
                          on_eval=mark)
    finally:
        lab.rollout.evaluate = evaluate
    start, end = marks_at
    return (end - start) / (marks[end] - marks[start])


def lab_sac(seed: int) -> float:
    return timed_lab_run({"agent": "sac_baseline", "env": ENV, "seed": seed, "steps": SAC_STEPS,
                          "eval_every": SAC_WARMUP, "settings": {"learning_starts": SAC_WARMUP}},
                         (SAC_WARMUP, SAC_STEPS))


def lab_crossq(seed: int) -> float:
    return timed_lab_run({"agent": "crossq", "env": ENV, "seed": seed, "steps": CROSSQ_END,
                          "eval_every": CROSSQ_START, "settings": {"learning_starts": SAC_WARMUP}},
                         (CROSSQ_START, CROSSQ_END))


def lab_ppo(seed: int) -> float:
    return timed_lab_run({"agent": "ppo_baseline", "env": ENV, "seed": seed, "steps": PPO_STEPS,
                          "settings": PPO_AS_SB3}, (0, PPO_STEPS))


def lab_ppo_envs(agent: str, num_envs: int, seed: int) -> float:
    return timed_lab_run({"agent": agent, "env": ENV, "seed": seed, "steps": PPO_VECTORISED_STEPS,
                          "num_envs": num_envs}, (0, PPO_VECTORISED_STEPS))


def lab_agent(spec: str, seed: int, settings: dict | None = None) -> float:
    """Any lab agent with its defaults (and `settings`); off-policy ones timed over AGENT_STEPS after learning
    starts."""
    if spec in ON_POLICY:
        return timed_lab_run({"agent": spec, "env": ENV, "seed": seed, "steps": PPO_STEPS}, (0, PPO_STEPS))
    return timed_lab_run({"agent": spec, "env": ENV, "seed": seed, "steps": SAC_WARMUP + AGENT_STEPS,
                          "eval_every": AGENT_STEPS, "settings": {"learning_starts": SAC_WARMUP, **(settings or {})}},
                         (SAC_WARMUP, SAC_WARMUP + AGENT_STEPS))


def sb3_sac(seed: int) -> float:
    from stable_baselines3 import SAC
    return peer_sac(SAC, seed, device="cpu")


def sbx_sac(seed: int) -> float:
    from sbx import SAC
    return peer_sac(SAC, seed)


def peer_sac(sac_class, seed: int, **options) -> float:
    """SB3's or SBX's SAC with the lab's settings, timed as the lab's is, from SAC_WARMUP to SAC_STEPS."""
    import gymnasium as gym
    from stable_baselines3.common.callbacks import BaseCallback
    marks = {}

    class Mark(BaseCallback):
        def _on_step(self):
            if self.num_timesteps in (SAC_WARMUP, SAC_STEPS):
                marks[self.num_timesteps] = time.perf_counter()
            return True

    model = sac_class("MlpPolicy", gym.make(ENV), learning_starts=SAC_WARMUP, batch_size=256, seed=seed,
                      policy_kwargs={"net_arch": [256, 256]}, **options)
    model.learn(SAC_STEPS, callback=Mark())
    return (SAC_STEPS - SAC_WARMUP) / (marks[SAC_STEPS] - marks[SAC_WARMUP])


def sbx_crossq(seed: int) -> float:
    import gymnasium as gym
    from sbx import CrossQ
    from stable_baselines3.common.callbacks import BaseCallback
    marks = {}

    class Mark(BaseCallback):
        def _on_step(self):
            if self.num_timesteps in (CROSSQ_START, CROSSQ_END):
                marks[self.num_timesteps] = time.perf_counter()
            return True

    model = CrossQ("MlpPolicy", gym.make(ENV), learning_starts=SAC_WARMUP, seed=seed)
    model.learn(CROSSQ_END, callback=Mark())
    return (CROSSQ_END - CROSSQ_START) / (marks[CROSSQ_END] - marks[CROSSQ_START])


def sb3_ppo(seed: int) -> float:
    from stable_baselines3 import PPO
    return peer_ppo(PPO, seed, device="cpu")


def sbx_ppo(seed: int) -> float:
    from sbx import PPO
    return peer_ppo(PPO, seed)


def peer_ppo(ppo_class, seed: int, **options) -> float:
    """SB3's or SBX's PPO with SB3's defaults (64x64 tanh), timed over the whole run as the lab's is."""
    import gymnasium as gym
    model = ppo_class("MlpPolicy", gym.make(ENV), n_steps=2048, batch_size=64, n_epochs=10, seed=seed, **options)
    started = time.perf_counter()
    model.learn(PPO_STEPS)
    return PPO_STEPS / (time.perf_counter() - started)


CONTENDERS = {
    "sac": {"lab sac_baseline": lab_sac, "SB3 SAC": sb3_sac, "SBX SAC": sbx_sac},
    "ppo": {"lab ppo_baseline": lab_ppo, "SB3 PPO": sb3_ppo, "SBX PPO": sbx_ppo},
    "crossq": {"lab crossq": lab_crossq, "SBX CrossQ": sbx_crossq},
    "agents": {**{f"lab {spec}": functools.partial(lab_agent, spec) for spec in (*AGENTS, "sac_baseline:droq")},
               # What crossq_cem's gradient ascent costs: its search with CEM alone, as before the ascent.
               "lab crossq_cem, CEM alone": functools.partial(lab_agent, "crossq_cem",
                                                              settings={"ascent_steps": 0, "init_std": 0.5})},
    "memory": {"lab ppo_baseline": functools.partial(lab_agent, "ppo_baseline"),
               "lab ppo_recurrent": functools.partial(lab_agent, "ppo_recurrent")},
    "vectorised": {
        "lab ppo_baseline 1 env": functools.partial(lab_ppo_envs, "ppo_baseline", 1),
        f"lab ppo_baseline {PPO_VECTORISED_ENVS} envs": functools.partial(lab_ppo_envs, "ppo_baseline",
                                                                          PPO_VECTORISED_ENVS),
        f"lab ppo_baseline:vectorised {PPO_VECTORISED_ENVS} envs": functools.partial(
            lab_ppo_envs, "ppo_baseline:vectorised", PPO_VECTORISED_ENVS)},
}
# What each group's ratios are relative to: the fastest of its peers that is installed, or for `vectorised` the
# single environment.
REFERENCE = {"sac": ("SB3 SAC", "SBX SAC"), "ppo": ("SB3 PPO", "SBX PPO"), "crossq": ("SBX CrossQ",),
             "vectorised": ("lab ppo_baseline 1 env",), "memory": ("lab ppo_baseline",)}
SETTINGS = {
    "sac": f"256x256, batch 256, 1 update per step, learning starts {SAC_WARMUP}, timed steps {SAC_WARMUP}-{SAC_STEPS}",
    "ppo": f"1 env, 2048 steps/rollout, 10 epochs, minibatch 64, 64x64 tanh, {PPO_STEPS} steps",
    "crossq": f"critics 1024x1024 BatchRenorm, actor 256x256, policy delay 3, batch 256, learning starts "
              f"{SAC_WARMUP}, timed steps {CROSSQ_START}-{CROSSQ_END}",
    "agents": f"the agent's defaults; off-policy: learning starts {SAC_WARMUP}, timed steps {SAC_WARMUP}-"
              f"{SAC_WARMUP + AGENT_STEPS}; ppo: {PPO_STEPS} steps",
    "memory": f"1 env, the defaults (rollouts of 2048 steps, 32 minibatches, 10 epochs), {PPO_STEPS} steps",
    "vectorised": f"synchronous envs, {PPO_VECTORISED_STEPS} steps; ppo_baseline: the defaults (rollouts of 2048 "
                  f"steps per env, 32 minibatches, 10 epochs); :vectorised: 32 steps per env, 4 minibatches, 4 epochs",
}


def measure(function, seed: int, core: int, results) -> None:
    os.sched_setaffinity(0, [core])
    import torch
    torch.set_num_threads(1)
    results.put(function(seed))


def in_processes(jobs: list[tuple]) -> list[float]:
    """Run (function, seed, core) jobs at the same time, each in its own process; their steps/s in order."""
    context = multiprocessing.get_context("spawn")
    queues = [context.Queue() for _ in jobs]
    processes = [context.Process(target=measure, args=(*job, queue)) for job, queue in zip(jobs, queues)]
    for process in processes:
        process.start()
    values = [queue.get() for queue in queues]
    for process in processes:
        process.join()
    return values


PEER_MODULES = {"SB3": "stable_baselines3", "SBX": "sbx"}


def available(name: str) -> bool:
    """Lab contenders always; a peer's when its package imports (they are no dependencies of the lab)."""
    module = PEER_MODULES.get(name.split()[0])
    if module is None:
        return True
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def rate(steps_per_second: float) -> str:
    return f"{steps_per_second:.1f}" if steps_per_second < 100 else f"{steps_per_second:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=list(CONTENDERS), nargs="+", default=list(CONTENDERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scaling", action="store_true", help="also time 1 worker alone vs 2 workers at once")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--markdown", type=Path, help="also write the table, dated, with machine and command")
    args = parser.parse_args()
    core = sorted(os.sched_getaffinity(0))[0]
    figures = {}
    for group in args.only:
        contenders = {name: fn for name, fn in CONTENDERS[group].items() if available(name)}
        samples = {name: [] for name in contenders}
        for repeat in range(args.repeats):
            for name, function in contenders.items():
                samples[name].append(in_processes([(function, repeat, core)])[0])
                print(f"  {name:<18} repeat {repeat + 1}: {samples[name][-1]:8.1f} steps/s", flush=True)
        figures[group] = samples
    if args.scaling:
        cores = sorted(os.sched_getaffinity(0))[:2]
        alone = in_processes([(lab_sac, 0, cores[0])])
        together = in_processes([(lab_sac, 0, cores[0]), (lab_sac, 1, cores[1])])
        figures["scaling"] = {"one worker": alone, "two workers": together}

    title = f"Throughput on {ENV}, one core each (median (min-max) of {args.repeats})"
    rows = ["| contender | settings | steps/s | vs fastest peer |", "|---|---|---|---|"]
    for group in args.only:
        samples = figures[group]
        references = [statistics.median(samples[name]) for name in REFERENCE.get(group, ()) if name in samples]
        reference = max(references, default=None)
        for name, values in samples.items():
            median = statistics.median(values)
            ratio = f"{median / reference:.2f}x" if reference else "-"
            spread = f"{rate(min(values))}-{rate(max(values))}"
            rows.append(f"| {name} | {SETTINGS[group]} | {rate(median)} ({spread}) | {ratio} |")
    if args.scaling:
        alone, together = figures["scaling"]["one worker"][0], sum(figures["scaling"]["two workers"])
        rows += ["", f"lab sac_baseline, one worker alone: {alone:.0f} steps/s; two workers on two cores: "
                     f"{together:.0f} steps/s in total ({together / alone:.2f}x)"]
    print(f"\n## {title}\n\n" + "\n".join(rows))
    if args.markdown:
        write_markdown(args.markdown, title, "\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
