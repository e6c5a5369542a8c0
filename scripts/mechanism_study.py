"""Tables and the Pareto plot of issue 12's mechanism study, from the runs of stages 2 and 3.

    python scripts/mechanism_study.py [--variants DIR] [--pareto DIR] [--out DIR]

Stage 2 (`experiment=mechanism_variants`): per setting and variant, forget / retain |Δ| and the gap
(mean ± std over sample seeds), the entries the rule selected and the share in PPP's core, and the
residual metrics per tower; then paired differences (same sample seed) between PPP's rule and SSD's on
PPP's Fisher. Stage 3 (`experiment=mechanism_pareto`): forget mAP against retain mAP over alpha, one
curve per variant, and each curve's retain mAP at matched forgetting (interpolated per sample seed).
Writes `mechanism_study.md` and `pareto.png` / `pareto.pdf` into --out.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

from ppp.report.load import find_runs, tidy  # noqa: E402

GAP = ["delta/forget", "delta/retain", "objective/gap"]
RESIDUAL = ["forget/i2i_map", "forget/t2t_map", "probe/image_auc", "probe/text_auc"]
MATCHED_ABOVE_RETRAIN = (0.0, -2.0, -4.0)  # forget-mAP levels, in points from Retrain's, for the matched comparison
SETTINGS = [
    "base",
    "harder",
    "topic 0.8",
    "forget eight",
    "forget two",
    "32 bits",
    "64 bits",
    "classification (digits, ResNet-18)",
]  # table order  # forget-mAP levels (points above Retrain's) for the matched comparison


# The study's names of its config groups' options (ppp/conf/study/), as the tables print them.
VARIANTS = {
    "ppp_default": "PPP default",
    "ppp_best": "PPP {point}",
    "ppp_best_no_core": "PPP {point}, no core (τ=∞)",
    "ppp_best_gamma1": "PPP {point}, γ=1",
    "ppp_best_no_flip": "PPP {point}, no sign flip",
    "ppp_best_random_neighbours": "PPP {point}, random neighbours",
    "ssd": "SSD official",
    "ssd_per_sample": "SSD per-sample Fisher",
    "ssd_retain_reference": "SSD I_r on D_r",
    "ssd_80_forget": "SSD 80 forget samples",
    "ssd_dataset_order": "SSD dataset order",
}
SETTING_NAMES = {
    "base": "base",
    "harder": "harder",
    "topic_08": "topic 0.8",
    "forget_eight": "forget eight",
    "forget_two": "forget two",
    "bits32": "32 bits",
    "bits64": "64 bits",
    "classification": "classification (digits, ResNet-18)",
}
# Stage 3 puts mechanism_best at PPP's default point (ppp/conf/experiment/mechanism_pareto.yaml).
POINT = {"mechanism_pareto": "default"}


def choice(row: pd.Series, group: str) -> str | None:
    """The option of config group `group` the run was composed with (metrics.json's `choices`), or None for
    runs from before `choices` was recorded."""
    value = row.get(f"choices.{group}")
    return value if isinstance(value, str) else None


def variant_name(row: pd.Series) -> str:
    """The study's name of a run's variant: from its recorded `mechanism_variant` choice, else (runs from
    before choices were recorded) read off its method config."""
    variant = choice(row, "mechanism_variant")
    if variant in VARIANTS:
        return VARIANTS[variant].format(point=POINT.get(choice(row, "experiment"), "best"))
    return variant_name_from_values(row)


def variant_name_from_values(row: pd.Series) -> str:
    """The variant of a run without `choices`, guessed from its method config (stage 2's best point has lam 2000)."""
    if row["method"] == "ppp":
        point = "best" if row["method.lam"] == 2000 else "default"
        parts = [f"PPP {point}"]
        if math.isinf(row["method.tau"]):
            parts.append("no core (τ=∞)")
        if row.get("method.gamma") == 1:
            parts.append("γ=1")
        if row.get("method.sign_flip") is False or row.get("method.sign_flip") == "False":
            parts.append("no sign flip")
        if row.get("method.neighbours") == "random":
            parts.append("random neighbours")
        return ", ".join(parts)
    if row["method"] == "ssd":
        changes = {
            "method.fisher_mode": ("per_sample", "per-sample Fisher"),
            "method.reference": ("retain", "I_r on D_r"),
            "method.forget_samples": (80.0, "80 forget samples"),
            "method.batch_order": ("dataset", "dataset order"),
        }
        moved = [label for key, (value, label) in changes.items() if row.get(key) == value]
        return "SSD " + (", ".join(moved) if moved else "official")
    return str(row["method"])


def setting_name(row: pd.Series) -> str:
    """The study's setting (ppp/conf/study/mechanism_setting/) a run belongs to: its recorded choice, else (runs
    from before choices were recorded) read off its identity."""
    setting = choice(row, "mechanism_setting")
    if setting in SETTING_NAMES:
        return SETTING_NAMES[setting]
    if row["task"] == "classification":
        return "classification (digits, ResNet-18)"
    if row["backbone"] == "clip_small":
        return "harder"
    if "topic_prob=0.8" in row["dataset"]:
        return "topic 0.8"
    if row["forget"] != "six":
        return f"forget {row['forget']}"
    if int(row["bits"]) != 16:
        return f"{int(row['bits'])} bits"
    return "base"


def load(folder: Path) -> pd.DataFrame:
    frame = tidy(find_runs([folder]))
    runs = frame[frame["source"] == "run"].copy()
    runs["variant"] = runs.apply(variant_name, axis=1)
    runs["alpha"] = runs["method.alpha"].astype(float)
    runs["setting"] = runs.apply(setting_name, axis=1)
    references = frame[frame["method"].isin(["original", "retrain"])].copy()
    references["setting"] = references.apply(setting_name, axis=1)
    return pd.concat([runs, references], ignore_index=True)


def mean_std(values: pd.Series, digits: int = 2) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def wide(frame: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    return frame.pivot_table(index=index, columns="metric", values="value", aggfunc="first")


def runs_wide(frame: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """One row per run (identified by `index`), one column per metric."""
    return wide(frame[frame["source"] == "run"], index).reset_index()


def references_wide(frame: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """One row per Original / Retrain (identified by `index`), one column per metric."""
    return wide(frame[frame["method"].isin(["original", "retrain"])], index)


def stage2_tables(frame: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    refs = references_wide(frame, ["setting", "method"]).reset_index()
    out = []
    for setting in [s for s in SETTINGS if s in set(runs["setting"])]:
        group = runs[runs["setting"] == setting]
        out += [
            f"### Setting `{setting}`",
            "",
            "| variant | α | forget \\|Δ\\| | retain \\|Δ\\| | gap | selected | share in core | I→I forget | T→T forget | probe AUC image | probe AUC text |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (variant, alpha), g in group.groupby(["variant", "alpha"], sort=True):
            prefix = "ppp" if variant.startswith("PPP") else "ssd"
            selected = (
                g[f"{prefix}/n_buffer"] + g[f"{prefix}/n_core"] if f"{prefix}/n_core" in g else pd.Series(dtype=float)
            )
            share = g.get(f"{prefix}/share_c", pd.Series(dtype=float)) * 100
            cells = [mean_std(g[m] * 100) for m in GAP] + [mean_std(selected, 0), mean_std(share, 0)]
            cells += [mean_std(g[m] * 100) for m in RESIDUAL if m in g] or ["–"] * 4
            out.append(f"| {variant} | {alpha:g} | " + " | ".join(cells) + " |")
        for _, ref in refs[refs["setting"] == setting].iterrows():
            cells = ["", "", "", "", ""] + [
                f"{ref[m] * 100:.2f}" if m in ref and pd.notna(ref[m]) else "–" for m in RESIDUAL
            ]
            out.append(f"| {ref['method'].capitalize()} | | " + " | ".join(cells) + " |")
        out.append("")
    out.append(
        f"mean ± std over {runs['sample_seed'].nunique()} sample seeds (models of seed 0); |Δ| and gap in "
        "points of mAP (%), residual metrics in %; selected: entries the rule changed (PPP: B ∪ C; SSD: "
        "its selection); share in core: PPP's C among them."
    )
    return out


def overview(runs: pd.DataFrame, metric: str = "objective/gap") -> list[str]:
    """One line per variant, one column per setting: `metric` (in points) as mean ± std over sample seeds."""
    settings = [s for s in SETTINGS if s in set(runs["setting"])]
    out = ["| variant | α | " + " | ".join(settings) + " |", "|---|---|" + "---|" * len(settings)]
    for (variant, alpha), g in runs.groupby(["variant", "alpha"], sort=True):
        cells = [mean_std(g.loc[g["setting"] == setting, metric] * 100) for setting in settings]
        out.append(f"| {variant} | {alpha:g} | " + " | ".join(cells) + " |")
    return out


def paired(runs: pd.DataFrame, a: str, b: str, alpha_a=None, alpha_b=None) -> list[str]:
    """Per setting: mean ± std over sample seeds of (a − b) in forget |Δ|, retain |Δ| and the gap."""
    rows = []
    for setting, g in runs.groupby("setting", sort=False):
        left = g[(g["variant"] == a) & ((g["alpha"] == alpha_a) if alpha_a else True)].set_index("sample_seed")
        right = g[(g["variant"] == b) & ((g["alpha"] == alpha_b) if alpha_b else True)].set_index("sample_seed")
        common = left.index.intersection(right.index)
        if common.empty:
            continue
        diffs = [mean_std((left.loc[common, m] - right.loc[common, m]) * 100) for m in GAP]
        rows.append(f"| {setting} | {a} − {b} | " + " | ".join(diffs) + f" | {len(common)} |")
    return rows


def interpolate_retain(curve: pd.DataFrame, level: float) -> float:
    """Retain mAP where the curve (points over alpha) first crosses forget mAP = level coming from large alpha
    (the untouched end; at small alpha the curves turn back as the model breaks); NaN if it never does."""
    points = curve.sort_values("alpha", ascending=False)[["forget", "retain"]].to_numpy()
    for (f0, r0), (f1, r1) in zip(points[:-1], points[1:]):
        if min(f0, f1) <= level <= max(f0, f1):
            return float(r0 if f1 == f0 else r0 + (r1 - r0) * (level - f0) / (f1 - f0))
    return float("nan")


def pareto(frame: pd.DataFrame, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs_wide(frame, ["variant", "alpha", "sample_seed"])
    runs["forget"] = (runs["forget/i2t_map"] + runs["forget/t2i_map"]) * 50
    runs["retain"] = (runs["retain/i2t_map"] + runs["retain/t2i_map"]) * 50
    refs = references_wide(frame, ["method"])
    ref = {
        m: (
            (refs.loc[m, "forget/i2t_map"] + refs.loc[m, "forget/t2i_map"]) * 50,
            (refs.loc[m, "retain/i2t_map"] + refs.loc[m, "retain/t2i_map"]) * 50,
        )
        for m in refs.index
    }

    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    for variant, g in runs.groupby("variant"):
        curve = g.groupby("alpha")[["forget", "retain"]].mean().sort_index()
        style = "-" if variant.startswith("PPP") else "--"
        ax.plot(curve["forget"], curve["retain"], style, marker="o", markersize=3, label=variant)
        for alpha in (curve.index.min(), curve.index.max()):
            ax.annotate(
                f"α={alpha:g}",
                (curve.loc[alpha, "forget"], curve.loc[alpha, "retain"]),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, 3),
            )
    for name, marker in (("original", "s"), ("retrain", "*")):
        if name in ref:
            ax.plot(*ref[name], marker, color="black", markersize=9, label=name.capitalize())
    ax.set_xlabel("forget mAP (%, mean of I→T and T→I on D_f queries; lower = more forgotten)")
    ax.set_ylabel("retain mAP (%, mean of I→T and T→I on D_r queries)")
    ax.set_title(
        "Forget–retain trade-off over α (digit_scenes, forget six, 16 bits; mean of 3 sample seeds)", fontsize=9
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"pareto.{suffix}", dpi=130)
    plt.close(fig)

    retrain_forget = ref["retrain"][0]
    levels = [retrain_forget + d for d in MATCHED_ABOVE_RETRAIN]
    lines = [
        "| variant | lowest forget mAP reached | "
        + " | ".join(
            f"retain mAP at forget = {lvl:.1f} (Retrain {d:+g})" for lvl, d in zip(levels, MATCHED_ABOVE_RETRAIN)
        )
        + " |",
        "|---|---|" + "---|" * len(levels),
    ]
    for variant, g in runs.groupby("variant"):
        lowest = g.groupby("alpha")["forget"].mean().min()
        cells = []
        for level in levels:
            values = pd.Series([interpolate_retain(s, level) for _, s in g.groupby("sample_seed")])
            reached = values.notna().sum()
            cells.append(
                "not reached"
                if reached == 0
                else mean_std(values) + ("" if reached == len(values) else f" ({reached} of {len(values)} seeds)")
            )
        lines.append(f"| {variant} | {lowest:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Original: forget {ref['original'][0]:.2f}, retain {ref['original'][1]:.2f}; Retrain: forget "
        f"{ref['retrain'][0]:.2f}, retain {ref['retrain'][1]:.2f}. Each sample seed's curve is "
        "interpolated linearly between neighbouring α; mean ± std over the seeds whose curve reaches the level.",
    ]
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=Path, default=ROOT / "outputs/experiments/mechanism_variants")
    parser.add_argument("--pareto", type=Path, default=ROOT / "outputs/experiments/mechanism_pareto")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/mechanism_study")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# Mechanism study (issue 12)", "", "## Stage 2: variants at fixed hyperparameters (test split)", ""]
    if args.variants.exists():
        stage2 = load(args.variants)
        runs = runs_wide(stage2, ["setting", "variant", "alpha", "sample_seed"])
        lines += ["### Gap (forget |Δ| + retain |Δ|, points) per setting", ""] + overview(runs) + [""]
        lines += stage2_tables(stage2, runs)
        lines += [
            "",
            "### Paired differences (same sample seed; negative = first is better)",
            "",
            "| setting | comparison | forget \\|Δ\\| | retain \\|Δ\\| | gap | seeds |",
            "|---|---|---|---|---|---|",
        ]
        lines += paired(runs, "PPP best", "PPP best, no core (τ=∞)")
        lines += paired(runs, "PPP default", "SSD per-sample Fisher", alpha_b=3.0)
        lines += paired(runs, "PPP default", "SSD official", alpha_b=3.0)
    if args.pareto.exists():
        lines += ["", "## Stage 3: Pareto curves over α (test split)", "", "![Pareto](pareto.png)", ""]
        lines += pareto(load(args.pareto), args.out)
    (args.out / "mechanism_study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
