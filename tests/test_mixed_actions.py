"""Mixed action spaces (products of Box and discrete parts), the hybrid-action environment, A2C and VPG."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal

import tests.toy_envs  # noqa: F401  (registers StructuredActions-v0)
from agents import make_agent, resolve_hyperparameters
from envs import make_env
from envs.hybrid import IGNITION_COST
from lab import UsageError
from lab.policy import load_policy, save_policy
from lab.rollout import RunSpec, train
from tests.test_learn_simple import learn_simple, run_script

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
MIXED = gym.spaces.Tuple((gym.spaces.Box(-1.0, 1.0, (2,), np.float32), gym.spaces.Discrete(3),
                          gym.spaces.MultiDiscrete([2, 4])))


def test_product_log_prob_and_entropy_are_the_sums_of_the_parts():
    agent = make_agent("ppo_baseline", OBS, MIXED, num_envs=5)
    network = agent.network
    with torch.no_grad():
        network.actor_logstd.copy_(torch.tensor([[0.3, -0.7]]))
    out = torch.randn(5, 2 + 3 + 2 + 4)  # the Box's means, then the logits of each discrete choice
    action = torch.cat([torch.randn(5, 2), torch.randint(0, 3, (5, 1)), torch.randint(0, 2, (5, 1)),
                        torch.randint(0, 4, (5, 1))], dim=1).float()
    parts = [Normal(out[:, :2], network.actor_logstd.exp().expand(5, 2)), Categorical(logits=out[:, 2:5]),
             Categorical(logits=out[:, 5:7]), Categorical(logits=out[:, 7:11])]
    expected_log_prob = (parts[0].log_prob(action[:, :2]).sum(-1) + parts[1].log_prob(action[:, 2].long())
                         + parts[2].log_prob(action[:, 3].long()) + parts[3].log_prob(action[:, 4].long()))
    expected_entropy = parts[0].entropy().sum(-1) + sum(part.entropy() for part in parts[1:])
    with torch.no_grad():
        torch.testing.assert_close(network.log_prob(out, action), expected_log_prob)
        torch.testing.assert_close(network.entropy(out), expected_entropy)


def test_samples_follow_each_part_and_the_mode_is_each_parts_likeliest():
    agent = make_agent("ppo_baseline", OBS, MIXED, num_envs=4000)
    out = torch.zeros(4000, 11)
    out[:, 0], out[:, 3] = 0.5, 3.0  # the first Gaussian's mean, and a strong preference for the Discrete's 1
    with torch.no_grad():
        drawn = agent.network.sample(out, torch.Generator().manual_seed(0))
    assert abs(float(drawn[:, 0].mean()) - 0.5) < 0.05 and abs(float(drawn[:, 1].std()) - 1.0) < 0.05
    assert abs(float((drawn[:, 2] == 1).float().mean()) - np.exp(3) / (np.exp(3) + 2)) < 0.02
    assert set(drawn[:, 4].unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
    mode = agent.network.mode(out[:1])
    assert mode.tolist() == [[0.5, 0.0, 1.0, 0.0, 0.0]]


def test_actions_reach_the_environment_in_its_structure():
    tests.toy_envs.StructuredActions.received.clear()
    record = train(RunSpec(agent="ppo_baseline", env="tests.toy_envs:StructuredActions-v0", seed=0, steps=40,
                           eval_episodes=1, progress=False, log=False,
                           settings={"num_steps": 8, "num_minibatches": 2, "hidden_size": 8}))
    received = tests.toy_envs.StructuredActions.received
    assert record["final_return"] == 5.0 and len(received) == 40 + 5  # training's steps, then evaluation's
    assert all(set(action) == {"push", "gear", "valves"} for action in received)
    assert {int(action["gear"]) for action in received} <= {1, 2, 3}


def test_a_policy_file_keeps_a_composite_action_space(tmp_path):
    env = make_env("HybridCartPole-v1")
    agent = make_agent("ppo_baseline", env.observation_space, env.action_space, num_envs=1)
    save_policy(tmp_path / "policy.pt", agent, "ppo_baseline", "HybridCartPole-v1", env.observation_space,
                env.action_space, 0, 0, None)
    loaded, policy = load_policy(tmp_path / "policy.pt", env="HybridCartPole-v1")
    obs = torch.randn(8, 4)
    direction, force = loaded.act(obs, explore=False)
    expected_direction, expected_force = agent.act(obs, explore=False)
    assert torch.equal(direction, expected_direction) and torch.equal(force, expected_force)
    with pytest.raises(UsageError, match="action space"):
        load_policy(tmp_path / "policy.pt", env="HybridCartPoleSigned-v1")


@pytest.mark.parametrize("agent", ["sac_baseline", "crossq", "sac_crossq_bro", "crossq_cem"])
def test_off_policy_agents_refuse_mixed_spaces(agent):
    env = make_env("HybridCartPole-v1")
    with pytest.raises(UsageError, match=r"needs a continuous \(Box\) action space, got Tuple"):
        make_agent(agent, env.observation_space, env.action_space)


def test_an_off_policy_agent_on_hybrid_actions_is_one_line_and_exit_2(tmp_path):
    result = learn_simple(tmp_path, "--agent", "sac_baseline", "--envs", "HybridCartPole-v1", "--steps", "100")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "sac_baseline needs a continuous (Box) action space, got Tuple(Discrete(2)" in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_hybrid_cartpole_fires_its_engine_with_the_push_and_charges_the_ignition():
    hybrid, signed, box2, cartpole = (make_env(name) for name in (
        "HybridCartPole-v1", "HybridCartPoleSigned-v1", "HybridCartPoleBox2-v1", "CartPole-v1"))
    for env in (hybrid, signed, box2, cartpole):
        env.reset(seed=3)
    full = hybrid.step((1, np.array([1.0], np.float32)))  # fired, the full push to the right
    expected = cartpole.step(1)  # CartPole's own push: 10 N to the right
    np.testing.assert_allclose(full[0], expected[0])
    assert full[1] == pytest.approx(1.0 - IGNITION_COST)
    np.testing.assert_allclose(signed.step(np.array([1.0], np.float32))[0], full[0])
    np.testing.assert_allclose(box2.step(np.array([0.3, 1.0], np.float32))[0], full[0])
    # Off: no push whatever the push part says, and no charge; the relaxations' thresholds say off too.
    coasting = hybrid.step((0, np.array([-1.0], np.float32)))
    assert coasting[1] == 1.0
    for relaxation, action in ((signed, [0.4]), (box2, [-0.1, -1.0])):
        step = relaxation.step(np.array(action, np.float32))
        np.testing.assert_allclose(step[0], coasting[0])
        assert step[1] == 1.0
    gentle = hybrid.step((1, np.array([-0.6], np.float32)))  # 6 N to the left
    np.testing.assert_allclose(signed.step(np.array([-0.6], np.float32))[0], gentle[0])
    np.testing.assert_allclose(box2.step(np.array([1.0, -0.6], np.float32))[0], gentle[0])
    assert gentle[1] == pytest.approx(1.0 - IGNITION_COST)


def test_a2c_and_vpg_presets_say_their_recipes():
    a2c = resolve_hyperparameters("ppo_baseline:a2c")
    assert (a2c["num_steps"], a2c["update_epochs"], a2c["num_minibatches"], a2c["optimizer"]) == (5, 1, 1, "rmsprop")
    assert a2c["gae_lambda"] == 1.0 and not a2c["norm_adv"] and not a2c["anneal_lr"]
    vpg = resolve_hyperparameters("ppo_baseline:vpg")
    assert (vpg["update_epochs"], vpg["num_minibatches"], vpg["gae_lambda"]) == (1, 1, 1.0)
    agent = make_agent("ppo_baseline:a2c", OBS, gym.spaces.Discrete(2))
    assert isinstance(agent.optimizer, torch.optim.RMSprop)
    with pytest.raises(UsageError, match="optimizer must be one of adam, rmsprop, got 'sgd'"):
        make_agent("ppo_baseline", OBS, gym.spaces.Discrete(2), settings={"optimizer": "sgd"})


def test_one_a2c_update_is_the_plain_policy_gradient():
    """With one epoch of one minibatch the ratio is 1: PPO's clipped loss is A2C's -A * log pi exactly."""
    agent = make_agent("ppo_baseline:a2c", OBS, gym.spaces.Discrete(2), num_envs=2, settings={"ent_coef": 0.0})
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        agent.act(torch.randn(2, 3, generator=generator))
        agent.observe(torch.randn(2, 3, generator=generator), torch.randn(2, generator=generator),
                      torch.tensor([False, False]), torch.tensor([False, False]))
    metrics = agent.update()
    assert float(metrics["clipfrac"]) == 0.0 and float(metrics["approx_kl"]) == pytest.approx(0.0, abs=1e-7)


def test_the_hybrid_actions_benchmark_prints_its_table(tmp_path):
    result = run_script("benchmarks/hybrid_actions.py", tmp_path, "--seeds", "1", "--steps", "300", "--name", "smoke")
    assert result.returncode == 0, result.stderr
    table = result.stdout[result.stdout.index("| policy |"):].strip().splitlines()
    assert len(table) == 6 and table[2].startswith("| ppo_baseline | Tuple(Discrete(2), Box([-1, 1]))")
    assert all(row.endswith("| 1 |") for row in table[2:5]) and table[5].endswith("| 100 |")


def test_the_categorical_draw_is_torch_multinomials_without_its_host_read():
    agent = make_agent("ppo_baseline", OBS, gym.spaces.Discrete(4), num_envs=1)
    logits = torch.randn(2000, 4)
    ours = agent.network.sample(logits, torch.Generator().manual_seed(5))
    reference = torch.multinomial(logits.softmax(-1), 1, generator=torch.Generator().manual_seed(5)).float()
    assert torch.equal(ours, reference)
