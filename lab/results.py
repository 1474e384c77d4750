"""Aggregating run records: the interquartile mean across seeds, results.json and the console table."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def iqm(values) -> float:
    """Interquartile mean (Agarwal et al. 2021, https://arxiv.org/abs/2108.13264): the mean of the middle 50%.

    Cuts int(0.25 * n) values from each end, as scipy.stats.trim_mean(values, 0.25) does, so with fewer than
    four seeds it is the plain mean.
    """
    return float(iqm_rows(np.asarray(values, dtype=float)))


def iqm_rows(scores: np.ndarray) -> np.ndarray:
    """The IQM of each row of `scores` [rows, values] (of `scores` itself when it is one row)."""
    ordered = np.sort(scores, axis=-1)
    cut = int(0.25 * ordered.shape[-1])
    return ordered[..., cut:ordered.shape[-1] - cut].mean(axis=-1)


def aggregate(records: list[dict], expected: dict[tuple[str, str], int]) -> list[dict]:
    """One row per (agent, env): IQM, min, max of final_return over the seeds that finished."""
    groups = defaultdict(list)
    for record in records:
        groups[record["agent"], record["env"]].append(record)
    rows = []
    for (agent, env), total in expected.items():
        finished = groups.get((agent, env), [])
        finals = [r["final_return"] for r in finished]
        rows.append({"agent": agent, "env": env, "seeds": len(finished), "seeds_planned": total,
                     "iqm_final_return": iqm(finals) if finals else None,
                     "min_final_return": min(finals) if finals else None,
                     "max_final_return": max(finals) if finals else None,
                     "mean_sps": float(np.mean([r["sps"] for r in finished])) if finished else None,
                     "wall_s": round(max((r["wall_s"] for r in finished), default=0.0), 1)})
    return rows


def format_table(rows: list[dict]) -> str:
    def number(value, spec):
        return format(value, spec) if value is not None else "-"

    agent_width = max([22, *(len(row["agent"]) for row in rows)])  # presets make long names
    env_width = max([26, *(len(row["env"]) for row in rows)])
    lines = [f"{'agent':<{agent_width}} {'env':<{env_width}} {'seeds':>5} {'IQM final':>10} {'min':>9} {'max':>9} "
             f"{'steps/s':>8} {'wall s':>7}"]
    for row in rows:
        lines.append(f"{row['agent']:<{agent_width}} {row['env']:<{env_width}} "
                     f"{row['seeds']:>2}/{row['seeds_planned']:<2} "
                     f"{number(row['iqm_final_return'], '10.1f')} {number(row['min_final_return'], '9.1f')} "
                     f"{number(row['max_final_return'], '9.1f')} {number(row['mean_sps'], '8.0f')} "
                     f"{row['wall_s']:>7.1f}")
    return "\n".join(lines)
