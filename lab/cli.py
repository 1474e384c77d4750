"""What the runners share on the command line: options, their validation, and the plan of runs they make."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

from agents import (AGENTS, ALIASES, agent_module, describe_hyperparameters, make_agent, resolve_hyperparameters,
                    split_preset)
from envs import SUITES, make_env, resolve_envs
from lab import UsageError
from lab.policy import check_env, load_networks, read_policy
from lab.rollout import CHECKPOINT, COMPILE_MODES, RunSpec, check_checkpoint, run_dir_name

RUNS = Path("runs")
BASELINES = RUNS / "baseline"  # runs kept as references: plot.py overlays them on the pictures of others
CONFIG = "config.json"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message):
        raise UsageError(message)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{text}'") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


CLASSIC_POLICY_GRADIENTS = ("ppo_baseline:a2c", "ppo_baseline:vpg")  # presets, yet algorithms of their own


def quick_check_agents() -> list[str]:
    """Every agent, as the quick check runs it: with its `quick` preset where it has one (small networks for
    the compute-heavy agents, so that every code path runs in seconds), and the classic policy gradients."""
    agents = [f"{name}:quick" if "quick" in agent_module(name).PRESETS else name for name in AGENTS]
    return agents + list(CLASSIC_POLICY_GRADIENTS)


def add_run_arguments(parser: argparse.ArgumentParser, device: str = "cpu") -> None:
    parser.add_argument("--agent", nargs="+", default=quick_check_agents(), metavar="AGENT",
                        help=f"agents to train, optionally with a preset (name:preset); "
                             f"default: all, as the quick check ({', '.join(quick_check_agents())})")
    parser.add_argument("--envs", nargs="+", default=["quick"], metavar="ENV",
                        help=f"Gymnasium ids and/or suites ({', '.join(SUITES)}); default: quick")
    parser.add_argument("--seeds", type=positive_int, default=1, help="seeds per environment: 0 .. N-1 (default 1)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="environment steps per run (default: each environment's budget)")
    parser.add_argument("--device", default=device, help=f"cpu, cuda, cuda:N or auto (default {device})")
    parser.add_argument("--cuda", dest="device", action="store_const", const="cuda", help="as --device cuda")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a hyperparameter (repeatable); checked against every agent's dataclass")
    parser.add_argument("--name", default=None, help="run name: logs go to runs/NAME (default: a timestamp)")
    parser.add_argument("--log", action=argparse.BooleanOptionalAction, default=True,
                        help="write TensorBoard events (default on)")
    parser.add_argument("--log-every", type=positive_int, default=1000,
                        help="steps between reads of the agent's metrics into the logs (default 1000)")
    parser.add_argument("--eval-every", type=non_negative_int, default=None,
                        help="steps between evaluations (default: a tenth of the budget; 0: only at the end)")
    parser.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation (default 10)")
    parser.add_argument("--checkpoint-every", type=non_negative_int, default=50_000,
                        help="steps between checkpoints; each ends the current episodes as a time limit would "
                             "(default 50000; 0: none)")
    parser.add_argument("--resume", default=None, metavar="RUN",
                        help="continue runs/RUN (or a run directory): finished runs are kept, the others continue "
                             "from their checkpoints; the run's stored options are used")
    parser.add_argument("--compile", choices=list(COMPILE_MODES), default="off",
                        help="torch.compile the agent's networks (on), and on CUDA also capture them as CUDA graphs "
                             "(cudagraphs); default off: on a CPU compiling is slower (see the README)")
    parser.add_argument("--init-from", default=None, metavar="POLICY",
                        help="start every run from the networks of this policy file (a run's policy.pt or best.pt; "
                             "same agent, same spaces): fine-tuning, transfer, curricula")
    parser.add_argument("--video", type=non_negative_int, default=0, metavar="EPISODES",
                        help="record this many episodes of each run's final policy to its video.gif and "
                             "TensorBoard (default 0: none)")
    parser.add_argument("--baseline", action="store_true",
                        help="write the run under runs/baseline/ instead of runs/: a reference that plot.py "
                             "overlays on the pictures of later runs on the same environments")
    parser.add_argument("--list", action="store_true", help="list agents, presets, hyperparameters and suites")


BACKENDS = ("local", "ray")
RAY_OPTIONS = ("address", "cpus_per_run", "gpus_per_run", "retries")  # the options of --backend ray only


def add_backend_arguments(parser: argparse.ArgumentParser, unit: str, retries: bool) -> None:
    """Where the work runs: --backend and the Ray options. `unit` names what one task is (run, trial)."""
    group = parser.add_argument_group("where the work runs")
    group.add_argument("--backend", choices=BACKENDS, default="local",
                       help=f"local: a process per {unit} on this machine (default); ray: a Ray task per {unit}, "
                            f"on the cluster at --address (needs: pip install -r requirements-ray.txt)")
    group.add_argument("--address", default=None,
                       help="Ray: the cluster to join, e.g. auto (this node's), HEAD_IP:6379 or ray://HEAD_IP:10001; "
                            "default: a local Ray instance on this machine's cores")
    group.add_argument("--cpus-per-run", type=positive_int, default=None,
                       help=f"Ray: CPUs each {unit} asks for, and its torch threads (default 1)")
    group.add_argument("--gpus-per-run", type=non_negative_float, default=None,
                       help=f"Ray: GPUs each {unit} asks for; a fraction shares one, e.g. 0.25 "
                            f"(default: 0, and 1 with --device cuda)")
    if retries:
        group.add_argument("--retries", type=non_negative_int, default=None,
                           help=f"Ray: times a {unit} is retried when its worker or node dies, from its last "
                                f"checkpoint (default 2)")


def check_backend(args) -> None:
    """Ray options only with --backend ray; there: Ray installed, the address, the resources and the device
    checked as far as they can be before joining, and the defaults filled in."""
    given = [f"--{name.replace('_', '-')}" for name in RAY_OPTIONS if getattr(args, name, None) is not None]
    if args.backend != "ray":
        if given:
            raise UsageError(f"{', '.join(given)}: only with --backend ray (got --backend {args.backend})")
        return
    from lab.ray_backend import check_address, check_request, import_ray
    import_ray()
    check_address(args.address)
    args.cpus_per_run = args.cpus_per_run or 1
    if hasattr(args, "retries") and args.retries is None:
        args.retries = 2
    if not args.resume:  # a resumed run's device is in its config, checked when its tasks are asked for
        check_request(args, resolve_device(args.device, here=False))


def resolve_device(text: str, here: bool = True) -> str:
    """The device of --device, checked against this machine's (`here`), or, for runs on Ray's nodes, a device
    any node's task can be given: cpu or cuda (its own GPUs, as Ray assigns them)."""
    if not here and text == "auto":
        raise UsageError("--device auto: under Ray the device is the nodes', not this machine's; say cpu or cuda")
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown device '{text}'; valid: cpu, cuda, cuda:N, auto") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"unknown device '{text}'; valid: cpu, cuda, cuda:N, auto")
    if not here:
        if device.index is not None:
            raise UsageError(f"--device {text}: under Ray a run sees only the GPUs it was given; use --device cuda")
        return text
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{text}' asked for, but this machine has no CUDA device; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device '{text}' asked for, but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s): cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return text


