"""Seed-level comparison of two methods in a committed results file (issue 20).

    python scripts/seed_pairs.py docs/results/table2_digit_scenes/results.csv \
        'ppp (alpha=8.6, lam=14.6, lam_max=0.07, tau=0.17)' 'ssd (alpha=3, lam=1)'

The paired bootstrap of `python -m ppp.report --compare` resamples the queries of the repeats' mean
per-query APs: its interval covers query sampling only. This prints, per forget set x bits x direction x
split (mAP in %): each method's mean ± sample std over the repeats, the difference A − B paired by
(seed, sample_seed) as mean ± std, its 95 % Student-t interval over the pairs (which covers the
variation between repeats, model seeds or sample seeds, whichever the runs varied), the number of pairs
and on how many of them A − B has the sign of the mean.
"""

from __future__ import annotations

import sys

import pandas as pd
from scipy import stats


def main(path: str, a: str, b: str) -> None:
    d = pd.read_csv(path)
    d = d[(d.source == "run") & d.metric.str.match(r"(forget|retain)/(i2t|t2i)_map$")].copy()
    d["value"] *= 100
    d["sample_seed"] = d["sample_seed"].fillna(-1)
    seeds = sorted(d.seed.unique())
    samples = sorted(d.sample_seed.unique())
    varied = "model seeds" if len(seeds) > 1 else "sample seeds"
    print(
        f"{path}: A = {a}, B = {b}; pairs over {varied} (seeds {[int(s) for s in seeds]}, sample seeds {[int(s) for s in samples if s >= 0]})\n"
    )
    print("| forget | bits | metric | A | B | A − B (paired) | 95 % t interval | pairs | same sign |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = ["forget", "bits", "metric", "seed", "sample_seed"]
    va = d[d.variant == a].set_index(keys).value
    vb = d[d.variant == b].set_index(keys).value
    if va.empty or vb.empty:
        sys.exit(f"no runs of {a!r} or {b!r}; variants: {sorted(d.variant.unique())}")
    both = pd.concat({"a": va, "b": vb}, axis=1).dropna()
    both = both[~both.index.duplicated()]
    for (forget, bits, metric), g in both.groupby(level=["forget", "bits", "metric"], sort=True):
        diff = g.a - g.b
        n = len(diff)
        half = stats.t.ppf(0.975, n - 1) * diff.std() / n**0.5 if n > 1 else float("nan")
        sign = (diff > 0) if diff.mean() > 0 else (diff < 0)
        name = (
            metric.replace("forget/", "D_f ")
            .replace("retain/", "D_r ")
            .replace("i2t_map", "I→T")
            .replace("t2i_map", "T→I")
        )
        print(
            f"| {forget} | {bits} | {name} | {g.a.mean():.2f} ± {g.a.std():.2f} | {g.b.mean():.2f} ± {g.b.std():.2f} "
            f"| {diff.mean():+.2f} ± {diff.std():.2f} | [{diff.mean() - half:+.2f}, {diff.mean() + half:+.2f}] | {n} | {int(sign.sum())} of {n} |"
        )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
