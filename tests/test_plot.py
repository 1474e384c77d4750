"""plot.py and lab/stats.py: bootstrap intervals against hand computations and scipy, pictures from a run."""

import json

import numpy as np
import pytest
import scipy.stats

from lab.stats import stratified_bootstrap_ci
from tests.test_learn_simple import run_script


def test_two_seeds_give_the_whole_range_as_interval():
    # Resamples of [0, 1]: (0, 0), (0, 1), (1, 0), (1, 1), each a quarter of the time; their mean (the IQM of
    # two values) is 0 or 1 a quarter of the time each, so the 2.5% and 97.5% percentiles are 0 and 1.
    assert stratified_bootstrap_ci(np.array([0.0, 1.0])) == (0.5, 0.0, 1.0)


def test_one_task_matches_scipys_percentile_bootstrap():
    values = np.random.default_rng(3).normal(-200, 60, size=10)
    _, low, high = stratified_bootstrap_ci(values, repetitions=20_000)
    reference = scipy.stats.bootstrap((values,), lambda x, axis: scipy.stats.trim_mean(x, 0.25, axis=axis),
                                      method="percentile", n_resamples=20_000, random_state=0)
    interval = reference.confidence_interval
    assert low == pytest.approx(interval.low, abs=3.0) and high == pytest.approx(interval.high, abs=3.0)


def test_resampling_stays_within_each_task():
    # Two tasks whose runs all score 0 and 10: every stratified sample keeps 4 of each, so its IQM is always
    # the same 5.0; resampling the pooled runs instead would mix them and spread the interval.
    scores = np.array([[0.0, 10.0]] * 4)
    assert stratified_bootstrap_ci(scores) == (5.0, 5.0, 5.0)


def write_run(root, agents=("sac_baseline", "crossq"), seeds=4, unfinished_seed=True):
    """A run directory as learn_simple writes it: results.json records, plus one seed known only from its
    TensorBoard events (as an interrupted run leaves it)."""
    from torch.utils.tensorboard import SummaryWriter
    rng = np.random.default_rng(0)
    records = []
    for agent in agents:
        for seed in range(seeds):
            evaluations = [[step, float(-1500 + step / 8 + rng.normal(0, 50))] for step in range(1000, 10001, 1000)]
            records.append({"agent": agent, "env": "Pendulum-v1", "seed": seed, "final_return": evaluations[-1][1],
                            "evaluations": evaluations})
    root.mkdir(parents=True)
    (root / "results.json").write_text(json.dumps({"records": records}))
    planned = seeds + 1 if unfinished_seed else seeds
    (root / "config.json").write_text(json.dumps({"agents": list(agents), "seeds": planned}))
    if unfinished_seed:
        with SummaryWriter(str(root / agents[0] / "Pendulum-v1" / f"seed_{seeds}")) as writer:
            for step in range(1000, 6001, 1000):
                writer.add_scalar("eval/return", -1400 + step / 8, step)


def test_plot_writes_curves_bars_and_a_table_from_results_and_tensorboard(tmp_path):
    write_run(tmp_path / "runs" / "demo")
    result = run_script("plot.py", tmp_path, "runs/demo", timeout=120)
    assert result.returncode == 0, result.stderr
    plots = tmp_path / "runs" / "demo" / "plots"
    for picture in ("Pendulum-v1_curves.png", "Pendulum-v1_final.png"):
        assert (plots / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (plots / "summary.md").read_text()
    # 5 seeds planned: 4 finished each; sac_baseline's fifth was interrupted (TensorBoard only, and scoring far
    # above the others at its last evaluation), crossq's never started. Neither counts in the final scores.
    records = json.loads((tmp_path / "runs" / "demo" / "results.json").read_text())["records"]
    for agent in ("sac_baseline", "crossq"):
        finals = [r["final_return"] for r in records if r["agent"] == agent]
        value, low, high = stratified_bootstrap_ci(np.array(finals))
        assert f"| Pendulum-v1 | {agent} | 4 | 1 | {value:.1f} | [{low:.1f}, {high:.1f}] |" in summary
    assert "![Pendulum-v1_curves.png](Pendulum-v1_curves.png)" in summary


def test_plot_overlays_several_runs_and_refuses_what_is_not_a_run(tmp_path):
    write_run(tmp_path / "runs" / "a", agents=("sac_baseline",), unfinished_seed=False)
    write_run(tmp_path / "runs" / "b", agents=("sac_baseline",), unfinished_seed=False)
    result = run_script("plot.py", tmp_path, "runs/a", "runs/b", "--out", "both", timeout=120)
    assert result.returncode == 0, result.stderr
    summary = (tmp_path / "both" / "summary.md").read_text()
    assert "sac_baseline (a)" in summary and "sac_baseline (b)" in summary
    (tmp_path / "empty").mkdir()
    for args, message in [(["nowhere"], "no run directory nowhere"),
                          (["empty"], "empty is not a run directory (no results.json or config.json)")]:
        result = run_script("plot.py", tmp_path, *args, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_a_baseline_run_is_stored_apart_and_overlaid(tmp_path):
    result = run_script("learn_simple.py", tmp_path, "--agent", "sac_baseline", "--envs", "Pendulum-v1", "--steps",
                        "400", "--eval-every", "200", "--eval-episodes", "1", "--set", "learning_starts=100",
                        "--set", "hidden_size=32", "--baseline", "--name", "reference", timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "baseline" / "reference" / "results.json").exists()
    write_run(tmp_path / "runs" / "idea", agents=("crossq",), unfinished_seed=False)
    result = run_script("plot.py", tmp_path, "runs/idea", timeout=120)
    assert result.returncode == 0, result.stderr
    summary = (tmp_path / "runs" / "idea" / "plots" / "summary.md").read_text()
    assert "| Pendulum-v1 | sac_baseline (baseline reference) | 1 |" in summary
    result = run_script("plot.py", tmp_path, "runs/idea", "--no-baseline", timeout=120)
    assert "baseline" not in (tmp_path / "runs" / "idea" / "plots" / "summary.md").read_text()


def test_video_records_the_final_policy_to_a_gif_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    result = run_script("learn_simple.py", tmp_path, "--agent", "sac_baseline", "--envs", "Pendulum-v1", "--steps",
                        "300", "--eval-episodes", "1", "--set", "learning_starts=100", "--set", "hidden_size=32",
                        "--video", "1", "--name", "film", timeout=300)
    assert result.returncode == 0, result.stderr
    seed_dir = tmp_path / "runs" / "film" / "sac_baseline" / "Pendulum-v1" / "seed_0"
    gif = (seed_dir / "video.gif").read_bytes()
    assert gif[:6] == b"GIF89a"
    from PIL import Image
    with Image.open(seed_dir / "video.gif") as video:
        assert video.n_frames == 101 and video.size == (250, 250)  # 201 frames of 500 x 500, every other, halved
    events = EventAccumulator(str(seed_dir), size_guidance={"images": 0})
    events.Reload()
    assert [event.step for event in events.Images("eval/video")] == [300]
