"""Aggregate statistics over seeds as rliable computes them (Agarwal et al. 2021, "Deep Reinforcement Learning
at the Edge of the Statistical Precipice", https://arxiv.org/abs/2108.13264): the interquartile mean and its
stratified bootstrap confidence interval (percentile method), on numpy."""

from __future__ import annotations

import numpy as np

from lab.results import iqm, iqm_rows


def stratified_bootstrap_ci(scores: np.ndarray, repetitions: int = 2000, confidence: float = 0.95,
                            seed: int = 0) -> tuple[float, float, float]:
    """(IQM, low, high) of `scores` [runs, tasks]: each bootstrap sample redraws the runs with replacement
    within every task (the strata), pools the tasks, and takes the IQM; the interval is the percentile one.
    With one task it is the ordinary bootstrap over seeds."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        scores = scores[:, None]
    runs, tasks = scores.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, runs, size=(repetitions, runs, tasks))  # a run index per (sample, slot, task)
    samples = scores[picks, np.arange(tasks)]  # [sample, slot, task]: the picked run's score in that task
    estimates = iqm_rows(samples.reshape(repetitions, runs * tasks))
    tail = (1 - confidence) / 2
    low, high = np.percentile(estimates, [100 * tail, 100 * (1 - tail)])
    return iqm(scores.ravel()), float(low), float(high)