def check_compile(compile_option: str, device: str) -> None:
    if compile_option == "cudagraphs" and torch.device(device).type != "cuda":
        raise UsageError(f"--compile cudagraphs needs a CUDA device, got --device {device}; "
                         f"use --compile on (or off) on a CPU")


def new_run_root(name: str | None, runs_root: Path = RUNS) -> Path:
    """runs/NAME for --name NAME (default: a timestamp), which must not exist yet."""
    name = name or datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if "/" in name or name in ("", ".", ".."):
        raise UsageError(f"--name must be a plain directory name, got '{name}'")
    run_root = runs_root / name
    if run_root.exists():
        raise UsageError(f"{run_root} already exists; choose another --name, or continue it with --resume {name}")
    return run_root


def canonical_agents(specs: list[str]) -> list[str]:
    """The agent specs with the seed's names (ALIASES) replaced by the lab's, saying so once for each."""
    canonical = []
    for spec in specs:
        name, preset = split_preset(spec)
        if name in ALIASES:
            print(f"note: {name} is the seed's name for {ALIASES[name]}; running {ALIASES[name]}", flush=True)
            spec = ALIASES[name] + (f":{preset}" if preset else "")
        canonical.append(spec)
    return canonical


def check_agents_drive(env_ids, settings: dict, init_from: str | None = None) -> None:
    """Build each agent (`settings`: agent name -> hyperparameters) for each environment, so that an agent that
    cannot drive one fails here, not in a worker; with `init_from`, also load that policy file's networks."""
    policy = read_policy(init_from) if init_from else None
    for env_id in env_ids:
        env = make_env(env_id)
        if policy is not None:
            check_env(policy, env_id, init_from)
        for agent, hyperparameters in settings.items():
            built = make_agent(agent, env.observation_space, env.action_space, device="cpu", total_steps=1,
                               settings=hyperparameters)
            if policy is not None:
                saved = split_preset(policy["agent"])[0]
                if saved != split_preset(agent)[0]:
                    raise UsageError(f"--init-from {init_from} holds a {saved} policy; it cannot start {agent}")
                load_networks(built, policy, init_from)
        env.close()


def refuse_changed(args, parser, keys, kind: str) -> None:
    """--resume keeps the options a run or sweep (`kind`) was started with: any of `keys` given is refused."""
    given = [f"--{key.replace('_', '-')}" for key in keys
             if hasattr(args, key) and getattr(args, key) != parser.get_default(key)]
    if given:
        raise UsageError(f"--resume continues a {kind} with the options it was started with; drop {', '.join(given)}")


