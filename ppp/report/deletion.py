"""Item deletions (issue 22): a table per forget set, a row per model, and for a stream the quality after every
request.

The table: the forgotten pairs' partner R@10 (mean of I→T and T→I) beside held-out pairs' (the level of data
never seen) and, in a stream, everything deleted so far; the partner's expected rank; test mAP (every test query
is kept); |Δ| to Retrain and the Original as the runs computed them; the served index's flipped bits and changed
top-10 lists; unlearning and re-encoding times. The figure: per method, the R@10 of everything deleted so far and
the test mAP after each request of a stream, beside Retrain's (of the same items) and the Original's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ppp.report.figures import palette, plt, save
from ppp.report.load import REFERENCES, Run
from ppp.report.tables import BLOCK, DIRECTIONS, Table, display, lookup, ordered, repeats_note, title

# (column, metrics averaged into it, percent?)
COLUMNS = (
    ("D_f R@10", [f"forget/{d}_r10" for d in DIRECTIONS], True),
    ("deleted R@10", [f"deleted/{d}_r10" for d in DIRECTIONS], True),
    ("held-out R@10", [f"heldout/{d}_r10" for d in DIRECTIONS], True),
    ("D_f rank", [f"forget/{d}_rank" for d in DIRECTIONS], False),
    ("test mAP", [f"retain/{d}_map" for d in DIRECTIONS], True),
    ("|Δ| forget", ["delta/forget"], True),
    ("|Δ| retain", ["delta/retain"], True),
    ("bits flipped", ["index/code_drift_image", "index/code_drift_text"], True),
    ("top-10 changed", [f"index/{d}_top10_changed" for d in DIRECTIONS], True),
    ("unlearn s", ["time/unlearn_s"], False),
    ("re-encode s", ["index/reencode_s"], False),
)


def cell(cells: dict, variant: str, bits: int, keys: list[str], percent: bool) -> str:
    """The mean over `keys` of their cell means (and stds), in % or as is; '–' when the model has none."""
    values = [cells[variant, bits, k] for k in keys if (variant, bits, k) in cells]
    if not values:
        return "–"
    mean, std = float(np.mean([m for m, _ in values])), float(np.mean([s for _, s in values]))
    scale, digits = (100, 1) if percent else (1, 1)
    return f"{scale * mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {scale * std:.{digits}f}")


def deletion_table(stats: pd.DataFrame) -> list[Table]:
    """A table per item forget set (runs with `forget/i2t_r10`): a row per model."""
    tables = []
    items = stats[
        stats["metric"].str.startswith(("forget/", "deleted/", "heldout/", "retain/", "delta/", "index/", "time/"))
    ]
    for (dataset, backbone, forget), block in items.groupby(BLOCK):
        if "forget/i2t_r10" not in set(block["metric"]):
            continue
        cells, present = lookup(block), set(block["metric"])
        columns = [c for c in COLUMNS if any(k in present for k in c[1])]
        for bits in sorted(block["bits"].unique()):
            rows = [
                (display(v), [cell(cells, v, bits, keys, pct) for _, keys, pct in columns])
                for v in ordered(block["variant"])
            ]
            note = (
                f"{repeats_note(block)} R@10: the partner among the first ten (ties broken at random), % of the "
                "pairs; rank: its expected rank; held-out: as many pairs never trained on; test mAP: every test "
                "query (none is forgotten); |Δ| forget: R@10 against Retrain's, |Δ| retain: test mAP against the "
                "Original's; bits flipped and top-10 changed: the served index against the Original's."
            )
            tables.append(
                Table(
                    title(dataset, forget, backbone, f", {bits} bits"),
                    "Model",
                    [c for c, _, _ in columns],
                    rows,
                    note=note,
                )
            )
    return tables


def stream_figure(runs: list[Run], out: Path) -> list[Path]:
    """For every stream (runs with more than one request): R@10 of everything deleted so far and test mAP after
    each request, mean over seeds, a line per method, Retrain and the Original dashed."""
    streams: dict[tuple, list[Run]] = {}
    for run in runs:
        if len(run.record.get("requests", [])) > 1:
            identity = run.identity
            streams.setdefault((identity["dataset"], identity["backbone"], identity["forget"]), []).append(run)
    paths = []
    for (dataset, backbone, forget), group in sorted(streams.items()):
        rows = []
        for run in group:
            for entry in run.record["requests"]:
                for model, figures in entry["figures"].items():
                    name = run.variant if model == "model" else model
                    deleted = [figures.get(f"deleted/{d}_r10", figures.get(f"forget/{d}_r10")) for d in DIRECTIONS]
                    kept = [figures.get(f"retain/{d}_map") for d in DIRECTIONS]
                    rows.append((name, run.identity["seed"], entry["request"], np.mean(deleted), np.mean(kept)))
        frame = pd.DataFrame(rows, columns=["model", "seed", "request", "deleted", "kept"])
        frame = frame.drop_duplicates(["model", "seed", "request"])
        means = frame.groupby(["model", "request"])[["deleted", "kept"]].mean().reset_index()
        colours = palette([m for m in means["model"] if m not in REFERENCES])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for model in ordered(means["model"]):
            line = means[means["model"] == model]
            if model in REFERENCES:  # Original dotted, Retrain dashed, Bad (any other reference) dash-dot
                style = {"color": "black", "linestyle": {"original": ":", "retrain": "--"}.get(model, "-.")}
            else:
                style = {"color": colours[model]}
            for ax, column in zip(axes, ("deleted", "kept")):
                ax.plot(line["request"], 100 * line[column], marker="o", label=display(model), **style)
        axes[0].set_ylabel("R@10 of every pair deleted so far (%)")
        axes[1].set_ylabel("test mAP (%), mean of I→T and T→I")
        for ax in axes:
            ax.set_xlabel("request")
            ax.set_xticks(sorted(means["request"].unique()))
        axes[1].legend(fontsize=7, ncol=2)
        n = frame.loc[~frame["model"].isin(REFERENCES), "seed"].nunique()
        fig.suptitle(
            f"{title(dataset, forget, backbone)}: after each request (mean over {n} seed{'s' if n > 1 else ''})",
            fontsize=9,
        )
        paths += save(fig, out, f"stream_{dataset}_{forget}_{backbone}")
    return paths
