"""Membership attacks reported as the field reports them (issue 21): ROC AUC, balanced accuracy, TPR at low
FPR only where the non-member count supports it, percentile bootstrap intervals, and whether the attack is
informative at all.

Input: one membership score per example, higher = more likely a member. Pure numpy; no scikit-learn.

- AUC: the Mann-Whitney statistic, P(member score > non-member score) + ½ P(tie).
- Balanced accuracy ½ (TPR + TNR) of the rule "member if score ≥ t": t the best threshold on the scored
  examples themselves (`threshold_from="best"`, optimistic), or the best threshold on a separate fit split
  applied to the scored examples (`threshold_from="fit"`).
- TPR at FPR f: with n non-members, k = ⌊f·n⌋ false positives are allowed; the threshold is the (k+1)-th
  largest non-member score and a member counts when its score is strictly above it (so at most k non-members
  pass, fewer with ties). f < 1/n (k = 0) is *unsupported*: reported as such, with n, never interpolated.
- Bootstrap: `n_boot` resamples, members and non-members resampled separately with replacement (seeded);
  the 2.5 and 97.5 percentiles of AUC and of each supported TPR. Examples that share a source (the same
  glyph, jittered several times) are not independent: given `member_groups` / `nonmember_groups` (a group id
  per example), the bootstrap resamples whole groups (a cluster bootstrap), so the interval counts sources,
  not copies.
- `informative`: the AUC interval lies above 0.5. An attack whose interval contains 0.5 cannot tell members
  from non-members; its rates say nothing about privacy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_FPRS = (0.1, 0.01, 0.001)


def _scores(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("membership scores must not be empty")
    if not np.all(np.isfinite(a)):
        raise ValueError("membership scores must be finite")
    return a


def roc_auc(member_scores, nonmember_scores) -> float:
    """Mann-Whitney AUC: P(member > non-member) + ½ P(tie)."""
    m, n = _scores(member_scores), np.sort(_scores(nonmember_scores))
    below = np.searchsorted(n, m, side="left")
    not_above = np.searchsorted(n, m, side="right")
    return float((below + 0.5 * (not_above - below)).sum() / (m.size * n.size))


def allowed_false_positives(fpr: float, n_nonmembers: int) -> int:
    """k = ⌊fpr · n⌋ (with a guard against 0.1·100 = 10.000000000000002-style rounding)."""
    if not 0 < fpr <= 1:
        raise ValueError(f"fpr must lie in (0, 1]; got {fpr}")
    return int(np.floor(fpr * n_nonmembers + 1e-9))


def supported(fpr: float, n_nonmembers: int) -> bool:
    """An FPR is measurable only if it allows at least one false positive: fpr ≥ 1 / n_nonmembers."""
    return allowed_false_positives(fpr, n_nonmembers) >= 1


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float) -> float | None:
    """TPR of "member if score > τ", τ the (k+1)-th largest non-member score, k = ⌊fpr·n⌋; None when
    unsupported (k = 0)."""
    m, n = _scores(member_scores), _scores(nonmember_scores)
    k = allowed_false_positives(fpr, n.size)
    if k < 1:
        return None
    if k >= n.size:
        return 1.0
    tau = np.sort(n)[::-1][k]
    return float((m > tau).mean())


def best_threshold(member_scores, nonmember_scores) -> tuple[float, float]:
    """(t, balanced accuracy) of the best rule "member if score ≥ t" over every score as t (and +∞)."""
    m, n = np.sort(_scores(member_scores)), np.sort(_scores(nonmember_scores))
    candidates = np.unique(np.r_[m, n])
    tpr = 1 - np.searchsorted(m, candidates, side="left") / m.size  # share of members ≥ t
    tnr = np.searchsorted(n, candidates, side="left") / n.size  # share of non-members < t
    bal = 0.5 * (tpr + tnr)
    i = int(np.argmax(bal))
    if bal[i] <= 0.5:  # nothing beats "nobody is a member"
        return float("inf"), 0.5
    return float(candidates[i]), float(bal[i])


def group_resampler(groups, size: int):
    """rng -> indices of one bootstrap resample of `size` examples: examples drawn with replacement when
    `groups` is None, else whole groups (as many draws as there are groups) with every example of each."""
    if groups is None:
        return lambda rng: rng.integers(0, size, size)
    groups = np.asarray(groups).reshape(-1)
    if groups.size != size:
        raise ValueError(f"need one group id per example: {groups.size} ids for {size} scores")
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    return lambda rng: np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def balanced_accuracy(member_scores, nonmember_scores, threshold: float) -> float:
    m, n = _scores(member_scores), _scores(nonmember_scores)
    return float(0.5 * ((m >= threshold).mean() + (n < threshold).mean()))


@dataclass(frozen=True)
class AttackReport:
    """One attack's numbers. `tpr[f]` is None and `f` in `unsupported` when f < 1 / n_nonmembers."""

    auc: float
    auc_ci: tuple[float, float]
    balanced_accuracy: float
    threshold: float
    threshold_from: str  # "best" (on the scored examples: optimistic) or "fit" (chosen on a fit split)
    tpr: dict[float, float | None]
    tpr_ci: dict[float, tuple[float, float] | None]
    unsupported: tuple[float, ...]
    n_members: int
    n_nonmembers: int
    informative: bool
    n_boot: int
    seed: int
    n_targets: int = 1
    notes: list[str] = field(default_factory=list)

    def metrics(self, prefix: str = "mia") -> dict[str, float]:
        """Flat scalar keys for metrics.json; an unsupported TPR is NaN there (see `unsupported`)."""
        out = {
            f"{prefix}/auc": self.auc,
            f"{prefix}/auc_lo": self.auc_ci[0],
            f"{prefix}/auc_hi": self.auc_ci[1],
            f"{prefix}/bal_acc": self.balanced_accuracy,
            f"{prefix}/informative": float(self.informative),
            f"{prefix}/n_members": float(self.n_members),
            f"{prefix}/n_nonmembers": float(self.n_nonmembers),
        }
        for f, value in self.tpr.items():
            ci = self.tpr_ci[f]
            out[f"{prefix}/tpr@{f:g}"] = float("nan") if value is None else value
            out[f"{prefix}/tpr@{f:g}_lo"] = float("nan") if ci is None else ci[0]
            out[f"{prefix}/tpr@{f:g}_hi"] = float("nan") if ci is None else ci[1]
        return out


