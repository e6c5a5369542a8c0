"""Per-example forgetting quality over many models (issue 23): the NeurIPS 2023 Machine Unlearning Challenge's
per-example ε and score, and U-LiRA's per-example likelihood ratio.

Input for both: a statistic per (model, forget example), shape (N models, E examples), under N models that
unlearned the forget set and N retrained without it (the competition's statistic is LiRA's logit-scaled
confidence, `membership_scores.logit_confidence`; any per-example statistic works). Tensors on any device
(numpy arrays: CPU); the threshold attack runs on the inputs' device, nothing assumes CUDA.

The competition's estimate (ported from google-deepmind/unlearning_evaluation, `metric.py` and `main.py`,
read at commit ffae0ff; rewritten, not copied):
- Per example, "upper" is the distribution (unlearned or retrained) with the larger median (retrained only when
  strictly larger), "peaky" the one with the smaller range (the lower-median one on a tie).
- Too peaky: if the smaller range is below 1 % of the larger, ε = `EPSILON_MAX` (50, the published
  `EPSILON_CAP`) without any threshold.
- Decision rules, on a grid of `THRESHOLDS_PER_UNIT` (100) thresholds per unit of the statistic:
  single thresholds t from the smallest to the largest value of both, "upper if s ≥ t"; double thresholds
  [l, r], "peaky if l ≤ s ≤ r", r on a grid from peaky.max − 2 to peaky.max + 2 and, for each r, l on a grid of
  ⌈4 · 100⌉ from r − w − 2 to r − w + 2 (w the peaky range, 2 the published margin).
- Each rule's FPR and FNR are shares of the N models (multiples of 1/N). FPR = FNR = 0 (perfect separation):
  ε = ∞; exactly one of them 0: the rule is discarded (too few models to tell); otherwise
  ε = max(log(1 − δ − FPR) − log FNR, log(1 − δ − FNR) − log FPR), a term dropped where its log's argument is
  not positive (the rule discarded when both are), clipped below at 0. δ = `DELTA` = 1e-5.
- The example's ε is the largest over the kept rules, clipped to [0, `EPSILON_MAX`] (∞ → 50).
- Forget score: buckets of width 0.5 from 0 to ⌈log(N − 1)⌉; bucket k (ε in [k/2, (k + 1)/2)) is worth 2^−k
  points, ε beyond the last bucket 0; the score is the mean over the forget examples (1 = all ε < 0.5).
- Final score (main.py): forget score × (retain quality / Retrain's) × (test quality / Retrain's), each
  quality the mean over the N models (accuracy there; retain and test mAP for retrieval).

What N caps: the smallest non-zero FPR and FNR are 1/N, so the largest finite ε is
log(1 − δ − 1/N) − log(1/N) = log(N − 1 − Nδ) (`epsilon_cap`); above it the estimate can only say "separated"
(reported as 50). The buckets end at ⌈log(N − 1)⌉, the first integer at or above that cap: N = 512 gives
14 buckets (ε < 7), N = 32 8 (ε < 4), N = 4 4 (ε < 2).

U-LiRA (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid a false sense of privacy",
SaTML 2025), from the paper's description: per forget example, Gaussians of the statistic over shadow models
that unlearned it and over shadow models retrained without it; a target model scores log N(s; μ_u, σ_u²) −
log N(s; μ_r, σ_r²), which is LiRA online with the unlearned models as IN and the retrained as OUT, so it is
`membership_scores.lira_online`; reported over the forget examples with `attack_metrics.attack_report` (AUC,
TPR at the FPRs the number of retrained targets supports: that is what the models cap there).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from ppp.evaluation.attack_metrics import DEFAULT_FPRS, AttackReport, attack_report
from ppp.evaluation.membership_scores import lira_online

DELTA = 1e-5
EPSILON_MAX = 50.0  # the published EPSILON_CAP: what a separated or too peaky example reports
THRESHOLDS_PER_UNIT = 100
MARGIN = 2.0  # the double threshold's search margin around the peaky distribution, in units of the statistic
PEAKY_RATIO = 0.01
BUCKET_WIDTH = 0.5


def _models_by_examples(x, name: str, device=None) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64, device=device)
    if t.dim() != 2 or t.shape[0] < 2 or t.shape[1] < 1:
        raise ValueError(f"{name} must be (N models, E examples) with N >= 2; got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t


def _grid(start: float, stop: float, device) -> torch.Tensor:
    """The published threshold grid: ⌈(stop − start) · 100⌉ evenly spaced points from start to stop."""
    steps = math.ceil((stop - start) * THRESHOLDS_PER_UNIT)
    return torch.linspace(start, stop, steps, dtype=torch.float64, device=device)


def _count_below(sorted_values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.searchsorted(sorted_values, t, side="left")


def _count_within(sorted_values: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """How many values lie in [left, right] (0 where left > right)."""
    inside = torch.searchsorted(sorted_values, right, side="right") - _count_below(sorted_values, left)
    return inside.clamp(min=0)


def _rule_counts(upper: torch.Tensor, lower: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(false positives, false negatives) of every published rule, each out of N models."""
    n = upper.numel()
    up, low = upper.sort().values, lower.sort().values
    device = upper.device

    lo, hi = min(up[0].item(), low[0].item()), max(up[-1].item(), low[-1].item())
    t = _grid(lo, hi, device)  # "upper if s ≥ t"
    single_fn, single_fp = _count_below(up, t), n - _count_below(low, t)

    peaky, other = (low, up) if (up[-1] - up[0]) >= (low[-1] - low[0]) else (up, low)
    width = (peaky[-1] - peaky[0]).item()
    right = _grid(peaky[0].item() + width - MARGIN, peaky[-1].item() + MARGIN, device)
    offsets = _grid(-MARGIN, MARGIN, device)
    left = (right[:, None] - width + offsets[None, :]).reshape(-1)  # "peaky if l ≤ s ≤ r"
    right = right[:, None].expand(-1, offsets.numel()).reshape(-1)
    double_fn = n - _count_within(peaky, left, right)
    double_fp = _count_within(other, left, right)
    return torch.cat([single_fp, double_fp]), torch.cat([single_fn, double_fn])


