"""The agents, by name, and the interface every one of them implements.

Each agent is one module in this package that defines
- `Hyperparameters`: a dataclass, one commented field per hyperparameter, with the agent's defaults;
- `PRESETS`: named sets of hyperparameter overrides (may be empty);
- `SEARCH_SPACE`: hypertune.py's default search, {name: "LOW:HIGH[:log|:int]"}, its sources in a comment;
- `Agent`, with this interface (tensors in, tensors out; an agent never touches an environment):

    agent = Agent(observation_space, action_space, num_envs=1, device="cpu", seed=0,
                  total_steps=100_000, **hyperparameter_overrides)
    agent.h                                   # the Hyperparameters instance in use
    action = agent.act(obs, explore=True)     # obs [num_envs, *obs_shape] -> actions within the bounds
    agent.observe(next_obs, reward, terminated, truncated)   # the outcome of the last act(explore=True)
    metrics = agent.update()                  # learns if it is time to; a dict of 0-d tensors, or None
    agent.diagnostics()                       # costlier health figures (dormant neurons...), for logging steps
    agent.reset_evaluation()                  # optional, for an agent whose acting has a state (a memory): the
                                              # next act(explore=False) starts an evaluation episode afresh
    state = agent.state_dict(); agent.load_state_dict(state)  # everything needed to resume exactly
    policy = agent.policy_state_dict(); agent.load_policy_state_dict(policy)  # the networks only (and what
                                              # acting needs besides, e.g. PPO's observation statistics)

`next_obs` given to `observe` is the true observation that followed the action, also when the episode
ended (then the runner resets the environment and passes the reset observation to the next `act`): an agent
with a memory resets it from `observe`'s flags, for training; evaluation tells it by `reset_evaluation()`.
`terminated` means the MDP ended (no bootstrap); `truncated` means a time limit cut it (bootstrap).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import typing

from lab import UsageError

AGENTS = ("sac_baseline", "ppo_baseline", "ppo_recurrent", "crossq", "sac_crossq_bro", "crossq_cem")
ALIASES = {"sac_crossq": "crossq"}  # the seed's names the runners accept


def closest(name: str, choices) -> str:
    """A hint naming the valid choices closest to a mistyped name."""
    choices = list(choices)
    near = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f"did you mean {', '.join(near)}?" if near else f"valid: {', '.join(choices)}"


def agent_module(name: str):
    """The module of the agent called `name` ('sac_baseline'), or a UsageError naming the valid ones."""
    if name not in AGENTS:
        raise UsageError(f"unknown agent '{name}'; {closest(name, AGENTS)} (agents: {', '.join(AGENTS)})")
    return importlib.import_module(f"agents.{name}")


def split_preset(spec: str) -> tuple[str, str | None]:
    """'sac_baseline:droq' -> ('sac_baseline', 'droq'); a plain name has no preset."""
    name, _, preset = spec.partition(":")
    return name, preset or None


def _parse_value(agent: str, key: str, kind: type, text: str):
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        raise UsageError(f"hyperparameter {key} of {agent} expects a {kind.__name__}, got '{text}'") from None


def hyperparameter_types(module) -> dict[str, type]:
    """Field name -> Python type of an agent module's Hyperparameters."""
    hints = typing.get_type_hints(module.Hyperparameters)
    return {f.name: hints[f.name] for f in dataclasses.fields(module.Hyperparameters)}


def resolve_hyperparameters(spec: str, settings: list[str] | dict | None = None) -> dict:
    """The overrides for agent `spec` ('name' or 'name:preset') with `settings` applied on top.

    `settings` is a list of 'key=value' strings (as given to --set) or a dict; every key is checked against
    the agent's dataclass and every value converted to the field's type. Returns only the overridden keys.
    """
    name, preset = split_preset(spec)
    module = agent_module(name)
    overrides: dict = {}
    if preset is not None:
        if preset not in module.PRESETS:
            hint = closest(preset, module.PRESETS) if module.PRESETS else "it has none"
            raise UsageError(f"unknown preset '{preset}' of {name}; {hint}")
        overrides.update(module.PRESETS[preset])
    types = hyperparameter_types(module)
    items = settings.items() if isinstance(settings, dict) else [_split_setting(s) for s in settings or []]
    for key, value in items:
        if key not in types:
            raise UsageError(f"unknown hyperparameter '{key}' for {name}; {closest(key, types)}")
        kind = types[key]
        if isinstance(value, str):
            value = _parse_value(name, key, kind, value)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UsageError(f"hyperparameter {key} of {name} expects a {kind.__name__}, got {value!r}")
        overrides[key] = value
    module.Hyperparameters(**overrides).check()
    return overrides


def _split_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set expects key=value, got '{text}'")
    return key.strip(), value.strip()


def make_agent(spec: str, observation_space, action_space, num_envs=1, device="cpu", seed=0, total_steps=100_000,
               settings: list[str] | dict | None = None):
    """Build the agent `spec` ('name' or 'name:preset') with hyperparameter `settings` applied."""
    overrides = resolve_hyperparameters(spec, settings)
    module = agent_module(split_preset(spec)[0])
    return module.Agent(observation_space, action_space, num_envs=num_envs, device=device, seed=seed,
                        total_steps=total_steps, **overrides)


def describe_hyperparameters(name: str) -> list[tuple[str, str, object, str]]:
    """(field, type, default, comment) for each hyperparameter, the comment read from the dataclass source."""
    import inspect
    module = agent_module(name)
    comments = {}
    # A dataclass may extend its parent agent's: read the parents' comments first, so the agent's own win.
    for cls in reversed(module.Hyperparameters.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        for line in inspect.getsource(cls).splitlines():
            field_name, colon, rest = line.strip().partition(":")
            if colon and "#" in rest:
                comments[field_name] = rest.split("#", 1)[1].strip()
    defaults = module.Hyperparameters()
    return [(key, kind.__name__, getattr(defaults, key), comments.get(key, ""))
            for key, kind in hyperparameter_types(module).items()]
