"""The shared rollout loop: what it gives agents at episode ends, determinism, exact resume, divergence."""

import dataclasses

import pytest
import torch

import lab.rollout
from lab.rollout import RunSpec, TrainingDiverged, train

COUNT, TERMINATE = "tests.toy_envs:Count-v0", "tests.toy_envs:CountTerminate-v0"


def capture_agent(monkeypatch):
    """Make lab.rollout keep the agent it builds, so a test can look inside it after training."""
    made = []

    def make_and_keep(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    original = lab.rollout.make_agent
    monkeypatch.setattr(lab.rollout, "make_agent", make_and_keep)
    return made


def quiet(**fields):
    return RunSpec(progress=False, log=False, **fields)


def stored_transitions(agent_name, agent):
    """(next observation's t, terminated, truncated) of every transition an agent has stored."""
    if agent_name == "sac_baseline":
        size = agent.buffer.size
        return agent.buffer.next_obs[:size, 0], agent.buffer.terminated[:size].bool(), None
    rollout = agent.rollout  # PPO's, with norm_obs off so observations are stored as they came
    return (rollout["next_obs"][..., 0].flatten(), rollout["terminated"].flatten(),
            rollout["truncated"].flatten())


STORING = {"sac_baseline": {"learning_starts": 1000}, "ppo_baseline": {"num_steps": 40, "norm_obs": False},
           "ppo_recurrent": {"num_steps": 40, "norm_obs": False, "sequence_length": 8}}


@pytest.mark.parametrize("agent", list(STORING))
@pytest.mark.parametrize("env,final_t", [(COUNT, 5), (TERMINATE, 3)])
@pytest.mark.parametrize("num_envs,vectorisation", [(1, "sync"), (3, "sync"), (3, "async")])
def test_agents_see_the_true_final_observation_and_only_real_terminations(monkeypatch, agent, env, final_t,
                                                                          num_envs, vectorisation):
    """Gymnasium's vector environments would, by default, return a reset step after each episode's end: here no
    such step reaches a replay buffer or a rollout, and a time limit's last transition keeps its observation."""
    made = capture_agent(monkeypatch)
    # 39 steps per env: PPO's rollout of 40 is not yet consumed by an update, so what it stored is still there.
    train(quiet(agent=agent, env=env, seed=0, steps=39 * num_envs, eval_episodes=1, settings=STORING[agent],
                num_envs=num_envs, vectorisation=vectorisation))
    next_t, terminated, truncated = stored_transitions(agent, made[0])
    if agent != "sac_baseline":  # PPO's [40, num_envs] slots, the last row not filled yet
        keep = torch.arange(40 * num_envs) < 39 * num_envs
        next_t, terminated, truncated = next_t[keep], terminated[keep], truncated[keep]
    ends = next_t == final_t
    assert next_t.numel() == 39 * num_envs
    assert int(ends.sum()) == num_envs * (39 // final_t)  # every episode's last transition, true last observation
    assert not torch.any(next_t == 0)  # a reset observation never stands in for a next observation
    assert torch.equal(terminated, ends if env == TERMINATE else torch.zeros_like(ends))
    if truncated is not None:
        assert torch.equal(truncated, ends if env == COUNT else torch.zeros_like(ends))


# Reward 1 per step, gamma 0.9. Bootstrapping through the time limit of Count-v0 makes every state worth
# 1 / (1 - 0.9) = 10; cutting the return there instead would give the first state 4.1. CountTerminate-v0
# really ends after 3 steps: its first state is worth 1 + 0.9 + 0.81 = 2.71.
VALUE_SETTINGS = {
    "sac_baseline": {"gamma": 0.9, "autotune": False, "alpha": 0.0, "learning_starts": 100, "hidden_size": 64,
                     "batch_size": 64},
    "ppo_baseline": {"gamma": 0.9, "norm_obs": False, "norm_reward": False, "anneal_lr": False,
                     "learning_rate": 1e-3, "num_steps": 64, "num_minibatches": 4},
    # Its bootstrap goes through one more step of the memory, from the state the cut step ended in.
    "ppo_recurrent": {"gamma": 0.9, "norm_obs": False, "norm_reward": False, "anneal_lr": False,
                      "learning_rate": 1e-3, "num_steps": 64, "num_minibatches": 4},
}


def first_state_value(agent_name, agent) -> float:
    obs = torch.tensor([[0.0, 1.0]])
    with torch.no_grad():
        if agent_name == "sac_baseline":
            return float(agent.critic(obs, agent.act(obs, explore=False)).min())
        if agent_name == "ppo_recurrent":  # at an episode's start: from an empty memory
            features, _ = agent.network.remember(obs, torch.zeros(1, agent.network.state_size))
            return float(agent.network.critic(features))
        return float(agent.network.critic(obs))


@pytest.mark.parametrize("agent", list(VALUE_SETTINGS))
def test_values_bootstrap_through_truncation_but_not_termination(monkeypatch, agent):
    made = capture_agent(monkeypatch)
    for env in (COUNT, TERMINATE):
        train(quiet(agent=agent, env=env, seed=0, steps=3000, eval_episodes=1, settings=VALUE_SETTINGS[agent]))
    truncated_value, terminated_value = first_state_value(agent, made[0]), first_state_value(agent, made[1])
    assert truncated_value > 7.0, f"time limit treated as termination? V(s0) = {truncated_value:.2f}, expected ~10"
    assert 2.2 < terminated_value < 3.3, f"V(s0) = {terminated_value:.2f}, expected ~2.71"


def without_timing(record):
    return {k: v for k, v in record.items() if k not in ("wall_s", "sps")}


def test_same_seed_same_record():
    spec = quiet(agent="sac_baseline", env="Pendulum-v1", seed=3, steps=600, eval_every=300, eval_episodes=2,
                 settings={"learning_starts": 200, "hidden_size": 32})
    assert without_timing(train(spec)) == without_timing(train(spec))


SAC_SMALL = {"learning_starts": 200, "hidden_size": 32}


@pytest.mark.parametrize("agent,settings,env,num_envs,vectorisation", [
    ("sac_baseline", SAC_SMALL, "Pendulum-v1", 1, "sync"),
    ("ppo_baseline", {"num_steps": 128, "num_minibatches": 4}, "Pendulum-v1", 1, "sync"),
    ("sac_baseline", SAC_SMALL, "Pendulum-v1", 3, "async"),
    ("sac_baseline", SAC_SMALL, "HalfCheetah-v5", 1, "sync"),
    ("sac_baseline", SAC_SMALL, "tests.toy_envs:Count200-v0", 1, "sync"),
    ("ppo_baseline", {"num_steps": 32, "num_minibatches": 4}, "TorchPendulum-v0", 4, "sync"),
    ("ppo_recurrent", {"num_steps": 128, "num_minibatches": 4}, "Pendulum-v1", 1, "sync"),
    ("ppo_recurrent", {"num_steps": 32, "num_minibatches": 4}, "TorchPendulum-v0", 4, "sync"),
])
def test_resume_from_checkpoint_continues_exactly(tmp_path, agent, settings, env, num_envs, vectorisation):
    common = dict(agent=agent, env=env, seed=1, steps=1000, eval_every=200, eval_episodes=2, settings=settings,
                  checkpoint_every=300, num_envs=num_envs, vectorisation=vectorisation)
    uninterrupted = train(quiet(run_dir=str(tmp_path / "a"), **common))
    # Stop after the third evaluation (step 600, or 603 with 3 envs); the last checkpoint is at step 300, where
    # the environments' state was saved (Count200's episodes were cut as by a time limit, in both runs alike).
    evaluations = []
    spec = quiet(run_dir=str(tmp_path / "b"), **common)
    stopped = train(spec, on_eval=lambda step, _: evaluations.append(step) or len(evaluations) < 3)
    assert stopped["stopped_at"] == evaluations[-1] >= 600
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["state"]["step"] == 300
    resumed = train(dataclasses.replace(spec, resume=True))
    assert without_timing(resumed) == without_timing(uninterrupted)


def test_a_nan_in_a_loss_stops_the_run_with_a_clear_error(monkeypatch):
    spec = quiet(agent="sac_baseline", env="Pendulum-v1", seed=0, steps=400, eval_episodes=1,
                 settings={"learning_starts": 50, "hidden_size": 16}, log_every=100)
    original_update = None

    def poisoned_update():
        metrics = original_update()
        return metrics and {**metrics, "qf_loss": torch.tensor(float("nan"))}

    def make_and_poison(*args, **kwargs):
        nonlocal original_update
        agent = made_factory(*args, **kwargs)
        original_update, agent.update = agent.update, poisoned_update
        return agent

    made_factory = lab.rollout.make_agent
    monkeypatch.setattr(lab.rollout, "make_agent", make_and_poison)
    with pytest.raises(TrainingDiverged, match=r"qf_loss became nan at step 100"):
        train(spec)


def test_a_checkpoint_cuts_episodes_but_never_at_the_end_of_a_run(tmp_path):
    """Count-v0's episodes last 5 steps and return 5. The checkpoint at step 21 cuts one after a single step,
    which is not logged; the last step, 42, is a multiple of checkpoint_every but takes no checkpoint, and its
    unfinished episode is not counted either: 8 whole episodes remain."""
    record = train(quiet(agent="sac_baseline", env=COUNT, seed=0, steps=42, eval_episodes=1, checkpoint_every=21,
                         run_dir=str(tmp_path), settings={"learning_starts": 1000}))
    assert record["train_return"] == 5.0


@pytest.mark.parametrize("agent,settings,env,num_envs", [
    ("sac_baseline", SAC_SMALL, "Pendulum-v1", 1),  # classic control
    ("sac_baseline", SAC_SMALL, "HalfCheetah-v5", 2),  # MuJoCo
    ("ppo_baseline", {"num_steps": 64, "num_minibatches": 2}, "HybridCartPole-v1", 1),  # the lab's own
    ("ppo_recurrent", {"num_steps": 32, "num_minibatches": 2}, "TorchPendulum-v0", 4),  # on the device
])
def test_a_checkpoint_that_saves_the_environments_changes_nothing_in_training(monkeypatch, tmp_path, agent,
                                                                            settings, env, num_envs):
    """Where the environments' state can be saved, checkpoints mid-episode leave the run as it was without them:
    the same episodes, evaluations and final networks."""
    made = capture_agent(monkeypatch)
    common = dict(agent=agent, env=env, seed=2, steps=800, eval_every=400, eval_episodes=1, settings=settings,
                  num_envs=num_envs)
    without = train(quiet(**common))
    with_checkpoints = train(quiet(run_dir=str(tmp_path), checkpoint_every=250, **common))
    assert without_timing(with_checkpoints) == without_timing(without)
    assert identical(made[0].state_dict(), made[1].state_dict())  # networks, optimisers, buffers, RNG


def identical(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    return a == b


def test_episodes_cut_by_checkpoints_are_not_logged(tmp_path):
    """Count200's episodes last 200 steps, and its state is not known to be restorable: checkpoints every 1100
    cut the sixth of each 1100 after 100 steps. TensorBoard and train_return see exactly the episodes the
    environment ended itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    record = train(RunSpec(agent="sac_baseline", env="tests.toy_envs:Count200-v0", seed=0, steps=3000, eval_episodes=1,
                           checkpoint_every=1100, run_dir=str(tmp_path), progress=False,
                           settings={"learning_starts": 10_000}))
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    lengths = events.Scalars("charts/episodic_length")
    # Episodes restart at 0, 1100 and 2200; each ends 200 steps later, until the next cut or the run's end.
    expected = [start + 200 * k for start, stop in ((0, 1100), (1100, 2200), (2200, 3000))
                for k in range(1, 6) if start + 200 * k <= stop]
    assert [event.step for event in lengths] == expected
    assert {event.value for event in lengths} == {200}
    returns = [event.value for event in events.Scalars("charts/episodic_return")]
    assert record["train_return"] == pytest.approx(sum(returns[-10:]) / 10)