def _rule_epsilons(fp: torch.Tensor, fn: torch.Tensor, n: int, delta: float) -> torch.Tensor:
    """ε of each rule from its counts out of n; NaN marks a discarded rule, ∞ a perfect separation."""
    fpr, fnr = fp.double() / n, fn.double() / n
    a, b = 1 - delta - fpr, 1 - delta - fnr
    t1 = torch.where(a > 0, a.log() - fnr.log(), -math.inf)
    t2 = torch.where(b > 0, b.log() - fpr.log(), -math.inf)
    eps = torch.maximum(t1, t2).clamp(min=0)
    eps = torch.where((fp > 0) & (fn > 0) & ((a > 0) | (b > 0)), eps, math.nan)
    return torch.where((fp == 0) & (fn == 0), math.inf, eps)


def example_epsilons(unlearned, retrained, delta: float = DELTA) -> torch.Tensor:
    """The competition's ε per forget example (see the module docstring): how well the best threshold attack
    of the published families tells the N unlearned models' statistic from the N retrained ones'. unlearned,
    retrained (N, E) -> (E,) float64 on unlearned's device. Where no rule survives (the published code asserts
    there is one; e.g. both distributions one and the same point), nothing tells them apart: ε = 0."""
    u = _models_by_examples(unlearned, "unlearned")
    r = _models_by_examples(retrained, "retrained", device=u.device)
    if u.shape != r.shape:
        raise ValueError(f"unlearned and retrained need the same (N, E); got {tuple(u.shape)} and {tuple(r.shape)}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1); got {delta}")
    n = u.shape[0]
    out = torch.empty(u.shape[1], dtype=torch.float64, device=u.device)
    for i in range(u.shape[1]):
        upper, lower = (r[:, i], u[:, i]) if r[:, i].quantile(0.5) > u[:, i].quantile(0.5) else (u[:, i], r[:, i])
        ranges = sorted((x.max() - x.min()).item() for x in (upper, lower))
        if ranges[0] < PEAKY_RATIO * ranges[1]:
            out[i] = EPSILON_MAX
            continue
        eps = _rule_epsilons(*_rule_counts(upper, lower), n, delta)
        kept = eps[~eps.isnan()]
        out[i] = kept.max().clamp(max=EPSILON_MAX) if kept.numel() else 0.0
    return out