def attack_report(
    member_scores,
    nonmember_scores,
    fprs=DEFAULT_FPRS,
    n_boot: int = 1000,
    seed: int = 0,
    fit: tuple | None = None,
    level: float = 0.95,
    n_targets: int = 1,
    member_groups=None,
    nonmember_groups=None,
) -> AttackReport:
    """The report of one attack on (member, non-member) scores; `fit=(member_fit, nonmember_fit)` picks the
    balanced-accuracy threshold on a separate split instead of on the scored examples; `member_groups`,
    `nonmember_groups` (a source id per example) make the bootstrap resample sources."""
    m, n = _scores(member_scores), _scores(nonmember_scores)
    fprs = tuple(float(f) for f in fprs)
    ok = [f for f in fprs if supported(f, n.size)]
    unsupported = tuple(f for f in fprs if f not in ok)
    notes = [
        f"TPR at FPR {f:g} unsupported: needs ≥ {int(np.ceil(1 / f))} non-members, have {n.size}" for f in unsupported
    ]

    if fit is None:
        threshold, bal = best_threshold(m, n)
        threshold_from = "best"
    else:
        threshold, _ = best_threshold(*fit)
        bal = balanced_accuracy(m, n, threshold)
        threshold_from = "fit"

    auc = roc_auc(m, n)
    tpr = {f: (tpr_at_fpr(m, n, f) if f in ok else None) for f in fprs}

    rng = np.random.default_rng(seed)
    draw_members, draw_nonmembers = group_resampler(member_groups, m.size), group_resampler(nonmember_groups, n.size)
    boot_auc = np.empty(n_boot)
    boot_tpr = np.empty((n_boot, len(ok)))
    for b in range(n_boot):
        mb = m[draw_members(rng)]
        nb = n[draw_nonmembers(rng)]
        boot_auc[b] = roc_auc(mb, nb)
        for j, f in enumerate(ok):
            boot_tpr[b, j] = tpr_at_fpr(mb, nb, f)
    q = 100 * np.array([(1 - level) / 2, 1 - (1 - level) / 2])
    if n_boot > 0:
        auc_ci = tuple(float(v) for v in np.percentile(boot_auc, q))
        tpr_ci = {f: None for f in fprs}
        for j, f in enumerate(ok):
            tpr_ci[f] = tuple(float(v) for v in np.percentile(boot_tpr[:, j], q))
    else:
        auc_ci, tpr_ci = (float("nan"), float("nan")), {f: None for f in fprs}

    return AttackReport(
        auc=auc,
        auc_ci=auc_ci,
        balanced_accuracy=bal,
        threshold=threshold,
        threshold_from=threshold_from,
        tpr=tpr,
        tpr_ci=tpr_ci,
        unsupported=unsupported,
        n_members=m.size,
        n_nonmembers=n.size,
        informative=bool(auc_ci[0] > 0.5),
        n_boot=n_boot,
        seed=seed,
        n_targets=n_targets,
        notes=notes,
    )


def pooled_report(
    pairs, fprs=DEFAULT_FPRS, n_boot: int = 1000, seed: int = 0, level: float = 0.95, groups=None
) -> AttackReport:
    """One report over several target models' (member_scores, nonmember_scores), pooling the per-example
    scores (as LiRA's leave-one-out over its models does) so that low FPRs have enough non-members. The
    scores must be comparable across targets (e.g. LiRA's calibrated scores, not raw losses of models of
    different quality); the bootstrap resamples the pooled examples, or with `groups` (per pair, the
    (member, non-member) source ids) the sources, each with all its examples of every target."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pooled_report needs at least one (member_scores, nonmember_scores) pair")
    m = np.concatenate([_scores(a) for a, _ in pairs])
    n = np.concatenate([_scores(b) for _, b in pairs])
    member_groups = nonmember_groups = None
    if groups is not None:
        member_groups = np.concatenate([np.asarray(a) for a, _ in groups])
        nonmember_groups = np.concatenate([np.asarray(b) for _, b in groups])
    return attack_report(
        m,
        n,
        fprs=fprs,
        n_boot=n_boot,
        seed=seed,
        level=level,
        n_targets=len(pairs),
        member_groups=member_groups,
        nonmember_groups=nonmember_groups,
    )
