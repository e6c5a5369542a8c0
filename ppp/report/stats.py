"""Mean, std and 95 % intervals over repeats of a setting, and the paired bootstrap over queries.

std is the sample standard deviation (ddof = 1); a setting with one repeat has no std (NaN) and is
shown without ±. The 95 % interval across repeats is Student's t (mean ± t(0.975, n-1) · std / √n).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ppp.report.load import REPLICATE, SETTING

GROUP = SETTING + ["method", "variant", "metric"]


def halfwidth(std, n, level: float = 0.95):
    """Half-width of the t interval of the mean (NaN where n < 2)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = stats.t.ppf(0.5 + level / 2, np.where(n > 1, n - 1, np.nan))
        return t * np.asarray(std, dtype=float) / np.sqrt(n)


def repeats_label(pairs) -> str:
    """Which seed varied across the repeats [(seed, sample_seed), ...] of one setting."""
    pairs = {(int(s), None if pd.isna(ss) else int(ss)) for s, ss in pairs}
    seeds = {s for s, _ in pairs}
    if len(pairs) == 1:
        return "one run"
    if len(seeds) == 1:
        return "sample seeds"
    return "seeds" if len(pairs) == len(seeds) else "seeds × sample seeds"


def aggregate(frame: pd.DataFrame, keys: list[str] = GROUP) -> pd.DataFrame:
    """mean, std (ddof = 1), n, ci95 (half-width) and which seed varied, per group of `keys`."""
    grouped = frame.groupby(keys, dropna=False, sort=True)
    out = grouped["value"].agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    out["ci95"] = halfwidth(out["std"], out["n"])
    labels = grouped[REPLICATE].apply(lambda g: repeats_label(g.itertuples(index=False, name=None)))
    out["repeats"] = labels.to_numpy()
    return out


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95, chunk: int = 256
) -> tuple[float, float, float]:
    """Difference of mAP (a - b) and its percentile bootstrap interval, resampling queries.

    `a`, `b`: per-query APs, shape (repeats, queries), the same queries in the same order in every row
    and in both. A resample draws queries with replacement and keeps them across repeats (a query is
    the unit that varies), so the interval covers query sampling, not seed-to-seed variation.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same queries on both sides, got {a.shape} and {b.shape}")
    per_query = (a - b).mean(axis=0)
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            per_query[rng.integers(0, per_query.size, (min(chunk, resamples - start), per_query.size))].mean(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(per_query.mean()), float(low), float(high)