def epsilon_cap(n_models: int, delta: float = DELTA) -> float:
    """The largest finite ε N models can show: FPR = FNR = 1/N, log(1 − δ − 1/N) − log(1/N) = log(N − 1 − Nδ)
    (0 when N − 1 − Nδ ≤ 1). Above it the estimate can only report a separation (`EPSILON_MAX`)."""
    if n_models < 2:
        raise ValueError(f"the ε estimate needs at least 2 models per side; got {n_models}")
    odds = n_models - 1 - n_models * delta
    return math.log(odds) if odds > 1 else 0.0


def score_buckets(n_models: int, width: float = BUCKET_WIDTH) -> int:
    """How many ε buckets of `width` the published score has for N models: they cover [0, ⌈log(N − 1)⌉)."""
    if n_models < 3:
        raise ValueError(f"the forget score needs at least 3 models (N = 2 leaves no bucket); got {n_models}")
    return int(math.floor(math.ceil(math.log(n_models - 1)) / width + 1e-9))


def forgetting_score(epsilons, n_models: int, width: float = BUCKET_WIDTH) -> float:
    """The competition's forget score: the mean over forget examples of 2^−k, k = ⌊ε / width⌋ the example's
    bucket, 0 for ε past the last bucket (`score_buckets`). 1 = every ε below `width`."""
    eps = torch.as_tensor(epsilons, dtype=torch.float64).reshape(-1)
    if eps.numel() == 0 or eps.isnan().any() or (eps < 0).any():
        raise ValueError("forgetting_score needs at least one ε, none NaN or negative")
    bucket = torch.floor(eps / width)
    points = torch.where(bucket < score_buckets(n_models, width), 0.5**bucket, 0.0)
    return float(points.mean())


def _mean_quality(x, name: str) -> float:
    values = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    if values.numel() == 0 or not torch.isfinite(values).all():
        raise ValueError(f"{name} must hold at least one finite value")
    return float(values.mean())


def final_score(forget_score, retain_quality, retain_quality_retrain, test_quality, test_quality_retrain) -> float:
    """The competition's final score: forget score × (retain quality / Retrain's) × (test quality / Retrain's).
    Each quality a number or the per-model values (their mean is taken, as main.py does): accuracy, or mAP."""
    r, r_ref = _mean_quality(retain_quality, "retain_quality"), _mean_quality(retain_quality_retrain, "retrain")
    t, t_ref = _mean_quality(test_quality, "test_quality"), _mean_quality(test_quality_retrain, "retrain")
    if r_ref <= 0 or t_ref <= 0:
        raise ValueError(f"Retrain's qualities must be positive to divide by; got {r_ref}, {t_ref}")
    return float(forget_score) * (r / r_ref) * (t / t_ref)


@dataclass(frozen=True)
class CompetitionScore:
    """The competition's numbers with what they rest on: N models per side, and the cap N puts on ε."""

    epsilons: np.ndarray
    n_models: int
    epsilon_cap: float
    buckets: int
    forget_score: float
    final_score: float

    def metrics(self, prefix: str = "fq") -> dict[str, float]:
        """Flat scalar keys for metrics.json; `separated` = share of examples reported at `EPSILON_MAX`."""
        return {
            f"{prefix}/forget_score": self.forget_score,
            f"{prefix}/final_score": self.final_score,
            f"{prefix}/epsilon_mean": float(self.epsilons.mean()),
            f"{prefix}/epsilon_median": float(np.median(self.epsilons)),
            f"{prefix}/separated": float((self.epsilons > self.epsilon_cap).mean()),
            f"{prefix}/n_models": float(self.n_models),
            f"{prefix}/epsilon_cap": self.epsilon_cap,
            f"{prefix}/buckets": float(self.buckets),
        }


