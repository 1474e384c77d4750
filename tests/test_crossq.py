"""The CrossQ family's parts: Batch Renormalization, the joint critic pass, network modes, DroQ, diagnostics."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from agents import make_agent
from agents.common import BatchRenorm, plasticity
from lab import UsageError

EPS = 1e-3


def reference_renorm(x, running_mean, running_var, r_max, d_max, renorming):
    """Ioffe (2017), Algorithm 1, written out: r and d are constants for the gradient."""
    mu, sigma = x.mean(0), (x.var(0, unbiased=False) + EPS).sqrt()
    running_sigma = (running_var + EPS).sqrt()
    r = (sigma / running_sigma).clamp(1 / r_max, r_max).detach() if renorming else 1.0
    d = ((mu - running_mean) / running_sigma).clamp(-d_max, d_max).detach() if renorming else 0.0
    return (x - mu) / sigma * r + d


def test_batch_renorm_during_warmup_is_batch_norm_and_tracks_running_statistics():
    layer = BatchRenorm(3, momentum=0.1, eps=EPS, warmup_steps=2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        layer.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(64, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([0.0, 10.0, -3.0])
    y = layer(x)
    expected = reference_renorm(x, torch.zeros(3), torch.ones(3), 3.0, 5.0, renorming=False)
    assert torch.allclose(y, expected * layer.weight + layer.bias, atol=1e-5)
    assert torch.allclose(layer.running_mean, 0.1 * x.mean(0), atol=1e-6)
    assert torch.allclose(layer.running_var, 0.9 + 0.1 * x.var(0, unbiased=False), atol=1e-5)
    assert int(layer.steps) == 1


def test_batch_renorm_after_warmup_clips_r_and_d_and_treats_them_as_constants():
    layer = BatchRenorm(2, momentum=0.0, eps=EPS, warmup_steps=0, r_max=3.0, d_max=5.0)  # momentum 0: frozen stats
    # Running statistics far from the batch's: the std ratio (10) and mean shift (20) are both clipped.
    x = (torch.randn(128, 2) * 10 + 20).requires_grad_()
    y = layer(x)
    x_ref = x.detach().clone().requires_grad_()
    expected = reference_renorm(x_ref, torch.zeros(2), torch.ones(2), 3.0, 5.0, renorming=True)
    assert torch.allclose(y, expected, atol=1e-4)
    assert torch.allclose(y.mean(0), torch.full((2,), 5.0), atol=1e-4)  # d clipped at d_max
    assert torch.allclose(y.std(0, unbiased=False), torch.full((2,), 3.0), atol=1e-3)  # r clipped at r_max
    weights = torch.randn(128, 2)
    (y * weights).sum().backward()
    (expected * weights).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)


def test_batch_renorm_with_affine_parameters_and_unclipped_r_d_matches_the_paper_and_its_gradients():
    layer = BatchRenorm(3, momentum=0.1, eps=EPS, warmup_steps=1, r_max=10.0, d_max=10.0)
    running_mean, running_var = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([2.0, 0.5, 4.0])
    layer.running_mean.copy_(running_mean)
    layer.running_var.copy_(running_var)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.5, -0.7, 2.0]))
        layer.bias.copy_(torch.tensor([0.3, 1.0, -2.0]))
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 0.5]) + 1.0
    layer.steps.fill_(1)  # past the warm-up: renormalising, with r and d inside their (loose) bounds
    x_lab, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = layer(x_lab)
    weight, bias = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    expected = reference_renorm(x_ref, running_mean, running_var, 10.0, 10.0, renorming=True) * weight + bias
    assert torch.allclose(y, expected, atol=1e-5)
    upstream = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    (y * upstream).sum().backward()
    (expected * upstream).sum().backward()
    for ours, theirs in ((x_lab.grad, x_ref.grad), (layer.weight.grad, weight.grad), (layer.bias.grad, bias.grad)):
        assert torch.allclose(ours, theirs, atol=1e-4)
    assert torch.allclose(layer.running_mean, 0.9 * running_mean + 0.1 * x.mean(0), atol=1e-6)
    assert torch.allclose(layer.running_var, 0.9 * running_var + 0.1 * x.var(0, unbiased=False), atol=1e-5)


def test_batch_renorm_switches_from_batch_norm_to_renormalising_after_the_warmup():
    layer = BatchRenorm(2, momentum=0.5, eps=EPS, warmup_steps=1)
    x = torch.randn(32, 2) * 3 + 4
    first = layer(x)  # warm-up pass: plain BatchNorm
    assert torch.allclose(first, reference_renorm(x, torch.zeros(2), torch.ones(2), 3.0, 5.0, False), atol=1e-5)
    stats = layer.running_mean.clone(), layer.running_var.clone()
    second = layer(x)
    assert torch.allclose(second, reference_renorm(x, *stats, 3.0, 5.0, renorming=True), atol=1e-5)
    assert not torch.allclose(first, second, atol=1e-2)


def test_batch_renorm_in_eval_mode_uses_running_statistics_and_changes_nothing():
    layer = BatchRenorm(2, eps=EPS)
    layer.running_mean.copy_(torch.tensor([1.0, -2.0]))
    layer.running_var.copy_(torch.tensor([4.0, 0.25]))
    layer.eval()
    x = torch.randn(10, 2)
    expected = (x - layer.running_mean) / (layer.running_var + EPS).sqrt()
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert int(layer.steps) == 0 and torch.equal(layer.running_mean, torch.tensor([1.0, -2.0]))


def pendulum_like():
    return (gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), gym.spaces.Box(-2.0, 2.0, (1,), np.float32))


def filled_crossq(**settings):
    agent = make_agent("crossq", *pendulum_like(), total_steps=100,
                       settings={"learning_starts": 20, "batch_size": 16, "critic_hidden": 32, "actor_hidden": 32,
                                 **settings})
    for _ in range(20):
        agent.act(torch.randn(1, 3))
        agent.observe(torch.randn(1, 3), torch.randn(1), torch.tensor([False]), torch.tensor([False]))
    return agent


def test_the_critic_sees_states_and_next_states_in_one_pass_with_shared_statistics():
    agent = filled_crossq()
    first_layer = agent.critic.qfs[0][0]
    seen = []
    first_layer.register_forward_hook(lambda module, inputs, output: seen.append((module.training,
                                                                                 inputs[0].detach().clone())))
    agent.generator.manual_seed(5)
    obs, actions, _, next_obs, _ = agent.buffer.sample(16, agent.generator)
    agent.generator.manual_seed(5)
    agent.gradient_step()
    training_passes = [x for training, x in seen if training]
    assert len(training_passes) == 1 and training_passes[0].shape[0] == 32  # one pass, s and s' together
    joint = training_passes[0]
    assert torch.equal(joint[:16], torch.cat([obs, actions], -1)) and torch.equal(joint[16:, :3], next_obs)
    # The running statistics moved towards the joint batch's mean: one normalisation for both halves.
    assert torch.allclose(first_layer.running_mean, 0.01 * joint.mean(0), atol=1e-6)


def test_acting_and_next_actions_use_running_statistics():
    agent = filled_crossq(policy_delay=1000)
    actor_layers = [m for m in agent.actor.modules() if isinstance(m, BatchRenorm)]
    agent.act(torch.randn(4, 3), explore=True)
    agent.act(torch.randn(4, 3), explore=False)
    assert all(int(layer.steps) == 0 for layer in actor_layers)  # acting never normalises with its batch
    agent.gradient_step()  # the critic update draws a' from the actor in evaluation mode
    assert all(int(layer.steps) == 0 for layer in actor_layers)
    assert not agent.actor.training and not agent.critic.training  # both rest in evaluation mode


def test_the_actor_learns_every_policy_delay_critic_updates_reading_the_critic_in_eval_mode():
    agent = filled_crossq(policy_delay=3)
    actor_layer = next(m for m in agent.actor.modules() if isinstance(m, BatchRenorm))
    for _ in range(7):
        agent.gradient_step()
    assert agent.critic_updates == 7 and int(actor_layer.steps) == 2  # actor updates at critic updates 3 and 6
    # The critic normalised with batch statistics in its 7 joint passes only, not in the 2 actor losses.
    assert all(int(m.steps) == 7 for m in agent.critic.modules() if isinstance(m, BatchRenorm))


def test_droq_preset_adds_dropout_and_layer_norm_and_updates_the_actor_once_per_step():
    agent = make_agent("sac_baseline:droq", *pendulum_like(), total_steps=100,
                       settings={"learning_starts": 10, "batch_size": 8, "hidden_size": 16})
    kinds = [type(m) for m in agent.critic.qfs[0]]
    assert kinds.count(nn.Dropout) == 2 and kinds.count(nn.LayerNorm) == 2
    actor_steps = []
    original = agent.actor_step
    agent.actor_step = lambda obs: actor_steps.append(1) or original(obs)
    for _ in range(12):
        agent.act(torch.randn(1, 3))
        agent.observe(torch.randn(1, 3), torch.randn(1), torch.tensor([False]), torch.tensor([False]))
        agent.update()
    assert agent.critic_updates == 20 * 3 and len(actor_steps) == 3  # from step 10: 20 critic updates a step, 1 actor


def test_droq_preset_is_the_papers_recipe():
    """Hiraoka et al. 2022: 3e-4 for every learning rate, 5000 random steps, the actor on the critics' mean."""
    agent = make_agent("sac_baseline:droq", *pendulum_like(), total_steps=100, settings={"hidden_size": 16})
    h = agent.h
    assert (h.dropout, h.layer_norm, h.replay_ratio, h.policy_frequency, h.policy_catch_up) == (0.01, True, 20, 20,
                                                                                                False)
    assert (h.actor_reduction, h.policy_lr, h.q_lr, h.learning_starts) == ("mean", 3e-4, 3e-4, 5000)
    assert [group["lr"] for group in agent.actor_optimizer.param_groups] == [3e-4, 3e-4]  # actor, temperature
    assert make_agent("sac_baseline", *pendulum_like(), total_steps=100).h.actor_reduction == "min"


