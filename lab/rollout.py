"""The one rollout loop: train one agent on one environment for one seed, evaluate it, log it, checkpoint it.

Every runner calls `train(spec)`; they differ only in how they schedule calls (processes, trials, vectorised
environments). The environments are a vector environment with autoreset disabled: the loop resets finished
sub-environments itself, so the observation an agent is given as `next_obs` is always the true one that
followed its action, and a reset's observation only ever reaches `act`.

Data stays on the agent's device: a Gymnasium (numpy) vector environment's observations, rewards and flags
cross to it once per step, its actions back once; a batched torch environment (envs/torch_envs.py) steps on
the device itself and nothing crosses. Episode returns are gathered on the device and read on logging steps.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pickle
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from agents import make_agent, split_preset
from envs import is_torch_env, make_env, make_restorable_env
from envs.torch_envs import TorchVectorEnv
from lab import UsageError
from lab.policy import BEST, POLICY, load_networks, read_policy, save_policy
from lab.progress import PROGRESS_S, PlainLines, Progress

# --compile: torch.compile's mode for each choice ('reduce-overhead' is inductor plus CUDA graphs).
COMPILE_MODES = {"off": None, "on": "default", "cudagraphs": "reduce-overhead"}
EVAL_SEED_OFFSET = 1_000_003  # evaluation episodes use seeds disjoint from training ones (and across runs)
CHECKPOINT = "checkpoint.pt"
VIDEO = "video.gif"
RESULT = "result.json"


@dataclasses.dataclass
class RunSpec:
    agent: str  # agent name, optionally with a preset: 'sac_baseline' or 'sac_baseline:droq'
    env: str  # Gymnasium id
    seed: int
    steps: int  # environment steps (transitions, summed over sub-environments)
    settings: dict = dataclasses.field(default_factory=dict)  # hyperparameter overrides by name
    run_dir: str | None = None  # this run's directory (logs, checkpoint, result); None: write nothing
    device: str = "cpu"
    num_envs: int = 1  # copies of the environment stepped as one vector environment
    vectorisation: str = "sync"  # Gymnasium environments in this process ('sync') or one process each ('async')
    compile: str = "off"  # a key of COMPILE_MODES: torch.compile the agent's networks, with CUDA graphs or not
    log: bool = True  # TensorBoard events in run_dir
    log_every: int = 1_000  # steps between reads of the agent's metrics (each read waits for the device)
    eval_every: int = 0  # steps between evaluations; 0: only the final one
    eval_episodes: int = 10
    checkpoint_every: int = 0  # steps between checkpoints (cutting the running episodes where the environments'
    # state cannot be saved); 0: none
    resume: bool = False  # continue from run_dir's checkpoint when there is one
    progress: bool = True  # print progress lines (at each evaluation, and periodically) when no one else shows it
    video_episodes: int = 0  # episodes of the final policy recorded to video.gif (and TensorBoard); 0: none
    init_from: str | None = None  # a policy file whose networks the agent starts from (not when resuming)

    @property
    def label(self) -> str:
        return f"{self.agent} {self.env} seed {self.seed}"


class TrainingDiverged(RuntimeError):
    """An agent's loss or metric became NaN or infinite."""


def make_vector_env(env_id: str, num_envs: int, device, vectorisation: str = "sync") -> gym.vector.VectorEnv:
    """A batched torch environment on `device` when `env_id` has one, else `num_envs` Gymnasium copies."""
    if is_torch_env(env_id):
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", device=device)
    vector_class = gym.vector.AsyncVectorEnv if vectorisation == "async" else gym.vector.SyncVectorEnv
    return vector_class([functools.partial(make_restorable_env, env_id)] * num_envs,
                        autoreset_mode=gym.vector.AutoresetMode.DISABLED)


def env_rng_state(envs) -> list:
    """The environments' random streams (what their next resets draw from), for a checkpoint."""
    if isinstance(envs, TorchVectorEnv):
        return [envs.generator.get_state()]
    return envs.get_attr("np_random")


def load_env_rng_state(envs, state: list) -> None:
    if isinstance(envs, TorchVectorEnv):
        envs.generator.set_state(state[0])
    else:
        envs.set_attr("np_random", state)


def exact_env_state(envs) -> list | None:
    """What, besides their random streams, decides the environments' future (envs.ExactState); None when one of
    them cannot be saved: then a checkpoint ends the running episodes instead."""
    if isinstance(envs, TorchVectorEnv):
        return [envs.exact_state]
    states = envs.get_attr("exact_state")
    return None if any(state is None for state in states) else list(states)


