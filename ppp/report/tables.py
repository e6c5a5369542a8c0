"""The paper's tables from the aggregated frame: Table 2 (retrieval), Table 1 (classification), and
the paired bootstrap of two methods; each renders as Markdown and as LaTeX (booktabs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ppp.errors import ConfigError
from ppp.evaluation.delta import DEFINITIONS, QUALITY, SIDES, gap
from ppp.report.load import REFERENCES, Run, paired, stored, where
from ppp.report.stats import paired_bootstrap

METHOD_ORDER = (
    *REFERENCES,
    "finetune",
    "bad_teacher",
    "amnesiac",
    "neggrad_plus",
    "scrub",
    "salun",
    "fisher_zero",
    "fisher",
    "ssd",
    "ppp",
    "ccup",  # the paper's plain projection
    "ccup_ridge",  # beside it: the ridge operator
)
DISPLAY = {
    "original": "Original",
    "bad": "Bad",
    "retrain": "Retrain",
    "finetune": "Finetune",
    "bad_teacher": "Bad Teacher",
    "amnesiac": "Amnesiac",
    "neggrad_plus": "NegGrad+",
    "scrub": "SCRUB",
    "salun": "SalUn",
    "fisher_zero": "Fisher (zeroing)",
    "fisher": "Fisher",
    "ssd": "SSD",
    "ppp": "PPP",
    "ccup": "CCUP",
    "ccup_ridge": "CCUP (ridge)",
}
DIRECTIONS = ("i2t", "t2i")
UNIMODAL = ("i2i", "t2t")  # residual mAP (evaluator.residual): shown beside the cross-modal rows, not in |Δ|
PROBE_ROWS = {"probe/image_auc": "Probe AUC, image codes", "probe/text_auc": "Probe AUC, text codes"}
CHANGED_GROUPS = ("token_table", "text_tower", "image_tower", "heads", "body", "head", "text", "image", "all")
CHANGED_ROWS = {
    f"changed/{g}_{stat}": f"Changed {g.replace('_', ' ')}: {label}"
    for g in CHANGED_GROUPS
    for stat, label in (("share", "share"), ("median_rel", "median rel. change"))
}
# Rows of Table 1 when the runs hold them: the legacy rates (`forget/mia_shokri` of runs before issue 21) and the
# membership audit's AUCs on the forget set (`ppp/evaluation/audit_membership.py`).
MIA_ROWS = {
    "forget/mia": "MIA",
    "forget/mia_shokri": "MIA (Shokri)",
    "audit/primary/forget/auc": "MIA AUC (primary)",
    "audit/shokri/forget/auc": "MIA AUC (Shokri)",
}
BLOCK = ["dataset", "backbone", "forget"]


@dataclass
class Table:
    """A table with a row-label column, optional spanning column groups and a note under it."""

    title: str
    corner: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]
    groups: list[tuple[str, int]] = field(default_factory=list)
    note: str = ""
    rule_before: set[int] = field(default_factory=set)  # rows that open a section (|Δ|)

    def markdown(self) -> str:
        if self.groups:
            spans = [g for g, n in self.groups for _ in range(n)]
            columns = [f"{g} {c}" for g, c in zip(spans, self.columns)]
        else:
            columns = self.columns
        cell = lambda text: text.replace("|", r"\|")  # noqa: E731 (a pipe would end the cell)
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(cell(c) for c in [self.corner, *columns]) + " |",
            "|" + "---|" * (len(columns) + 1),
        ]
        lines += ["| " + " | ".join(cell(c) for c in [label, *cells]) + " |" for label, cells in self.rows]
        return "\n".join(lines + ([f"\n{self.note}"] if self.note else [])) + "\n"

    def latex(self) -> str:
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{tex(self.title)}. {tex(self.note)}}}",
            rf"\begin{{tabular}}{{l{'c' * len(self.columns)}}}",
            r"\toprule",
        ]
        if self.groups:
            lines.append(" & ".join(["", *(rf"\multicolumn{{{n}}}{{c}}{{{tex(g)}}}" for g, n in self.groups)]) + r" \\")
            starts = np.cumsum([2] + [n for _, n in self.groups])
            lines.append(" ".join(rf"\cmidrule(lr){{{s}-{e - 1}}}" for s, e in zip(starts[:-1], starts[1:])))
        lines.append(" & ".join(tex(c) for c in [self.corner, *self.columns]) + r" \\")
        lines.append(r"\midrule")
        for i, (label, cells) in enumerate(self.rows):
            if i in self.rule_before:
                lines.append(r"\midrule")
            lines.append(" & ".join(tex(c) for c in [label, *cells]) + r" \\")
        return "\n".join(lines + [r"\bottomrule", r"\end{tabular}", r"\end{table}"]) + "\n"


def tex(text: str) -> str:
    """Plain table text -> LaTeX: escape specials, typeset ±, |Δ|, D_f / D_r."""
    for char in "&%#_":
        text = text.replace(char, "\\" + char)
    for plain, typeset in (
        ("±", r"$\pm$"),
        ("|Δ|", r"$|\Delta|$"),
        ("Δ", r"$\Delta$"),
        ("−", "$-$"),
        (r"D\_f", r"$\mathcal{D}_f$"),
        (r"D\_r", r"$\mathcal{D}_r$"),
        ("→", r"$\to$"),
    ):
        text = text.replace(plain, typeset)
    return text


def display(variant: str) -> str:
    method, _, rest = variant.partition(" ")
    return " ".join(filter(None, [DISPLAY.get(method, method), rest]))


def natural(text: str) -> list:
    """Sort key that puts 'forget_samples=20' before 'forget_samples=100'."""
    return [float(p) if re.fullmatch(r"\d+(\.\d+)?", p) else p for p in re.split(r"(\d+(?:\.\d+)?)", text)]


def ordered(variants) -> list[str]:
    """References first (Original, Bad, Retrain), then the methods in the paper's order, then others."""

    def key(v):
        method = v.split(" ")[0]
        rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
        return rank, natural(method), natural(v)

    return sorted(set(variants), key=key)