def resume_root(name: str, runs_root: Path, kind: str) -> Path:
    """The directory --resume NAME names (a path, or runs/NAME), which must hold a config.json."""
    run_root = Path(name) if Path(name).is_dir() else runs_root / name
    if not (run_root / CONFIG).exists():
        raise UsageError(f"cannot resume '{name}': no {CONFIG} in {run_root} (is it a {kind} directory?)")
    return run_root


def plan_runs(args, parser, runs_root: Path = RUNS) -> tuple[Path, list[RunSpec], dict]:
    """Validate every option and build the runs, before anything is written; returns (run dir, specs, config)."""
    if args.resume:
        return resume_plan(args, parser, runs_root)
    device = resolve_device(args.device, here=getattr(args, "backend", "local") == "local")
    check_compile(args.compile, device)
    budgets = resolve_envs(args.envs)
    agents = dict.fromkeys(canonical_agents(args.agent))
    settings = {agent: resolve_hyperparameters(agent, args.set) for agent in agents}
    check_agents_drive(budgets, settings, args.init_from)
    run_root = new_run_root(args.name, runs_root / BASELINES.name if args.baseline else runs_root)
    config = {"agents": list(settings), "envs": {env_id: args.steps or steps for env_id, steps in budgets.items()},
              "seeds": args.seeds, "device": device, "settings": settings,
              "log": args.log, "log_every": args.log_every,
              "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
              "checkpoint_every": args.checkpoint_every, "num_envs": getattr(args, "num_envs", 1),
              "vectorisation": getattr(args, "vectorisation", "sync"), "compile": args.compile, "video": args.video,
              "init_from": str(Path(args.init_from).resolve()) if args.init_from else None, "command": sys.argv}
    return run_root, specs_from_config(run_root, config, resume=False), config


def specs_from_config(run_root: Path, config: dict, resume: bool) -> list[RunSpec]:
    specs = []
    for agent in config["agents"]:
        for env_id, steps in config["envs"].items():
            for seed in range(config["seeds"]):
                eval_every = config["eval_every"] if config["eval_every"] is not None else max(1, steps // 10)
                specs.append(RunSpec(
                    agent=agent, env=env_id, seed=seed, steps=steps, settings=config["settings"][agent],
                    run_dir=str(run_root / run_dir_name(agent) / env_id / f"seed_{seed}"), device=config["device"],
                    log=config["log"], log_every=config["log_every"], eval_every=eval_every,
                    eval_episodes=config["eval_episodes"],
                    checkpoint_every=config["checkpoint_every"], num_envs=config.get("num_envs", 1),
                    vectorisation=config.get("vectorisation", "sync"), compile=config.get("compile", "off"),
                    video_episodes=config.get("video", 0), init_from=config.get("init_from"), resume=resume))
    return specs


# Options that define the runs: a resumed run keeps those it was started with.
RUN_OPTIONS = ("agent", "envs", "seeds", "steps", "device", "set", "name", "log", "log_every", "eval_every",
               "eval_episodes", "checkpoint_every", "num_envs", "vectorisation", "compile", "video",
               "baseline", "init_from")


def resume_plan(args, parser, runs_root: Path) -> tuple[Path, list[RunSpec], dict]:
    refuse_changed(args, parser, RUN_OPTIONS, "run")
    run_root = resume_root(args.resume, runs_root, "run")
    config_path = run_root / CONFIG
    try:
        config = json.loads(config_path.read_text())
        here = getattr(args, "backend", "local") == "local"
        check_compile(config.get("compile", "off"), resolve_device(config["device"], here))
        for agent, settings in config["settings"].items():
            resolve_hyperparameters(agent, settings)
        specs = specs_from_config(run_root, config, resume=True)
        for spec in specs:
            checkpoint = Path(spec.run_dir) / CHECKPOINT
            if checkpoint.exists():
                check_checkpoint(checkpoint)
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, UsageError):
            raise UsageError(f"cannot resume '{args.resume}': {error}") from None
        raise UsageError(f"cannot resume '{args.resume}': {config_path} is damaged ({error!r})") from None
    return run_root, specs, config


def listing() -> str:
    lines = []
    for name in AGENTS:
        module = agent_module(name)
        presets = ", ".join(f"{name}:{preset}" for preset in module.PRESETS) or "none"
        lines.append(f"{name}  (presets: {presets})")
        for key, kind, default, comment in describe_hyperparameters(name):
            lines.append(f"  {key:<26} {kind:<6} {default!s:<12} {comment}")
    lines.append("suites:")
    for suite, budgets in SUITES.items():
        lines.append(f"  {suite:<8} " + ", ".join(f"{env} ({steps} steps)" for env, steps in budgets.items()))
    return "\n".join(lines)


def exit_on_usage_error(main):
    """Run `main()`; a UsageError becomes one line on stderr and exit code 2."""
    try:
        return main()
    except UsageError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        return 2

