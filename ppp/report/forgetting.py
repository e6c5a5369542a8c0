"""Forgetting quality over N model seeds (issue 23): the competition's ε per forget example and its scores, and
U-LiRA, for every model of a setting whose runs stored `fq/statistic` (`evaluator.example_statistics=true`).

The N unlearned models of a method are its runs on seeds 0 … N−1 (one sample seed each), the N retrained ones
the Retrain rows of the same runs; the Original is scored the same way, as what not forgetting looks like.
Final score = forget score × retained quality ratio (`fq/retain_quality`) × test quality ratio (the evaluator's
`retain/` quality: the test queries or images of what is kept), each to Retrain's mean. U-LiRA: each seed in turn
is the target, the other N − 1 seeds' unlearned and retrained models its shadows; members are the targets'
unlearned models, non-members their retrained ones, pooled over targets and forget examples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppp.evaluation.attack_metrics import attack_report
from ppp.evaluation.delta import QUALITY
from ppp.evaluation.forgetting_quality import EPSILON_MAX, competition_score, ulira
from ppp.report.figures import palette, plt, save
from ppp.report.load import REFERENCES, SETTING, Run
from ppp.report.tables import Table, display, ordered, title

MIN_MODELS = 3  # the competition's buckets need N >= 3


def per_seed(runs: list[Run]) -> dict[tuple, dict[str, dict[int, dict]]]:
    """setting -> model -> seed -> {statistic, retain_quality, test_quality}, from every run's own model and
    its reference rows (the same reference of one seed counted once)."""
    out: dict[tuple, dict[str, dict[int, dict]]] = {}
    for run in runs:
        identity = run.identity
        setting = tuple(identity[k] for k in SETTING)
        task = identity["task"]
        models = {run.variant: ("method", run.record["metrics"])}
        models.update({name: (name, values) for name, values in run.record.get("references", {}).items()})
        for model, (prefix, metrics) in models.items():
            statistic = run.arrays.get(f"{prefix}/fq/statistic")
            if statistic is None:
                continue
            test = np.mean([metrics.get(f"retain/{q}", np.nan) for q in QUALITY[task]])
            entry = {"statistic": statistic, "retain_quality": metrics["fq/retain_quality"], "test_quality": test}
            out.setdefault(setting, {}).setdefault(model, {}).setdefault(identity["seed"], entry)
    return out


def scored(models: dict[str, dict[int, dict]]) -> dict[str, tuple]:
    """Per model with N >= MIN_MODELS seeds shared with Retrain: its competition score and U-LiRA report."""
    retrain = models.get("retrain", {})
    out = {}
    for model, seeds in models.items():
        shared = sorted(set(seeds) & set(retrain))
        if model == "retrain" or len(shared) < MIN_MODELS:
            continue
        u = np.stack([seeds[s]["statistic"] for s in shared])
        r = np.stack([retrain[s]["statistic"] for s in shared])
        quality = lambda side, key: [side[s][key] for s in shared]  # noqa: E731
        score = competition_score(
            u,
            r,
            quality(seeds, "retain_quality"),
            quality(retrain, "retain_quality"),
            quality(seeds, "test_quality"),
            quality(retrain, "test_quality"),
        )
        shadows = [(np.delete(u, i, 0), np.delete(r, i, 0)) for i in range(len(shared))]
        members = np.concatenate([ulira(u[i], *others) for i, others in enumerate(shadows)])
        nonmembers = np.concatenate([ulira(r[i], *others) for i, others in enumerate(shadows)])
        examples = np.tile(np.arange(u.shape[1]), len(shared))  # the cluster bootstrap resamples forget examples
        report = attack_report(
            members.ravel(), nonmembers.ravel(), member_groups=examples, nonmember_groups=examples, seed=0
        )
        out[model] = (score, report, len(shared))
    return out


def forgetting_tables(runs: list[Run], out: Path, figures: bool = True) -> tuple[list[Table], list[Path]]:
    """A table per setting (a row per model) and, with `figures`, a histogram of ε per model."""
    tables, paths = [], []
    for setting, models in sorted(per_seed(runs).items(), key=lambda kv: str(kv[0])):
        results = scored(models)
        if not results:
            continue
        dataset, _, backbone, forget, _, bits = setting
        rows, eps = [], {}
        for model in ordered(results):
            score, report, n = results[model]
            lowest = min((f for f, v in report.tpr.items() if v is not None), default=None)
            eps[model] = score.epsilons
            rows.append(
                (
                    display(model),
                    [
                        str(n),
                        f"{score.epsilon_cap:.2f}",
                        f"{np.median(score.epsilons):.2f}",
                        f"{100 * (score.epsilons > score.epsilon_cap).mean():.0f}",
                        f"{score.forget_score:.3f}",
                        f"{score.final_score:.3f}",
                        f"{report.auc:.3f} [{report.auc_ci[0]:.2f}, {report.auc_ci[1]:.2f}]",
                        "–" if lowest is None else f"{100 * report.tpr[lowest]:.1f} @ {100 * lowest:g} %",
                    ],
                )
            )
        name = title(dataset, forget, backbone, f", {bits} bits")
        note = (
            f"{len(next(iter(eps.values())))} forget examples. N: model seeds per side (unlearned, retrained); "
            "ε cap: the largest finite ε N models can show (log(N − 1 − Nδ)); separated: % of examples whose "
            "distributions no threshold confuses (ε reported as 50); scores as the NeurIPS 2023 unlearning "
            "challenge computes them; U-LiRA: each seed the target against the other N − 1, AUC 0.5 = "
            "indistinguishable from Retrain."
        )
        columns = ["N", "ε cap", "median ε", "separated %", "forget score", "final score", "U-LiRA AUC", "TPR"]
        tables.append(Table(name, "Model", columns, rows, note=note))
        paths += epsilon_histogram(eps, name, out) if figures else []
    return tables, paths


def epsilon_histogram(eps: dict[str, np.ndarray], name: str, out: Path) -> list[Path]:
    """The ε of every forget example, a panel per model; the separated examples (ε reported as 50) as a hatched
    bar of their own right of the axis' finite values."""
    models = list(eps)
    colours = palette([m for m in models if m not in REFERENCES])
    fig, axes = plt.subplots(1, len(models), figsize=(2.6 * len(models), 2.8), sharey=True, squeeze=False)
    top = max(float(np.max(np.where(e >= EPSILON_MAX, 0, e))) for e in eps.values()) + 0.25
    bins = np.linspace(0, top, 13)
    width = bins[1] - bins[0]
    for ax, model in zip(axes[0], models):
        values, colour = eps[model], colours.get(model, "black")
        ax.hist(values[values < EPSILON_MAX], bins=bins, color=colour, label="ε")
        ax.bar(
            top + width,
            int((values >= EPSILON_MAX).sum()),
            width,
            color="white",
            edgecolor=colour,
            hatch="//",
            label="separated",
        )
        ax.set_title(display(model), fontsize=8)
        ax.set_xlabel("ε per forget example")
    axes[0][0].set_ylabel("forget examples")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{name}: per-example ε", fontsize=9, y=1.02)
    fig.tight_layout()
    return save(fig, out, f"epsilon_{name}")
