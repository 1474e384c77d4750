"""The GPU path: the agents' hot path never waits for the device (lab/sync_check.py), on CUDA only;
benchmarks/gpu.py at toy sizes on the CPU (every row, and the same loop as the check, unchecked) keeps both
working on machines without a GPU."""

import pytest
import torch

from lab.sync_check import CASES, run_without_syncs
from tests.test_learn_simple import run_script


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the sync check needs one")
@pytest.mark.parametrize("agent,env", CASES)
def test_the_hot_path_never_synchronises_on_cuda(agent, env):
    assert run_without_syncs(agent, env, "cuda")


def test_the_gpu_benchmark_runs_on_the_cpu_at_toy_sizes(tmp_path):
    result = run_script("benchmarks/gpu.py", tmp_path, "--device", "cpu", "--smoke", "--markdown", "gpu.md",
                        timeout=600)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "gpu.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[:3] for row in rows[1:7]] == [
        ["| ppo_baseline:vectorised", "TorchPendulum-v0", "1"], ["| ppo_baseline:vectorised", "TorchPendulum-v0", "4"],
        ["| sac_baseline", "HalfCheetah-v5", "1"], ["| sac_baseline", "TorchPendulum-v0", "1"],
        ["| crossq", "HalfCheetah-v5", "1"], ["| crossq", "TorchPendulum-v0", "1"]]
    assert all(float(row.split(" | ")[-1].rstrip(" |")) > 0 for row in rows[1:7])
    assert sum("not checked (cpu: CUDA only)" in row for row in rows) == len(CASES)


def test_the_gpu_benchmark_without_cuda_says_so_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_script("benchmarks/gpu.py", tmp_path, "--smoke", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("--device cuda: no CUDA device here; use --device cpu")