def fmt(mean: float, std: float) -> str:
    """A cell in percent: mean ± std, or the mean alone for a single run."""
    if pd.isna(mean):
        return "–"
    return f"{100 * mean:.2f}" if pd.isna(std) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def repeats_note(stats: pd.DataFrame) -> str:
    """What the ± means in a block, from its method (not reference) cells."""
    methods = stats[~stats["method"].isin(REFERENCES)]
    source = methods if len(methods) else stats
    labels = sorted(set(source["repeats"]))
    n = sorted(set(source["n"]))
    count = f"{n[0]}" if len(n) == 1 else f"{n[0]}–{n[-1]}"
    if labels == ["one run"]:
        return "Cells: one run each (no std)."
    note = f"Cells: mean ± std (ddof = 1) over {count} {' / '.join(labels)}"
    if labels == ["sample seeds"]:
        note += " (models fixed; the reference rows do not vary)"
    return note + "; a cell without ± comes from one run."


def definition_of(block: pd.DataFrame, override: str | None) -> str:
    """|Δ|'s definition: the override, else the runs' `delta` (the config default when unrecorded)."""
    if override is not None:
        return override
    found = sorted(set(block.loc[~block["method"].isin(REFERENCES), "delta"].dropna()))
    if len(found) > 1:
        raise ConfigError(
            f"runs disagree on the |delta| definition ({', '.join(found)}); pick one with --delta "
            f"({' or '.join(DEFINITIONS)})"
        )
    return found[0] if found else "mean_abs"


def lookup(stats: pd.DataFrame) -> dict:
    return {(r.variant, r.bits, r.metric): (r.mean, r.std) for r in stats.itertuples()}


def delta_cells(cells: dict, variant: str, task: str, settings: list[int], definition: str) -> list[str]:
    """|Δ| of one method on each side (forget vs Retrain, retain vs Original) over bits x directions,
    computed on the cell means (as the paper's tables are); '–' where a reference is missing."""
    out = []
    for split, reference in SIDES:
        pairs = [
            (cells[variant, b, k][0], cells[reference, b, k][0])
            for b in settings
            for k in (f"{split}/{name}" for name in QUALITY[task])
            if (variant, b, k) in cells and (reference, b, k) in cells
        ]
        out.append(f"{100 * gap(*zip(*pairs), definition):.2f}" if pairs else "–")
    return out