def competition_score(
    unlearned, retrained, retain_quality, retain_quality_retrain, test_quality, test_quality_retrain, delta=DELTA
) -> CompetitionScore:
    """ε per forget example, the forget score and the final score of N unlearned against N retrained models."""
    eps = example_epsilons(unlearned, retrained, delta=delta)
    n = len(unlearned)
    forget = forgetting_score(eps, n)
    return CompetitionScore(
        epsilons=eps.cpu().numpy(),
        n_models=n,
        epsilon_cap=epsilon_cap(n, delta),
        buckets=score_buckets(n),
        forget_score=forget,
        final_score=final_score(forget, retain_quality, retain_quality_retrain, test_quality, test_quality_retrain),
    )


def ulira(
    target_stats, unlearned_stats, retrained_stats, per_example_std_from: int = 2, std_floor: float = 1e-3
) -> np.ndarray:
    """U-LiRA's per-example log likelihood ratio of target models: target_stats (T, E) (or (E,)), the shadows'
    unlearned_stats (N_u, E) and retrained_stats (N_r, E) -> (T, E), higher = more like an unlearned model.
    Each example gets its own σ by default (U-LiRA fits one Gaussian per example and side); the shadows must not
    include the targets."""
    u = _models_by_examples(unlearned_stats, "unlearned_stats")
    r = _models_by_examples(retrained_stats, "retrained_stats")
    targets = torch.as_tensor(target_stats, dtype=torch.float64)
    targets = targets.reshape(1, -1) if targets.dim() == 1 else targets
    if targets.dim() != 2 or not targets.shape[1] == u.shape[1] == r.shape[1]:
        raise ValueError(
            f"targets (T, E), unlearned (N_u, E) and retrained (N_r, E) need one E; got {tuple(targets.shape)}, "
            f"{tuple(u.shape)}, {tuple(r.shape)}"
        )
    return np.stack([lira_online(t, u.T, r.T, per_example_std_from, std_floor) for t in targets])


def ulira_report(
    unlearned_targets,
    retrained_targets,
    unlearned_stats,
    retrained_stats,
    fprs=DEFAULT_FPRS,
    n_boot: int = 1000,
    seed: int = 0,
    per_example_std_from: int = 2,
) -> AttackReport:
    """U-LiRA over the forget examples: members = the unlearned targets' (T_u, E) ratios, non-members = the
    retrained targets' (T_r, E); AUC 0.5 = unlearning indistinguishable from Retrain. The bootstrap resamples
    forget examples (each with all its targets); TPR only at FPRs ≥ 1 / (T_r · E); the notes name the models."""
    members = ulira(unlearned_targets, unlearned_stats, retrained_stats, per_example_std_from)
    nonmembers = ulira(retrained_targets, unlearned_stats, retrained_stats, per_example_std_from)
    report = attack_report(
        members.reshape(-1),
        nonmembers.reshape(-1),
        fprs=fprs,
        n_boot=n_boot,
        seed=seed,
        n_targets=len(members) + len(nonmembers),
        member_groups=np.tile(np.arange(members.shape[1]), len(members)),
        nonmember_groups=np.tile(np.arange(nonmembers.shape[1]), len(nonmembers)),
    )
    shadows = (
        f"U-LiRA on {members.shape[1]} forget examples: Gaussians over {len(unlearned_stats)} unlearned and "
        f"{len(retrained_stats)} retrained shadow models, {len(members)} unlearned and {len(nonmembers)} "
        "retrained target models"
    )
    return dataclasses.replace(report, notes=[*report.notes, shadows])
