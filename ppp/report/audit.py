"""The audit's tables and ROC curves (issue 21): a column per model, Original and Retrain first.

A table per setting: forget and retain quality, each membership attack's AUC with its bootstrap interval and
its TPR at the lowest FPR the non-member count supports, on the forget and the retained set, the relearning
steps and the distance to Retrain beside its floor. An attack whose interval on the Original's forget members
covers 0.5 cannot tell members at all, so its cells are marked uninformative (†) on every model of the table:
they are no evidence of privacy. The ROC figure draws each model's curve for one attack on log-log axes,
the per-example scores of all its repeats pooled (arrays.npz).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ppp.evaluation.delta import QUALITY
from ppp.report.figures import palette, plt, save
from ppp.report.load import Run, stored
from ppp.report.tables import BLOCK, Table, display, lookup, ordered, repeats_note, title

ATTACK_NAMES = {
    "baseline": "baseline",
    "lira_offline": "LiRA offline",
    "lira_online": "LiRA online",
    "rmia": "RMIA",
    "shokri": "Shokri",
    "rank": "rank-only",
}
SETS = {"forget": "D_f", "retain": "D_r"}
RELEARN = {"retain": "on D_r", "k1": "1-shot", "k5": "5-shot", "k25": "25-shot"}
UNINFORMATIVE = "†"
NO_DELETION_SIGNAL = "‡"


def attacks_in(metrics: set[str]) -> list[str]:
    """The attacks a block reports, in ATTACK_NAMES' order."""
    return [a for a in ATTACK_NAMES if f"audit/{a}/forget/auc" in metrics]


def lowest_fpr(cells: dict, bits: int, attack: str, split: str) -> str | None:
    """The smallest FPR at which the Original has a TPR of `attack` on `split` (the runs report NaN where the
    non-member count does not support an FPR)."""
    prefix = f"audit/{attack}/{split}/tpr@"
    fprs = [
        metric[len(prefix) :]
        for variant, b, metric in cells
        if variant == "original"
        and b == bits
        and metric.startswith(prefix)
        and not metric.endswith(("_lo", "_hi"))
        and not pd.isna(cells[variant, b, metric][0])
    ]
    return min(fprs, key=float) if fprs else None


def quality(cells: dict, variant: str, bits: int, split: str, task: str) -> tuple[float, float]:
    """The mean over the task's quality metrics (both mAP directions, or accuracy) of one split's cell means."""
    values = [cells.get((variant, bits, f"{split}/{q}"), (np.nan, np.nan)) for q in QUALITY[task]]
    return float(np.mean([m for m, _ in values])), float(np.mean([s for _, s in values]))


