"""A search's chosen point against the current defaults on the held-out forget sets (issue 21; the adoption rule
of docs/decisions.md, "Adopting a chosen point as the default").

    python run.py -m experiment=heldout_defaults_digit_scenes method=ppp
    python run.py -m experiment=heldout_defaults_digit_scenes $(cat docs/results/tune_v2_ppp_digit_scenes/best_overrides.txt)
    python -m ppp.report outputs/experiments/heldout_defaults_digit_scenes
    python scripts/heldout_gap.py outputs/report/results.csv 'ppp (alpha=8.6, ...)' 'ppp (alpha=55.4225, ...)'

The two variants are named as the report names them (a method with its parameters; an unknown name lists them).
Prints, in %, the mean `objective/gap` (forget |Δ| to Retrain + retain |Δ| to Original, test split) of the
defaults and of the chosen point, per forget set and overall (bits
averaged within each (forget set, seed) cell), the paired difference chosen − defaults over the cells with its
95 % Student-t interval, and the rule's verdict: the chosen point is adopted when its overall mean is lower.
"""

from __future__ import annotations

import sys

import pandas as pd

from ppp.report.stats import halfwidth


def cells(results: pd.DataFrame, variant: str) -> pd.Series:
    """objective/gap in %, one value per (forget set, seed): the mean over bits."""
    runs = results[(results.source == "run") & (results.metric == "objective/gap") & (results.variant == variant)]
    if runs.empty:
        sys.exit(f"no runs of {variant!r}; variants: {sorted(results.variant.unique())}")
    return 100 * runs.groupby(["forget", "seed"]).value.mean()


def main(path: str, defaults: str, chosen: str) -> None:
    results = pd.read_csv(path)
    both = pd.concat({"defaults": cells(results, defaults), "chosen": cells(results, chosen)}, axis=1).dropna()
    print(f"{path}: objective/gap, %, test split; defaults = {defaults!r}, chosen = {chosen!r}\n")
    print("| forget set | seeds | defaults | chosen | chosen − defaults |")
    print("|---|---|---|---|---|")
    for forget, g in both.groupby(level="forget", sort=True):
        print(
            f"| [{forget}] | {len(g)} | {g.defaults.mean():.2f} | {g.chosen.mean():.2f} "
            f"| {(g.chosen - g.defaults).mean():+.2f} |"
        )
    diff = both.chosen - both.defaults
    n = len(diff)
    half = halfwidth(diff.std(), n)
    print(
        f"| all | {n} cells | {both.defaults.mean():.2f} | {both.chosen.mean():.2f} "
        f"| {diff.mean():+.2f} [{diff.mean() - half:+.2f}, {diff.mean() + half:+.2f}] |"
    )
    lower = int((diff < 0).sum())
    verdict = "adopt the chosen point" if diff.mean() < 0 else "keep the defaults"
    print(f"\nchosen lower on {lower} of {n} cells; rule: {verdict}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