def load_exact_env_state(envs, states: list) -> None:
    if isinstance(envs, TorchVectorEnv):
        envs.exact_state = states[0]
    else:
        envs.set_attr("exact_state", states)


def evaluate(agent, env: gym.Env, episodes: int, seed: int, device, frames: list | None = None) -> float:
    """Mean return of `episodes` episodes of the deterministic policy, on an environment used for nothing else;
    given `frames`, every rendered frame is appended to it."""
    return float(np.mean(episode_returns(agent, env, episodes, seed, device, frames)))


def host_action(action, index: int | None = None):
    """An agent's batched action (a tensor, or a tuple or dict of them for a composite space) as the NumPy
    structure an environment takes: the whole batch, or environment `index`'s alone."""
    if isinstance(action, tuple):
        return tuple(host_action(part, index) for part in action)
    if isinstance(action, dict):
        return {key: host_action(part, index) for key, part in action.items()}
    array = action.cpu().numpy()
    return array if index is None else array[index]


def episode_returns(agent, env: gym.Env, episodes: int, seed: int, device, frames: list | None = None) -> list[float]:
    """The return of each of `episodes` episodes of the deterministic policy, episode i reset with seed + i."""
    returns = []
    reset_memory = getattr(agent, "reset_evaluation", None)  # only an agent with a memory has one
    for episode in range(episodes):
        if reset_memory is not None:
            reset_memory()
        obs, _ = env.reset(seed=seed + episode)
        if frames is not None:
            frames.append(env.render())
        total, done = 0.0, False
        while not done:
            action = agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0), explore=False)
            obs, reward, terminated, truncated, _ = env.step(host_action(action, 0))
            if frames is not None:
                frames.append(env.render())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def hyperparameter_table(spec: RunSpec, hyperparameters: dict) -> str:
    rows = [f"|{key}|{value}|" for key, value in {**dataclasses.asdict(spec), **hyperparameters}.items()]
    return "|parameter|value|\n|-|-|\n" + "\n".join(rows)


def check_finite(metrics: dict[str, float], step: int, spec: RunSpec) -> None:
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise TrainingDiverged(f"{spec.label}: {key} became {value} at step {step}; the update diverged "
                                   f"(try a lower learning rate)")


