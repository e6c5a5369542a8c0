"""Test Figure 4's claims cell by cell on a committed Figure 4 run (issue 20).

    python scripts/fig4_claims.py [docs/results/fig4_sample_size/results.csv]

The paper says that more forget samples give (1) narrower confidence intervals on D_f, (2) deeper
forgetting and (3) the best forget/retain trade-off at 60-80 samples. Per bits x direction this prints,
from the smallest to the largest number of forget samples: the D_f mAP's sample std (ddof 1) and the
half-width of its 95 % Student-t interval over the repeats (Figure 4's bars), the D_f mAP against
Retrain's, and the number of samples with the smallest trade-off gap |D_f - Retrain| + |D_r - Original|
(cell means). The last row does the same on |Delta| (mean_abs over all cells, forget + retain), the
report's summary. mAP in %.
"""

from __future__ import annotations

import sys

import pandas as pd
from scipy import stats

DIRS = {"i2t": "I→T", "t2i": "T→I"}


def main(path: str) -> None:
    d = pd.read_csv(path)
    d = d[d.metric.str.match(r"(forget|retain)/(i2t|t2i)_map$")].copy()
    d["split"] = d.metric.str.split("/").str[0]
    d["dir"] = d.metric.str.extract(r"/(i2t|t2i)_map")[0]
    d["value"] *= 100
    refs = d[d.source == "reference"].groupby(["method", "bits", "dir", "split"]).value.mean()
    runs = d[d.source == "run"]
    n_col = "method.forget_samples"
    counts = sorted(runs[n_col].dropna().astype(int).unique())
    lo, hi = counts[0], counts[-1]
    stat = runs.groupby([n_col, "bits", "dir", "split"]).value.agg(["mean", "std", "count"])
    stat["half"] = stat["std"] * stats.t.ppf(0.975, stat["count"] - 1) / stat["count"] ** 0.5
    repeats = sorted(set(stat["count"]))
    print(f"{path}: forget samples {counts}, repeats per cell {repeats}\n")
    print(
        f"| bits | direction | D_f std, {lo} → {hi} | D_f 95 % CI half-width, {lo} → {hi} | narrower at {hi}? "
        f"| D_f mAP, {lo} → {hi} (Retrain) | lower at {hi}? | best trade-off at (gap) | in 60–80? |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    tally = {"narrower": 0, "lower": 0, "best in 60-80": 0, "cells": 0}
    for bits in sorted(runs.bits.unique()):
        for dr in DIRS:
            f_lo, f_hi = stat.loc[(lo, bits, dr, "forget")], stat.loc[(hi, bits, dr, "forget")]
            retrain, original = refs[("retrain", bits, dr, "forget")], refs[("original", bits, dr, "retain")]
            gaps = {
                n: abs(stat.loc[(n, bits, dr, "forget")]["mean"] - retrain)
                + abs(stat.loc[(n, bits, dr, "retain")]["mean"] - original)
                for n in counts
            }
            best = min(gaps, key=gaps.get)
            narrower, lower, in_range = f_hi["half"] < f_lo["half"], f_hi["mean"] < f_lo["mean"], 60 <= best <= 80
            tally["narrower"] += narrower
            tally["lower"] += lower
            tally["best in 60-80"] += in_range
            tally["cells"] += 1
            yes = {True: "yes", False: "no"}
            print(
                f"| {bits} | {DIRS[dr]} | {f_lo['std']:.2f} → {f_hi['std']:.2f} | {f_lo['half']:.2f} → {f_hi['half']:.2f} "
                f"| {yes[narrower]} | {f_lo['mean']:.2f} → {f_hi['mean']:.2f} ({retrain:.2f}) | {yes[lower]} "
                f"| {best} ({gaps[best]:.2f}) | {yes[in_range]} |"
            )
    # |Delta| over all cells (the report's mean_abs): forget vs Retrain, retain vs Original
    summary = {}
    for n in counts:
        f = [
            abs(stat.loc[(n, b, dr, "forget")]["mean"] - refs[("retrain", b, dr, "forget")])
            for b in sorted(runs.bits.unique())
            for dr in DIRS
        ]
        r = [
            abs(stat.loc[(n, b, dr, "retain")]["mean"] - refs[("original", b, dr, "retain")])
            for b in sorted(runs.bits.unique())
            for dr in DIRS
        ]
        summary[n] = (sum(f) / len(f), sum(r) / len(r))
    best = min(summary, key=lambda n: sum(summary[n]))
    print(
        f"| all | \\|Δ\\| forget + retain | | | | | | {best} ({sum(summary[best]):.2f}) | {'yes' if 60 <= best <= 80 else 'no'} |"
    )
    print(
        f"\nnarrower at {hi}: {tally['narrower']} of {tally['cells']} cells; lower D_f mAP at {hi}: {tally['lower']} of "
        f"{tally['cells']}; best trade-off at 60-80: {tally['best in 60-80']} of {tally['cells']}"
    )
    print(
        "|Δ| forget / retain (sum) per count: "
        + ", ".join(f"{n}: {f:.2f} / {r:.2f} ({f + r:.2f})" for n, (f, r) in summary.items())
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/fig4_sample_size/results.csv")
