"""Figures 1, 3 and 4 as PNG and PDF; each is drawn only where the runs it needs are present."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402

from ppp.evaluation.delta import QUALITY, SIDES  # noqa: E402
from ppp.report.load import REFERENCES, SETTING, Run, stored, where  # noqa: E402
from ppp.report.stats import aggregate  # noqa: E402
from ppp.report.tables import display, ordered  # noqa: E402

SPLIT_NAMES = {"forget": "D_f (forget set)", "retain": "D_r (retained set)"}
GROUP_COLOURS = {"forget": "tab:red", "neighbour": "tab:orange", "other": "tab:blue"}
BAR_HUES = (0, 2, 8, 10, 6, 14)  # tab20 pairs (dark / light per direction) without green, kept for the means
FORGET_SAMPLES = "method.forget_samples"


def save(fig, out: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        paths.append(out / f"{re.sub(r'[^A-Za-z0-9.=-]+', '_', name).strip('_')}.{ext}")
        fig.savefig(paths[-1], dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def palette(variants) -> dict[str, tuple]:
    """One colour per method, the same in every figure of a report (tab20 beyond ten methods, so none repeat)."""
    names = ordered(variants)
    colours = plt.cm.tab10 if len(names) <= 10 else plt.cm.tab20
    return {v: colours(i % colours.N) for i, v in enumerate(names)}


def quality_label(task: str) -> str:
    return "mAP (%), mean of I→T and T→I" if task == "retrieval" else "accuracy (%)"


def split_means(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """Per run, the mean of the task's quality metrics on one split (mAP over both directions, or accuracy),
    as rows with metric = split."""
    keys = {f"{split}/{name}" for names in QUALITY.values() for name in names}
    rows = frame[frame["metric"].isin(keys)]
    per_run = rows.groupby(SETTING + ["method", "variant", "seed", "sample_seed"], dropna=False)["value"].mean()
    return per_run.reset_index().assign(metric=split)


def figure3(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Quality vs the number of forget classes, mean with 95 % CI over repeats, a line per method;
    panels D_f and D_r. Drawn per dataset x backbone x bits where runs differ in how many classes they forget."""
    paths, colours = [], palette(frame["variant"])
    methods = frame[~frame["method"].isin(REFERENCES)]
    for (dataset, task, backbone, bits), group in methods.groupby(["dataset", "task", "backbone", "bits"]):
        if group["n_forget"].nunique() < 2:
            continue
        sets = sorted(set(zip(group["n_forget"], group["forget"])))
        position = {forget: i for i, (_, forget) in enumerate(sets)}
        block = where(frame, dataset=dataset, backbone=backbone, bits=bits)
        block = block[block["forget"].isin(position)]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
        handles = {}
        for ax, (split, _) in zip(axes, SIDES):
            summary = aggregate(split_means(block, split))
            for variant in ordered(summary["variant"]):
                line = summary[summary["variant"] == variant].sort_values("forget", key=lambda f: f.map(position))
                x = line["forget"].map(position).to_numpy()
                y, ci = 100 * line["mean"].to_numpy(), 100 * np.nan_to_num(line["ci95"].to_numpy())
                style = "--" if variant in REFERENCES else "-"
                (handles[variant],) = ax.plot(x, y, style, marker="o", color=colours[variant], label=display(variant))
                # a t interval over 3 repeats can pass 0 or 100 %; the metric cannot
                ax.fill_between(
                    x, np.clip(y - ci, 0, 100), np.clip(y + ci, 0, 100), color=colours[variant], alpha=0.18, linewidth=0
                )
            ax.set_xticks(
                range(len(sets)), [f"{n}\n" + textwrap.fill(f.replace(",", ", "), 18) for n, f in sets], fontsize=8
            )
            ax.set_xlabel("number of forget classes (and which)")
            ax.set_ylabel(quality_label(task))
            ax.set_title(SPLIT_NAMES[split])
            ax.grid(alpha=0.3)
        ordered_handles = [handles[v] for v in ordered(handles)]
        labels = [h.get_label() for h in ordered_handles]
        fig.legend(
            ordered_handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=legend_columns(labels),
            frameon=False,
        )
        fig.suptitle(f"{dataset}, {backbone}, {bits} bits: mean with 95 % CI over repeats (shaded)")
        fig.tight_layout()
        paths += save(fig, out, f"fig3_{dataset}_{backbone}_{bits}bits")
    return paths


