"""Shared agent pieces against independent references."""

import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from agents.common import ReplayBuffer, tanh_gaussian


def test_tanh_gaussian_log_prob_matches_torch_distributions_and_stays_finite():
    torch.manual_seed(0)
    mean, log_std, noise = torch.randn(64, 3), torch.randn(64, 3) * 0.5, torch.randn(64, 3)
    scale, bias = torch.tensor([2.0, 0.5, 1.0]), torch.tensor([0.0, 0.5, -1.0])
    action, log_prob = tanh_gaussian(mean, log_std, noise, scale, bias)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(), AffineTransform(bias, scale)])
    u = mean + log_std.exp() * noise
    assert torch.allclose(action, torch.tanh(u) * scale + bias)
    assert torch.allclose(log_prob, reference.log_prob(torch.tanh(u) * scale + bias).sum(-1), atol=1e-3)
    # Far in the tail tanh(u) rounds to 1 and the naive log(1 - tanh^2) is -inf; the stable form is not.
    _, tail = tanh_gaussian(torch.full((1, 3), 30.0), torch.zeros(1, 3), torch.zeros(1, 3), scale, bias)
    assert torch.isfinite(tail).all()


def test_replay_buffer_wraps_around_and_keeps_the_latest():
    buffer = ReplayBuffer(5, (1,), (1,), torch.device("cpu"))
    for start in (0, 3, 6):  # batches of three: the third crosses the end of the ring
        values = torch.arange(start, start + 3, dtype=torch.float32).unsqueeze(-1)
        buffer.add(values, values, values.squeeze(-1), values + 100, torch.zeros(3, dtype=torch.bool))
    assert buffer.size == 5 and buffer.position == 4
    assert sorted(buffer.obs.squeeze(-1).tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert torch.equal(buffer.next_obs, buffer.obs + 100)
    recent_obs, _ = buffer.recent(2)
    assert recent_obs.squeeze(-1).tolist() == [7.0, 8.0]