@pytest.mark.parametrize("preset", ["", ":droq"])
def test_the_actor_loss_reads_the_critics_through_actor_reduction(preset):
    """The same agent (same seed, same log-probabilities) with the min and with the mean: the actor losses differ
    by exactly mean(min_i Q_i) - mean(mean_i Q_i)."""
    q = torch.tensor([[1.0, 5.0, -2.0, 0.0], [3.0, 2.0, -4.0, 1.0]])  # [critics, batch]
    losses = {}
    for reduction in ("min", "mean"):
        agent = make_agent(f"sac_baseline{preset}", *pendulum_like(), total_steps=100,
                           settings={"hidden_size": 16, "actor_reduction": reduction})
        agent.critic.forward = lambda obs, actions: q + 0 * actions.sum(-1)  # a fixed Q, still a path to the actor
        losses[reduction] = float(agent.actor_step(torch.zeros(4, 3))["actor_loss"])
    assert losses["min"] - losses["mean"] == pytest.approx(float(q.mean(0).mean() - q.min(0).values.mean()))


def test_an_unknown_actor_reduction_is_refused_naming_the_choices():
    with pytest.raises(UsageError, match=r"actor_reduction must be one of min, mean, got 'max'"):
        make_agent("sac_baseline", *pendulum_like(), settings={"actor_reduction": "max"})