def legend_columns(labels: list[str], width_chars: int = 180) -> int:
    """Columns for a legend below the axes: up to 6, fewer when the labels are long (a variant with its parameters
    runs to 90 characters), so that the legend does not stretch the figure far beyond its axes."""
    return max(1, min(len(labels), 6, width_chars // max(map(len, labels))))


def bar_settings(task: str, bits: list[int]) -> list[tuple[int, str]]:
    """The bars of one group: bits x direction (retrieval) or bits (classification)."""
    return [(b, name) for b in bits for name in QUALITY[task]]


def figure4(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Bars per bits x direction, grouped by the number of forget samples, with 95 % CI error bars,
    the reference level (Retrain for D_f, Original for D_r) per bar and each group's mean."""
    if FORGET_SAMPLES not in frame:
        return []
    paths = []
    runs = frame[(frame["source"] == "run") & ~frame["method"].isin(REFERENCES) & frame[FORGET_SAMPLES].notna()]
    for (dataset, task, backbone, forget, method), group in runs.groupby(
        ["dataset", "task", "backbone", "forget", "method"]
    ):
        if group[FORGET_SAMPLES].nunique() < 2:
            continue
        others = [
            c
            for c in group.columns
            if c.startswith("method.") and c != FORGET_SAMPLES and group[c].astype(str).nunique() > 1
        ]
        for values, sub in group.groupby(others, dropna=False) if others else [((), group)]:
            extra = ", ".join(f"{c[7:]}={v}" for c, v in zip(others, np.atleast_1d(values)))
            name = display(method) + (f" ({extra})" if extra else "")
            references = where(frame, dataset=dataset, backbone=backbone, forget=forget)
            paths += draw_sample_sizes(
                sub,
                references,
                task,
                f"{dataset} (forget {forget}), {backbone}: {name}",
                out,
                f"fig4_{dataset}_{forget}_{backbone}_{name}",
            )
    return paths


def draw_sample_sizes(
    runs: pd.DataFrame, references: pd.DataFrame, task: str, heading: str, out: Path, name: str
) -> list[Path]:
    sizes = sorted(runs[FORGET_SAMPLES].unique())
    stats = aggregate(runs, ["bits", FORGET_SAMPLES, "metric"]).set_index(["bits", FORGET_SAMPLES, "metric"])
    levels = references.groupby(["method", "bits", "metric"])["value"].mean()
    settings = bar_settings(task, sorted(runs["bits"].unique()))
    width = 0.8 / len(settings)
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 1.6 * len(sizes) + 3), 7.5), sharex=True)
    for ax, (split, reference) in zip(axes, SIDES):
        heights, extent = np.full((len(sizes), len(settings)), np.nan), []
        for j, (bits, metric) in enumerate(settings):
            key = f"{split}/{metric}"
            cells = [stats.loc[(bits, s, key)] if (bits, s, key) in stats.index else None for s in sizes]
            heights[:, j] = [100 * c["mean"] if c is not None else np.nan for c in cells]
            errors = [100 * np.nan_to_num(c["ci95"]) if c is not None else 0 for c in cells]
            x = np.arange(len(sizes)) + (j - (len(settings) - 1) / 2) * width
            label = f"{bits}-{metric.split('_')[0].upper()}"
            colour = plt.cm.tab20(BAR_HUES[(j // 2) % len(BAR_HUES)] + j % 2)
            ax.bar(x, heights[:, j], width, yerr=errors, capsize=2, color=colour, label=label)
            extent += [*(heights[:, j] - errors), *(heights[:, j] + errors)]
            if (reference, bits, key) in levels.index:
                level = 100 * levels[(reference, bits, key)]
                ax.hlines(
                    [level] * len(x),
                    x - width / 2,
                    x + width / 2,
                    colors="black",
                    linewidth=2,
                    label=display(reference) if j == 0 else None,
                )
                extent.append(level)
        for i, mean in enumerate(np.nanmean(heights, axis=1)):
            ax.hlines(
                mean,
                i - 0.42,
                i + 0.42,
                colors="tab:green",
                linestyles="--",
                label="mean over settings" if i == 0 else None,
            )
        ax.set_ylabel(f"{SPLIT_NAMES[split].split()[0]} {'mAP' if task == 'retrieval' else 'accuracy'} (%)")
        low, high = np.nanmin(extent), np.nanmax(extent)  # zoomed to the bars, as differences are small
        ax.set_ylim(max(0.0, low - 0.15 * (high - low) - 1), high + 0.1 * (high - low) + 1)
        ax.set_title(SPLIT_NAMES[split], fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(sizes)), [f"{s:g}" for s in sizes])
    axes[-1].set_xlabel("forget samples used (method.forget_samples)")
    fig.suptitle(f"{heading}\nbars: mean with 95 % CI over repeats; black: reference level")
    fig.tight_layout()
    return save(fig, out, name)


def figure1(runs: list[Run], out: Path) -> list[Path]:
    """Densities of the distances to the forget prototype (forget / neighbour / other samples), under
    the original model and after unlearning: one figure per setting and method, from its first repeat
    whose run stored both (`<model>/density/<group>` in arrays.npz)."""
    paths, done = [], set()
    for run in sorted(runs, key=lambda r: (r.variant, r.identity["seed"], r.identity["sample_seed"], str(r.dir))):
        identity = run.identity
        setting = {k: identity[k] for k in ("dataset", "backbone", "forget", "bits")}
        key = (*setting.values(), run.variant)
        if run.method in REFERENCES or key in done or not any(k.startswith("method/density/") for k in run.arrays):
            continue
        after = {g: run.arrays[f"method/density/{g}"] for g in GROUP_COLOURS if f"method/density/{g}" in run.arrays}
        before = {
            g: stored(runs, setting, "original", f"density/{g}").get((identity["seed"], None)) for g in GROUP_COLOURS
        }
        before = {g: v for g, v in before.items() if v is not None}
        if not before:
            continue
        done.add(key)
        heading = (
            f"{setting['dataset']} (forget {setting['forget']}), {setting['backbone']}, {setting['bits']} bits, "
            f"seed {identity['seed']}"
        )
        paths += draw_densities(
            {"before: Original": before, f"after: {display(run.variant)}": after},
            heading,
            out,
            f"fig1_{setting['dataset']}_{setting['forget']}_{setting['backbone']}_{setting['bits']}bits_{run.variant}",
        )
    return paths


def draw_densities(panels: dict[str, dict[str, np.ndarray]], heading: str, out: Path, name: str) -> list[Path]:
    values = np.concatenate([v for groups in panels.values() for v in groups.values()])
    pad = 0.05 * (np.ptp(values) or 1.0)
    grid = np.linspace(values.min() - pad, values.max() + pad, 400)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), sharex=True, sharey=True)
    for ax, (label, groups) in zip(np.atleast_1d(axes), panels.items()):
        for group, colour in GROUP_COLOURS.items():
            distances = groups.get(group)
            if distances is None or len(distances) == 0:
                continue
            legend = f"{group} (n={len(distances)})"
            if len(distances) > 1 and np.ptp(distances) > 0:
                density = gaussian_kde(distances)(grid)
                ax.plot(grid, density, color=colour, label=legend)
                ax.fill_between(grid, density, color=colour, alpha=0.15, linewidth=0)
            else:
                ax.axvline(float(distances[0]), color=colour, label=legend)
        ax.set_title(label)
        ax.set_xlabel("distance to the forget-class prototype")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("density")
    fig.suptitle(heading)
    fig.tight_layout()
    return save(fig, out, name)