class EpisodeLog:
    """Returns and lengths of the episodes that the environments end, gathered on the device and read only when
    asked. An episode cut by a checkpoint is no episode of the task: it is dropped, not logged. A checkpoint that
    saves the environments' state saves the running sums too (`running`)."""

    def __init__(self, num_envs: int, device):
        self.episode_return = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.episode_length = torch.zeros(num_envs, dtype=torch.long, device=device)
        self.ended: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(self, step: int, reward: torch.Tensor, ended: torch.Tensor, cut: bool = False) -> None:
        """ended: the episodes the environments ended (terminated or truncated); cut: every episode restarts."""
        self.episode_return += reward
        self.episode_length += 1
        self.ended.append((step, ended, self.episode_return.clone(), self.episode_length.clone()))
        restarted = torch.ones_like(ended) if cut else ended
        self.episode_return = torch.where(restarted, 0.0, self.episode_return)
        self.episode_length = torch.where(restarted, 0, self.episode_length)

    @property
    def running(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.episode_return, self.episode_length

    @running.setter
    def running(self, sums: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.episode_return, self.episode_length = sums

    def read(self) -> list[tuple[int, float, int]]:
        """(step, return, length) of every episode that ended since the last read: one host read in all."""
        if not self.ended:
            return []
        steps = [step for step, *_ in self.ended]
        done, returns, lengths = (torch.stack(column).cpu() for column in list(zip(*self.ended))[1:])
        self.ended = []
        rows, columns = done.nonzero(as_tuple=True)
        return [(steps[row], float(returns[row, column]), int(lengths[row, column]))
                for row, column in zip(rows.tolist(), columns.tolist())]


def train(spec: RunSpec, on_eval: Callable[[int, float], bool] | None = None,
          on_progress: Callable[[Progress], None] | None = None) -> dict:
    """Train, evaluate and log one run; return its result record. `on_eval(step, mean_return)` is called after
    each evaluation, and training stops early (the record says `stopped_at`) when it returns False.
    `on_progress(Progress)` is called every PROGRESS_S seconds and at each evaluation (default: plain lines
    when spec.progress)."""
    device = torch.device(spec.device)
    run_dir = Path(spec.run_dir) if spec.run_dir else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    envs = make_vector_env(spec.env, spec.num_envs, device, spec.vectorisation)
    on_device = isinstance(envs, TorchVectorEnv)
    eval_env = make_env(spec.env)
    agent = make_agent(spec.agent, envs.single_observation_space, envs.single_action_space, num_envs=spec.num_envs,
                       device=device, seed=spec.seed, total_steps=spec.steps, settings=spec.settings)
    compile_mode = COMPILE_MODES[spec.compile]
    if compile_mode is not None:
        agent.compile(compile_mode)
    state = {"step": 0, "episodes": [], "evaluations": [], "wall_s": 0.0, "best_return": -math.inf}
    eval_seed = EVAL_SEED_OFFSET + spec.seed * spec.eval_episodes
    checkpoint_path = run_dir / CHECKPOINT if run_dir else None
    resumed = spec.resume and checkpoint_path is not None and checkpoint_path.exists()
    if spec.resume and not resumed and run_dir is not None:
        for stale in run_dir.glob("events.out.tfevents.*"):  # from an attempt that never reached a checkpoint
            stale.unlink()
    if resumed:
        checkpoint = read_checkpoint(checkpoint_path, device)
        agent.load_state_dict(checkpoint["agent"])
        state = checkpoint["state"]
        # A checkpoint written before best.pt existed: its best is its best evaluation.
        state.setdefault("best_return", max((value for _, value in state["evaluations"]), default=-math.inf))
        if "exact_envs" in checkpoint:  # taken between two steps, the episodes running: they go on
            envs.reset()  # a wrapper may insist on a reset before the first step; its draws are overwritten
            load_env_rng_state(envs, checkpoint["env_rng"])
            load_exact_env_state(envs, checkpoint["exact_envs"])
            obs = checkpoint["obs"]
        else:
            load_env_rng_state(envs, checkpoint["env_rng"])
            obs, _ = envs.reset()  # the reset the checkpoint was taken just before
    else:
        obs, _ = envs.reset(seed=spec.seed * spec.num_envs)  # sub-env i gets seed + i: no two runs share one
        if spec.init_from:
            load_networks(agent, read_policy(spec.init_from), spec.init_from)

    def keep_policy(name: str, step: int, eval_return: float) -> None:
        if run_dir is not None:
            save_policy(run_dir / name, agent, spec.agent, spec.env, envs.single_observation_space,
                        envs.single_action_space, spec.seed, step, eval_return)

    def evaluation(step: int) -> float:
        """Evaluate, record, keep the policy when it is the best so far."""
        mean_return = evaluate(agent, eval_env, spec.eval_episodes, eval_seed, device)
        state["evaluations"].append((step, mean_return))
        if mean_return > state["best_return"]:
            state["best_return"] = mean_return
            keep_policy(BEST, step, mean_return)
        return mean_return

    writer = None
    if spec.log and run_dir is not None:
        from torch.utils.tensorboard import SummaryWriter
        # Events after the checkpoint's step came from the interrupted attempt; those at it were logged first.
        writer = SummaryWriter(str(run_dir), purge_step=state["step"] + 1 if resumed else None)
        if not resumed:
            writer.add_text("hyperparameters", hyperparameter_table(spec, agent.h.as_dict()))

    def to_device(array, dtype=torch.float32):
        return torch.as_tensor(array, dtype=dtype, device=device)

    def record_episodes() -> None:
        for episode in episodes.read():
            state["episodes"].append(episode)
            if writer:
                writer.add_scalar("charts/episodic_return", episode[1], episode[0])
                writer.add_scalar("charts/episodic_length", episode[2], episode[0])

    if on_progress is None and spec.progress:
        on_progress = PlainLines().update

    def report(evaluated: bool) -> None:
        recent = [r for _, r, _ in state["episodes"][-10:]]  # as recorded at the last logging step: no device read
        sps = (step - step_at_start) / (time.perf_counter() - started + 1e-9)
        on_progress(Progress(spec.label, step, spec.steps, sps, float(np.mean(recent)) if recent else None,
                             state["evaluations"][-1][1] if state["evaluations"] else None, evaluated))

    step = state["step"]
    eval_every = spec.eval_every or spec.steps
    last_eval = state["evaluations"][-1][0] if state["evaluations"] else 0
    next_eval = (last_eval // eval_every + 1) * eval_every
    next_checkpoint = step + spec.checkpoint_every if spec.checkpoint_every and checkpoint_path else math.inf
    # Where the environments' state can be saved, a checkpoint changes nothing in training; elsewhere it cuts.
    saves_envs = next_checkpoint < math.inf and exact_env_state(envs) is not None
    episodes = EpisodeLog(spec.num_envs, device)
    if resumed and "exact_envs" in checkpoint:
        episodes.running = checkpoint["episode_log"]
    stopped_at = None
    started, step_at_start = time.perf_counter(), step
    obs_t = to_device(obs)
    metrics = None  # the latest update's, until they are logged
    next_report = time.monotonic()
    if spec.init_from and not resumed:  # where the saved networks start: the first point of the curve
        start_return = evaluation(0)
        if writer:
            writer.add_scalar("eval/return", start_return, 0)

    def take_checkpoint(at: int, obs: torch.Tensor | None = None) -> None:
        """Save; given the observation `obs`, also the environments' exact state and the running episodes."""
        nonlocal started, step_at_start, next_checkpoint
        record_episodes()
        state["step"], state["wall_s"] = at, state["wall_s"] + time.perf_counter() - started
        started, step_at_start = time.perf_counter(), at
        if writer:
            writer.flush()  # every event up to the checkpoint is on disk before it is
        running = None if obs is None else {"exact_envs": exact_env_state(envs), "obs": obs,
                                            "episode_log": episodes.running}
        save_checkpoint(checkpoint_path, agent, state, envs, running)
        next_checkpoint = at + spec.checkpoint_every

    try:
        while step < spec.steps:
            action = agent.act(obs_t)
            if on_device:
                next_obs, reward, terminated, truncated, _ = envs.step(action)
            else:
                next_obs, reward, terminated, truncated, _ = envs.step(host_action(action))
                done_host = terminated | truncated
                next_obs, reward = to_device(next_obs), to_device(reward)
                terminated, truncated = to_device(terminated, torch.bool), to_device(truncated, torch.bool)
            step += spec.num_envs
            ended = terminated | truncated  # by the environments themselves: the episodes the log counts
            checkpointing = next_checkpoint <= step < spec.steps  # none at the end: the run is complete
            cutting = checkpointing and not saves_envs
            if cutting:  # the checkpoint ends every episode as a time limit would: then all restart together
                truncated = torch.ones_like(truncated)
            agent.observe(next_obs, reward, terminated, truncated)
            metrics = agent.update() or metrics
            done = terminated | truncated
            episodes.add(step, reward, ended, cut=cutting)

            if step % spec.log_every < spec.num_envs or step >= spec.steps:
                record_episodes()
                if metrics is not None:
                    values = {key: float(value) for key, value in {**metrics, **agent.diagnostics()}.items()}
                    check_finite(values, step, spec)
                    metrics = None
                    if writer:
                        for key, value in values.items():
                            writer.add_scalar(f"agent/{key}", value, step)
                if writer:
                    writer.add_scalar("charts/sps", (step - step_at_start) / (time.perf_counter() - started + 1e-9),
                                      step)
            if step >= next_eval or step >= spec.steps:
                next_eval += eval_every
                record_episodes()
                mean_return = evaluation(step)
                if writer:
                    writer.add_scalar("eval/return", mean_return, step)
                if on_progress is not None:
                    report(evaluated=True)
                if on_eval is not None and not on_eval(step, mean_return) and step < spec.steps:
                    stopped_at = step
                    break

            if cutting:  # before the reset: the reset draws from the envs' RNG, which the checkpoint holds
                take_checkpoint(step)
            if on_device:  # the mask is applied on the device: no host read of `done`
                next_obs, _ = envs.reset(options={"reset_mask": done})
            elif done_host.any() or cutting:
                reset_obs, _ = envs.reset(options={"reset_mask": done_host | cutting})
                next_obs = to_device(reset_obs)
            obs_t = next_obs
            if checkpointing and saves_envs:  # after the resets, with the observation the next step acts on
                take_checkpoint(step, obs_t)
            if on_progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_S
                report(evaluated=False)
        record_episodes()
    except BaseException:
        if writer:
            writer.close()  # an interrupted or crashed run still leaves readable events
        if isinstance(envs, gym.vector.AsyncVectorEnv):
            # Their processes may be gone already (Ctrl-C reaches them too): asking them to close would
            # raise, in place of the error being unwound.
            envs.close(terminate=True)
        raise
    finally:
        state["step"], state["wall_s"] = step, state["wall_s"] + time.perf_counter() - started
        envs.close()
        eval_env.close()

    recent = [r for _, r, _ in state["episodes"][-10:]]
    record = {
        "agent": spec.agent, "env": spec.env, "seed": spec.seed, "steps": step,
        "final_return": state["evaluations"][-1][1],
        "train_return": float(np.mean(recent)) if recent else None,
        "wall_s": round(state["wall_s"], 3), "sps": round(step / max(state["wall_s"], 1e-9), 1),
        "evaluations": state["evaluations"], "hyperparameters": agent.h.as_dict(),
    }
    if stopped_at is not None:
        record["stopped_at"] = stopped_at
    if spec.video_episodes and run_dir is not None:
        try:
            record_video(agent, spec.env, spec.video_episodes, eval_seed, device, run_dir / VIDEO, writer, step)
        except Exception as error:  # a machine that cannot render must not cost the run its results
            print(f"[{spec.label}] no video: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
    if writer:
        writer.add_hparams({k: v for k, v in {**record["hyperparameters"], "env": spec.env, "seed": spec.seed}.items()
                            if isinstance(v, (int, float, str, bool))},
                           {"final_return": record["final_return"]}, run_name=".", global_step=step)
        writer.close()
    if run_dir is not None:
        keep_policy(POLICY, step, record["final_return"])
        write_json(run_dir / RESULT, record)
        if stopped_at is None and checkpoint_path.exists():  # a finished run needs none, and it can be large
            checkpoint_path.unlink()
    return record


def record_video(agent, env_id: str, episodes: int, seed: int, device, path: Path, writer=None, step: int = 0) -> None:
    """`episodes` episodes of the deterministic policy on `env_id`, from the seed `seed` on, as an animated GIF at
    `path` and, given a `writer`, as TensorBoard's `eval/video`. Frames are halved in size and every other one
    kept (25 per second): a Pendulum episode is then about 100 small frames."""
    from PIL import Image
    env = make_env(env_id, render_mode="rgb_array")
    frames = []
    try:
        evaluate(agent, env, episodes, seed, device, frames)
    finally:
        env.close()
    images = [Image.fromarray(frame).reduce(2) for frame in frames[::2]]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
    if writer:
        # What SummaryWriter.add_video writes, a GIF in an image summary, without the moviepy it needs to
        # encode one: Pillow (a dependency of matplotlib) has encoded it already.
        from tensorboard.compat.proto.summary_pb2 import Summary
        image = Summary.Image(height=images[0].height, width=images[0].width, colorspace=3,
                              encoded_image_string=path.read_bytes())
        writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag="eval/video", image=image)]), step)


