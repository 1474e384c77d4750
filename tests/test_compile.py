"""--compile: the compiled networks learn as the eager ones do, and CUDA graphs are refused without CUDA."""

import pytest
import torch

from lab import UsageError
from lab.cli import check_compile
from tests.test_agent_contract import BOX_ACTION, build, drive

COMPILED = ["sac_baseline", "ppo_baseline", "crossq", "sac_crossq_bro"]


@pytest.mark.parametrize("agent_name", COMPILED)
def test_compiled_networks_give_the_eager_updates(agent_name):
    eager, compiled = build(agent_name, BOX_ACTION), build(agent_name, BOX_ACTION)
    compiled.compile("default")
    expected, produced = drive(eager, 40), drive(compiled, 40)
    assert len(produced) == len(expected) > 0
    # Compiled kernels sum in another order; with batches of 8 through BatchRenorm, rounding differences grow
    # from update to update, so the updates are compared while they are still few.
    for want, got in zip(expected[:5], produced[:5]):
        assert want.keys() == got.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=2e-3, atol=1e-4)
    assert all(torch.isfinite(value) for metrics in produced for value in metrics.values())
    networks = [item for item in compiled.checkpointed.values() if isinstance(item, torch.nn.Module)] \
        if hasattr(compiled, "checkpointed") else [compiled.network.actor_mean, compiled.network.critic]
    assert all(network._compiled_call_impl is not None for network in networks)  # BRO's: after 4 resets
    obs = torch.randn(2, 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(compiled.act(obs, explore=False), eager.act(obs, explore=False), rtol=1e-3, atol=1e-3)


def test_cuda_graphs_need_a_cuda_device():
    with pytest.raises(UsageError, match="--compile cudagraphs needs a CUDA device, got --device cpu"):
        check_compile("cudagraphs", "cpu")
    check_compile("on", "cpu")