def test_dormant_ratio_counts_units_that_never_fire():
    network = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        network[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
        network[0].bias.copy_(torch.tensor([5.0, 5.0, -1.0, -2.0]))  # units 3 and 4 are dead
    x = torch.randn(256, 2)
    figures = plasticity(network, x)
    assert float(figures["dormant_ratio"]) == pytest.approx(0.5)
    expected_magnitude = (network[0].weight.abs().mean() + network[2].weight.abs().mean()).detach() / 2
    assert float(figures["weight_magnitude"]) == pytest.approx(float(expected_magnitude))


@pytest.mark.parametrize("optimum", ["inside", "corner"])
@pytest.mark.parametrize("action_dim", [1, 3, 6, 17])
def test_the_default_search_finds_the_maximiser_in_every_dimension(optimum, action_dim):
    """The defaults, started from 0 as targets and evaluation start, on 256 problems: on a concave score
    maximised at 0.8 in every coordinate, and on one maximised at a random corner of the box, the largest
    coordinate error averages at most 0.1. (QT-Opt's CEM alone missed by 0.02, 0.33, 0.61, 0.96.)"""
    from agents.crossq_cem import Hyperparameters, cem_maximise
    generator = torch.Generator().manual_seed(action_dim)
    if optimum == "inside":
        best = goal = torch.full((256, action_dim), 0.8)
    else:  # a bowl centred outside the box, beyond a corner: the box's maximiser is that corner
        best = torch.randint(0, 2, (256, action_dim), generator=generator).float() * 2 - 1
        goal = 2 * best
    scale = torch.linspace(0.5, 2.0, action_dim)  # unequal curvatures, and a Q-like magnitude

    def score(candidates):  # [B, P, A] -> [B, P]
        return 400 - 300 * ((candidates - goal.unsqueeze(1)).square() * scale).sum(-1)

    found = cem_maximise(score, torch.zeros(256, action_dim), Hyperparameters(), generator)
    assert float((found - best).abs().max(dim=-1).values.mean()) <= 0.1


def test_cem_scores_every_problems_whole_population_at_once():
    from agents.crossq_cem import Hyperparameters, cem_maximise
    calls = []

    def score(candidates):
        calls.append(candidates.shape)
        return -candidates.square().sum(-1)

    cem_maximise(score, torch.zeros(16, 3), Hyperparameters(population=64, elites=6, iterations=6), torch.Generator())
    # 6 CEM iterations on [16, 64, 3], 15 ascent steps on one action per problem, and the final comparison of
    # the start, CEM's answer and the ascent's.
    assert calls == [(16, 64, 3)] * 6 + [(16, 1, 3)] * 15 + [(16, 3, 3)]


def test_the_ascent_keeps_cems_answer_where_it_scores_higher():
    from agents.crossq_cem import Hyperparameters, cem_maximise
    def score(candidates):  # a plateau around 0.5 that CEM finds, and a gradient (of a term worth 0) off it
        on_plateau = (candidates - 0.5).abs().sum(-1) < 0.1
        return torch.where(on_plateau, 10.0, 0.0) + (candidates - candidates.detach()).sum(-1)

    h = Hyperparameters(population=64, elites=4, iterations=4, init_std=0.3, min_std=0.01)
    found = cem_maximise(score, torch.full((32, 1), 0.5), h, torch.Generator().manual_seed(0))
    assert float(score(found.unsqueeze(1)).min()) > 9.5


def test_cem_stays_in_bounds_when_the_optimum_lies_outside():
    from agents.crossq_cem import Hyperparameters, cem_maximise
    h = Hyperparameters(population=32, elites=4, iterations=4)
    found = cem_maximise(lambda a: a.sum(-1), torch.zeros(4, 2), h, torch.Generator().manual_seed(0))
    assert bool((found <= 1).all()) and float(found.mean()) > 0.8  # pressed against the bound, never beyond


def test_the_search_never_answers_worse_than_its_start():
    from agents.crossq_cem import Hyperparameters, cem_maximise
    start = torch.full((64, 2), 0.3)  # a narrow peak at the start, which the whole box's samples all miss

    def score(candidates):
        return torch.where((candidates - 0.3).abs().amax(-1) < 1e-3, 1.0, -candidates.square().sum(-1) / 10)

    found = cem_maximise(score, start, Hyperparameters(), torch.Generator().manual_seed(0))
    assert torch.equal(found, start)


def test_cem_agent_starts_every_search_from_the_priors_mean_action():
    agent = make_agent("crossq_cem", *pendulum_like(), num_envs=2, total_steps=100,
                       settings={"learning_starts": 0, "critic_hidden": 16, "actor_hidden": 16, "population": 8,
                                 "elites": 2})
    import agents.crossq_cem as module
    seen, original = [], module.cem_maximise

    def spy(score, mean, h, generator):
        seen.append(mean.clone())
        return original(score, mean, h, generator)

    module.cem_maximise = spy
    obs = torch.randn(2, 3)
    try:
        agent.act(obs)
        agent.act(obs, explore=False)
    finally:
        module.cem_maximise = original
    prior_mean = torch.tanh(agent.actor(obs)[0]).detach()
    assert torch.allclose(seen[0], prior_mean) and torch.allclose(seen[1], prior_mean)
    assert float(prior_mean.abs().min()) > 0  # a real start, not the box's centre


def test_bro_critic_is_residual_with_about_5m_parameters_and_decays_only_linear_weights():
    half_cheetah = (gym.spaces.Box(-np.inf, np.inf, (17,), np.float32), gym.spaces.Box(-1.0, 1.0, (6,), np.float32))
    agent = make_agent("sac_crossq_bro", *half_cheetah, total_steps=100)
    from agents.sac_crossq_bro import ResidualBlock
    assert sum(isinstance(m, ResidualBlock) for m in agent.critic.qfs[0]) == 2
    assert 4.5e6 < sum(p.numel() for p in agent.critic.parameters()) < 5.5e6
    assert_only_linear_weights_decay(agent)
    assert agent.target_entropy == -3.0  # -|A| / 2


def assert_only_linear_weights_decay(agent):
    for optimizer, network in ((agent.q_optimizer, agent.critic), (agent.actor_optimizer, agent.actor)):
        decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
        assert decayed == {id(m.weight) for m in network.modules() if isinstance(m, nn.Linear)}
    assert any(group["params"] == [agent.log_alpha] and group["weight_decay"] == 0
               for group in agent.actor_optimizer.param_groups)


def test_bro_resets_networks_and_optimisers_but_keeps_the_replay_buffer():
    agent = make_agent("sac_crossq_bro", *pendulum_like(), total_steps=100,
                       settings={"learning_starts": 20, "batch_size": 16, "critic_hidden": 16, "actor_hidden": 16,
                                 "reset_every": 4})
    for _ in range(20):
        agent.act(torch.randn(1, 3))
        agent.observe(torch.randn(1, 3), torch.randn(1), torch.tensor([False]), torch.tensor([False]))
    critic_before = agent.critic
    for _ in range(3):
        agent.gradient_step()
    assert agent.critic is critic_before and agent.q_optimizer.state
    stored = agent.buffer.size
    agent.gradient_step()  # the 4th critic update resets
    assert agent.critic is not critic_before and not agent.q_optimizer.state and not agent.actor_optimizer.state
    assert float(agent.log_alpha.detach()) == 0.0 and agent.buffer.size == stored
    assert all(int(m.steps) == 0 for m in agent.critic.modules() if isinstance(m, BatchRenorm))
    assert_only_linear_weights_decay(agent)


def test_cem_rejects_more_elites_than_candidates():
    with pytest.raises(UsageError, match="elites"):
        make_agent("crossq_cem", *pendulum_like(), settings={"population": 8, "elites": 9})


@pytest.mark.parametrize("agent_name", ["crossq", "sac_crossq_bro", "crossq_cem"])
@pytest.mark.parametrize("setting", [{"batch_size": 1}, {"bn_r_max": 0.5}, {"adam_beta1": 1.0}])
def test_the_batch_renorm_recipe_rejects_values_that_would_fail_later(agent_name, setting):
    name = next(iter(setting))
    with pytest.raises(UsageError, match=name):
        make_agent(agent_name, *pendulum_like(), settings=setting)


@pytest.mark.parametrize("target_noise", [0.0, 0.2])
def test_cem_search_targets_smooth_the_searchs_answer_within_the_clip(target_noise):
    agent = make_agent("crossq_cem", *pendulum_like(), total_steps=100,
                       settings={"critic_hidden": 16, "td_target": "search", "target_noise": target_noise,
                                 "target_noise_clip": 0.3})
    answer = torch.full((64, 1), 0.9)  # the search's answer, in the scaled range
    agent.greedy = lambda obs, start, generator: answer
    next_actions, bonus = agent.next_actions_and_bonus(torch.randn(64, 3))
    scaled = (next_actions - agent.action_bias) / agent.action_scale
    assert bonus == 0.0  # QT-Opt's target: no entropy
    if target_noise == 0:
        assert torch.allclose(scaled, answer)
    else:  # TD3's smoothing: noise clipped to +-0.3, the action to the box
        assert not torch.allclose(scaled, answer)
        assert bool(((scaled >= 0.6 - 1e-6) & (scaled <= 1.0)).all()) and bool((scaled == 1.0).any())


def test_cem_prior_targets_are_crossqs_soft_targets_without_a_search():
    agent = make_agent("crossq_cem", *pendulum_like(), total_steps=100,
                       settings={"critic_hidden": 16, "actor_hidden": 16})

    def no_search(*args):
        raise AssertionError("the prior's targets need no search")

    agent.greedy = no_search
    next_actions, bonus = agent.next_actions_and_bonus(torch.randn(64, 3))
    assert next_actions.shape == (64, 1) and bool((next_actions.abs() <= 2).all())  # Pendulum's bound
    assert bonus.shape == (64,) and bool((bonus != 0).all())  # -alpha * log pi(a'|s'), as crossq's