def read_checkpoint(path: Path, device) -> dict:
    """A run's checkpoint; one that cannot be read (cut short by a full disk or a killed copy) is a UsageError
    that says what to do."""
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as error:
        raise UsageError(unreadable_checkpoint(path, error)) from None


def check_checkpoint(path: Path) -> None:
    """Cheaply (the zip's directory only, not the data) that a checkpoint is whole enough to be read."""
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError) as error:
        raise UsageError(unreadable_checkpoint(path, error)) from None


def unreadable_checkpoint(path: Path, error: BaseException) -> str:
    reason = (str(error).splitlines() or [type(error).__name__])[0][:100]
    return (f"the run's checkpoint {path} is unreadable ({reason}): it was cut short (a full disk, a killed "
            f"copy?); delete it to train that seed again from the start, then --resume again")


def save_checkpoint(path: Path, agent, state: dict, envs, running: dict | None = None) -> None:
    """A plain dict with everything needed to continue exactly, written atomically; `running`: the running
    episodes' (environments' exact state, observation, sums), where they are not cut."""
    checkpoint = {"agent": agent.state_dict(), "state": state, "env_rng": env_rng_state(envs), **(running or {})}
    temporary = path.with_suffix(".tmp")
    torch.save(checkpoint, temporary)
    os.replace(temporary, path)


def write_json(path: Path, data) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def run_dir_name(agent_spec: str) -> str:
    """An agent spec as a directory name ('sac_baseline:droq' -> 'sac_baseline-droq')."""
    name, preset = split_preset(agent_spec)
    return f"{name}-{preset}" if preset else name