def title(dataset: str, forget: str, backbone: str, extra: str = "") -> str:
    return f"{dataset} (forget {forget.replace(',', ', ')}), {backbone}{extra}"


def table2(stats: pd.DataFrame, frame: pd.DataFrame, delta: str | None = None) -> list[Table]:
    """Retrieval: rows bits x direction, columns methods x {D_f mAP, D_r mAP}, then |Δ|."""
    tables = []
    retrieval = stats[(stats["task"] == "retrieval") & stats["metric"].str.endswith("_map")]
    for (dataset, backbone, forget), block in retrieval.groupby(BLOCK):
        definition = definition_of(where(frame, dataset=dataset, backbone=backbone, forget=forget), delta)
        variants, bits, cells = ordered(block["variant"]), sorted(block["bits"].unique()), lookup(block)
        present = set(block["metric"])
        if not any(m.startswith("forget/") for m in present):
            continue  # an item forget set has no forget queries: its table is deletion.md (ppp/report/deletion.py)
        directions = DIRECTIONS + tuple(d for d in UNIMODAL if f"forget/{d}_map" in present)
        rows = [
            (
                f"{b}-{d.upper()}",
                [
                    fmt(*cells.get((v, b, f"{s}/{d}_map"), (np.nan, np.nan)))
                    for v in variants
                    for s in ("forget", "retain")
                ],
            )
            for b in bits
            for d in directions
        ]
        deltas = [
            c
            for v in variants
            for c in (["", ""] if v in REFERENCES else delta_cells(cells, v, "retrieval", bits, definition))
        ]
        rows.append(("|Δ|", deltas))
        note = (
            f"{repeats_note(block)} |Δ| ({definition}) over {len(bits) * 2} settings (bits × direction): "
            f"D_f vs Retrain, D_r vs Original. mAP in %."
            + (
                " I2I / T2T: unimodal mAP on the same codes (residual knowledge per tower), not in |Δ|."
                if len(directions) > len(DIRECTIONS)
                else ""
            )
        )
        tables.append(
            Table(
                title(dataset, forget, backbone),
                "Bits",
                ["D_f mAP", "D_r mAP"] * len(variants),
                rows,
                [(display(v), 2) for v in variants],
                note,
                {len(rows) - 1},
            )
        )
    return tables


def table1(stats: pd.DataFrame, frame: pd.DataFrame, delta: str | None = None) -> list[Table]:
    """Classification: rows D_f acc, D_r acc, MIA, then |Δ|; columns methods."""
    tables = []
    classification = stats[stats["task"] == "classification"]
    for (dataset, backbone, forget, bits), block in classification.groupby(BLOCK + ["bits"]):
        definition = definition_of(where(frame, dataset=dataset, backbone=backbone, forget=forget), delta)
        variants, cells = ordered(block["variant"]), lookup(block)
        names = {
            "forget/acc": "D_f acc",
            "retain/acc": "D_r acc",
            **{k: v for k, v in MIA_ROWS.items() if k in set(block["metric"])},
        }
        rows = [
            (label, [fmt(*cells.get((v, bits, metric), (np.nan, np.nan))) for v in variants])
            for metric, label in names.items()
        ]
        deltas = {
            v: ["", ""] if v in REFERENCES else delta_cells(cells, v, "classification", [bits], definition)
            for v in variants
        }
        rows += [
            ("|Δ| D_f (vs Retrain)", [deltas[v][0] for v in variants]),
            ("|Δ| D_r (vs Original)", [deltas[v][1] for v in variants]),
        ]
        note = f"{repeats_note(block)} Accuracy and MIA (attack success on D_f) in %."
        several_bits = classification.loc[classification["dataset"] == dataset, "bits"].nunique() > 1
        extra = f", {bits} bits" if several_bits else ""
        tables.append(
            Table(
                title(dataset, forget, backbone, extra),
                "",
                [display(v) for v in variants],
                rows,
                note=note,
                rule_before={len(rows) - 2},
            )
        )
    return tables