def percent(mean: float, std: float = np.nan) -> str:
    if pd.isna(mean):
        return "–"
    return f"{100 * mean:.1f}" if pd.isna(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def interval(cells: dict, variant: str, bits: int, key: str, flag: str = "") -> str:
    """`AUC [lo, hi]` from the cell means of the point and of the interval's ends."""
    point = cells.get((variant, bits, key), (np.nan, np.nan))[0]
    if pd.isna(point):
        return "–"
    lo = cells.get((variant, bits, f"{key}_lo"), (np.nan,))[0]
    hi = cells.get((variant, bits, f"{key}_hi"), (np.nan,))[0]
    return f"{point:.3f} [{lo:.2f}, {hi:.2f}]{flag}"


def informative(cells: dict, bits: int, attack: str, split: str) -> bool:
    """The attack tells the Original's members of `split` from non-members: the mean lower end above 0.5."""
    lo = cells.get(("original", bits, f"audit/{attack}/{split}/auc_lo"), (np.nan,))[0]
    return bool(lo > 0.5)


def tells_deletion(cells: dict, bits: int, attack: str) -> bool:
    """The attack tells a kept class from a deleted one: on D_f, the Original's interval lies above Retrain's.
    Retrain's D_f AUC need not be 0.5: a forget pair can share sources with retained training pairs."""
    original_lo = cells.get(("original", bits, f"audit/{attack}/forget/auc_lo"), (np.nan,))[0]
    retrain_hi = cells.get(("retrain", bits, f"audit/{attack}/forget/auc_hi"), (np.nan,))[0]
    return bool(pd.isna(retrain_hi) or original_lo > retrain_hi)


def flag(cells: dict, bits: int, attack: str, split: str) -> str:
    """† where the attack cannot tell the Original's members of `split`, ‡ where on D_f it cannot tell the
    Original from Retrain; nothing where it can."""
    if not informative(cells, bits, attack, split):
        return UNINFORMATIVE
    if split == "forget" and not tells_deletion(cells, bits, attack):
        return NO_DELETION_SIGNAL
    return ""


def steps_cell(cells: dict, variant: str, bits: int, condition: str) -> str:
    """Mean relearn steps over the repeats that came back, and how many did."""
    steps = cells.get((variant, bits, f"relearn/{condition}/steps"), (np.nan, np.nan))[0]
    back = cells.get((variant, bits, f"relearn/{condition}/back"), (np.nan,))[0]
    if pd.isna(back):
        return "–"
    if back == 0:
        return "not back"
    return f"{steps:.0f} ({100 * back:.0f} % back)" if back < 1 else f"{steps:.0f}"


def code_length(task: str, bits: int) -> str:
    """ ", 16 bits" for a hashing model; nothing for a classifier (its runs carry the config's unused bits)."""
    return f", {bits} bits" if task == "retrieval" else ""


def audit_table(stats: pd.DataFrame) -> list[Table]:
    """One table per setting and bits that has audit keys; see the module docstring."""
    tables = []
    for (dataset, backbone, forget, bits), block in stats.groupby(BLOCK + ["bits"]):
        present = set(block["metric"])
        attacks = attacks_in(present)
        if not attacks:
            continue
        task = str(block["task"].iloc[0])
        variants, cells = ordered(block["variant"]), lookup(block)
        rows = [
            (f"{SETS[s]} quality", [percent(*quality(cells, v, bits, s, task)) for v in variants])
            for s in ("forget", "retain")
        ]
        for attack in attacks:
            for split in SETS:
                key, mark = f"audit/{attack}/{split}/auc", flag(cells, bits, attack, split)
                rows.append(
                    (
                        f"{ATTACK_NAMES[attack]} AUC, {SETS[split]}",
                        [interval(cells, v, bits, key, mark) for v in variants],
                    )
                )
            loo = f"audit/{attack}/loo_forget/auc"
            if loo in present:  # the references' own power: one value per seed, shown once
                rows.append(
                    (
                        f"{ATTACK_NAMES[attack]} AUC, D_f, leave-one-out over the references",
                        [interval(cells, v, bits, loo) if v == "original" else "" for v in variants],
                    )
                )
            fpr = lowest_fpr(cells, bits, attack, "forget")
            if fpr is not None:
                key = f"audit/{attack}/forget/tpr@{fpr}"
                rows.append(
                    (
                        f"{ATTACK_NAMES[attack]} TPR@{float(fpr):g}, D_f",
                        [percent(cells.get((v, bits, key), (np.nan,))[0]) for v in variants],
                    )
                )
        for condition, label in RELEARN.items():
            if f"relearn/{condition}/back" in present:
                rows.append((f"relearn steps, {label}", [steps_cell(cells, v, bits, condition) for v in variants]))
        if "relearn/weight_distance" in present:
            rows.append(
                (
                    "L2 to Original",
                    [f"{cells.get((v, bits, 'relearn/weight_distance'), (np.nan,))[0]:.2f}" for v in variants],
                )
            )
        for key in sorted(m for m in present if m.startswith("dist/forget/")):
            name = key.rsplit("/", 1)[1]
            floor = cells.get((variants[0], bits, f"dist_floor/forget/{name}"), (np.nan,))[0]
            rows.append(
                (
                    f"to Retrain, D_f {name} (floor {floor:.3f})",
                    [f"{cells.get((v, bits, key), (np.nan,))[0]:.3f}" for v in variants],
                )
            )
        counts = {s: block.loc[block["metric"].str.fullmatch(f"audit/[a-z_]+/{s}/n_nonmembers"), "mean"] for s in SETS}
        n = ", ".join(f"{SETS[s]} {c.iloc[0]:.0f}" for s, c in counts.items() if len(c))
        note = (
            f"{repeats_note(block)} Quality in % (mAP: mean of I→T and T→I). AUC: mean over repeats of each run's "
            f"ROC AUC, in brackets the means of its 95 % bootstrap interval's ends; members are training samples "
            f"of the set, non-members held-out samples of the same classes (non-members: {n}). TPR in % at the "
            f"lowest FPR the non-member count supports. {UNINFORMATIVE}: the attack's interval on the Original's "
            f"members of that set covers 0.5, so it cannot tell members there and its cells are no evidence of privacy; "
            f"{NO_DELETION_SIGNAL}: on D_f the Original's interval overlaps Retrain's, so it cannot tell a deleted "
            f"class from a kept one. Leave-one-out: each reference model in turn as the target against the others, "
            f"pooled (the attack's power on the recipe itself; the same for every model of a seed). "
            f"Relearn: optimiser steps until forget quality is back within the margin of the Original's (not back: not within the budget). To Retrain: per-example distance of the outputs to Retrain's on the forget queries; the "
            f"floor is Retrain against Retrain of the next seed."
        )
        tables.append(
            Table(
                title(dataset, forget, backbone, f"{code_length(task, bits)}, audit"),
                "",
                [display(v) for v in variants],
                rows,
                note=note,
            )
        )
    return tables


def roc_figures(runs: list[Run], stats: pd.DataFrame, attack: str, out: Path) -> list[Path]:
    """Per setting and bits: each model's ROC curve of `attack` on the forget set, log-log axes, the
    per-example scores of every repeat pooled; the diagonal is chance."""
    from sklearn.metrics import roc_curve  # scikit-learn only where an audit is drawn

    paths = []
    for (dataset, backbone, forget, bits), block in stats.groupby(BLOCK + ["bits"]):
        if f"audit/{attack}/forget/auc" not in set(block["metric"]):
            continue
        variants = ordered(block["variant"])
        colours = palette(variants)
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
        setting = {"dataset": dataset, "backbone": backbone, "forget": forget, "bits": bits}
        floor = 1.0
        for v in variants:
            members = stored(runs, setting, v, f"audit/{attack}/forget/member_scores")
            nonmembers = stored(runs, setting, v, f"audit/{attack}/forget/nonmember_scores")
            repeats = sorted(set(members) & set(nonmembers), key=str)
            if not repeats:
                continue
            scores = [np.concatenate([side[r] for r in repeats]) for side in (members, nonmembers)]
            fpr, tpr, _ = roc_curve(np.r_[np.ones(len(scores[0])), np.zeros(len(scores[1]))], np.concatenate(scores))
            keep = fpr > 0
            floor = min(floor, float(fpr[keep].min()))
            ax.plot(
                fpr[keep],
                tpr[keep],
                color=colours[v],
                label=display(v),
                lw=1.6 if v in ("original", "retrain") else 1.0,
            )
        ax.plot([floor, 1], [floor, 1], color="grey", ls=":", lw=1, label="chance")
        ax.set(xscale="log", yscale="log", xlabel="false positive rate", ylabel="true positive rate")
        extra = code_length(str(block["task"].iloc[0]), bits)
        ax.set_title(f"{ATTACK_NAMES[attack]} on D_f: {title(dataset, forget, backbone, extra)}", fontsize=9)
        # beside the axes: inside, the lower right corner hid the curves that fall below chance (Bad Teacher's)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        paths += save(fig, out, f"roc_{attack}_{dataset}_{backbone}_{forget}_{bits}")
    return paths