def residual_table(stats: pd.DataFrame) -> list[Table]:
    """Per setting and bits, one column per method: the forget mAP in every direction beside the
    linear-probe AUCs of each tower (`evaluator.residual`), and which parameters the method changed
    (`changed/*`): does the class leave each tower, and what moved?"""
    tables = []
    for (dataset, backbone, forget, bits), block in stats.groupby(BLOCK + ["bits"]):
        present = set(block["metric"])
        if not present & (set(PROBE_ROWS) | set(CHANGED_ROWS)):
            continue
        variants, cells = ordered(block["variant"]), lookup(block)
        names = {
            **{f"forget/{d}_map": f"D_f {d.upper()} mAP" for d in DIRECTIONS + UNIMODAL},
            "forget/acc": "D_f acc",
            **PROBE_ROWS,
            **CHANGED_ROWS,
        }
        rows = [
            (label, [fmt(*cells.get((v, bits, metric), (np.nan, np.nan))) for v in variants])
            for metric, label in names.items()
            if metric in present
        ]
        note = (
            f"{repeats_note(block)} In %. Probe: logistic regression on the database codes of one tower, "
            f"target 'carries a forget class', ROC AUC on the queries (50 = no trace of the class). Changed: "
            f"entries that moved by more than 1e-6 of their Original value, and their median relative change."
        )
        tables.append(
            Table(
                title(dataset, forget, backbone, f", {bits} bits"), "", [display(v) for v in variants], rows, note=note
            )
        )
    return tables


def bootstrap_table(
    runs: list[Run], stats: pd.DataFrame, pair: tuple[str, str], resamples: int, seed: int
) -> list[Table]:
    """Per retrieval setting, bits x direction x split: mAP of A and B, A - B and its 95 % paired
    bootstrap interval over queries (from arrays.npz), and whether the interval excludes 0."""
    tables = []
    retrieval = stats[stats["task"] == "retrieval"]
    for (dataset, backbone, forget), block in retrieval.groupby(BLOCK):
        variants = set(block["variant"])
        pairs = [
            (a, b)
            for a in ordered(variants)
            if a.split(" ")[0] == pair[0]
            for b in ordered(variants)
            if b.split(" ")[0] == pair[1]
        ]
        rows = []
        for a, b in pairs:
            for bits in sorted(block["bits"].unique()):
                setting = {"dataset": dataset, "backbone": backbone, "forget": forget, "bits": int(bits)}
                for split in ("forget", "retain"):
                    for direction in DIRECTIONS:
                        key = f"per_query/{split}/{direction}_map"
                        left, right = stored(runs, setting, a, key), stored(runs, setting, b, key)
                        matched = paired(left, right)
                        if not matched:
                            continue
                        x = np.stack([left[ka] for ka, _ in matched])
                        y = np.stack([right[kb] for _, kb in matched])
                        diff, low, high = paired_bootstrap(x, y, resamples, seed)
                        label = f"{display(a)} − {display(b)}" if len(pairs) > 1 else ""
                        rows.append(
                            (
                                f"{bits}-{direction.upper()} D_{split[0]}" + (f" {label}" if label else ""),
                                [
                                    f"{100 * x.mean():.2f}",
                                    f"{100 * y.mean():.2f}",
                                    f"{100 * diff:+.2f}",
                                    f"[{100 * low:+.2f}, {100 * high:+.2f}]",
                                    "yes" if low > 0 or high < 0 else "no",
                                    str(x.shape[1]),
                                    str(len(matched)),
                                ],
                            )
                        )
        if rows:
            a_name, b_name = display(pair[0]), display(pair[1])
            note = (
                f"Paired bootstrap over queries ({resamples} resamples, seed {seed}), 95 % percentile interval of "
                f"the mAP difference {a_name} − {b_name} (in points), per-query APs averaged over the paired "
                f"repeats; 'beyond noise': the interval excludes 0."
            )
            tables.append(
                Table(
                    f"{a_name} vs {b_name}: {title(dataset, forget, backbone)}",
                    "Setting",
                    [f"{a_name} mAP", f"{b_name} mAP", "Δ mAP", "95 % CI", "beyond noise", "queries", "repeats"],
                    rows,
                    note=note,
                )
            )
    return tables
