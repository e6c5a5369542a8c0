"""Per-example membership statistics and the reference-model attacks that calibrate them (issue 21).
Tensors in, float64 numpy out; higher = more likely a member throughout.

Statistics
- classification: `logit_confidence(logits, labels)`, LiRA's φ = log(p_y / (1 − p_y)) of the true class,
  computed as z_y − logsumexp_{j≠y} z_j (exactly log softmax_y − log(1 − softmax_y), without forming 1 − p_y,
  so it stays finite where p_y rounds to 1); `logit_of_probability(p)` the same from a probability, clamped
  to [eps, 1 − eps].
- retrieval, per (image, caption) pair: `pair_cosine` (the baseline: cos of the pair's real-valued codes) and
  `pair_logit_similarity`: s_ij = cos(image_i, text_j) / T over a gallery, φ_i = log softmax_i(own) −
  log(1 − softmax_i(own)) = s_ii − logsumexp_{j ≠ own} s_ij. T defaults to 1; the gallery is the batch's
  own captions (the others of the batch) or a given set of caption codes (all of them "others", but the row
  `exclude` names: the pair's own caption where the gallery holds it).

Attacks on reference ("shadow") models, each trained with or without the example
- `lira_offline` (Carlini et al. 2022, offline): per example a Gaussian N(μ_out, σ_out²) of the OUT
  references' φ; score = −log(1 − Φ((φ − μ_out)/σ_out)), i.e. −log of the OUT Gaussian's upper tail at φ
  (the same order as LiRA's offline Λ = Φ(z), on a log scale that does not saturate at 1 for large z).
- `lira_online`: Gaussians of the IN and the OUT references' φ; score = log N(φ; μ_in, σ_in²) − log N(φ;
  μ_out, σ_out²).
- σ rule (both): per-example std (ddof 1) when each example has at least `per_example_std_from` references
  (default 64: Carlini et al. find per-example variances help only with many models), otherwise one global
  std, the pooled std of every example's references around their own mean; either way floored at `std_floor`.
  A NaN in a reference matrix means "no such reference": examples may have different numbers of IN / OUT
  references (a reference held out as the target), each mean is over the example's own references and the
  pooled std over every example's deviations with Σ(n_i − 1) degrees of freedom.
- `rmia` (Zarifzadeh et al. 2024): ratio r(x) = Pr(x | target) / mean over references of Pr(x | ref);
  score(x) = share of population samples z with r(x) / r(z) ≥ γ.
"""

from __future__ import annotations

import numpy as np
import torch


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _others_logsumexp(scores: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """logsumexp over each row's entries but the one at `own` (one index per row)."""
    masked = scores.scatter(1, own[:, None], float("-inf"))
    return torch.logsumexp(masked, dim=1)


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """φ = log p_y − log(1 − p_y) = z_y − logsumexp_{j≠y} z_j, logits (N, C) with C ≥ 2, labels (N,) class
    indices -> (N,)."""
    logits = logits.detach().double()
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (N, C) with C >= 2; got {tuple(logits.shape)}")
    labels = labels.detach().long().to(logits.device)
    own = logits.gather(1, labels[:, None])[:, 0]
    return _numpy(own - _others_logsumexp(logits, labels))


def logit_of_probability(p, eps: float = 1e-12) -> np.ndarray:
    """φ = log(p / (1 − p)) of probabilities, p clamped to [eps, 1 − eps]."""
    p = np.clip(_numpy(p), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.detach().double(), dim=-1)


def pair_cosine(image_codes: torch.Tensor, text_codes: torch.Tensor) -> np.ndarray:
    """cos(image_i, text_i) of each pair's real-valued codes, (N, D) and (N, D) -> (N,)."""
    return _numpy((_unit(image_codes) * _unit(text_codes)).sum(-1))


def pair_logit_similarity(
    image_codes: torch.Tensor,
    text_codes: torch.Tensor,
    gallery: torch.Tensor | None = None,
    temperature: float = 1.0,
    exclude: torch.Tensor | None = None,
) -> np.ndarray:
    """φ_i = s_own − logsumexp_{others} s, s = cos / T. image_codes, text_codes (N, D): the pairs; gallery
    None -> the others are the batch's other captions (N ≥ 2); gallery (G, D) -> the others are the gallery's
    G captions but row `exclude[i]` (N,) of pair i (−1: none), where the gallery holds the pair's own
    caption -> (N,)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    img, txt = _unit(image_codes), _unit(text_codes)
    own = (img * txt).sum(-1) / temperature
    if gallery is None:
        if len(img) < 2:
            raise ValueError("a batch gallery needs at least two pairs")
        sims = img @ txt.T / temperature
        others = _others_logsumexp(sims, torch.arange(len(img), device=sims.device))
    else:
        sims = img @ _unit(gallery).to(img.device).T / temperature
        if exclude is not None:
            sims = sims.masked_fill(exclude_mask(exclude, sims.shape[1]).to(sims.device), float("-inf"))
        others = torch.logsumexp(sims, dim=1)
    return _numpy(own - others)


def exclude_mask(exclude: torch.Tensor, gallery_size: int) -> torch.Tensor:
    """(N, G) bool, True at row i's entry `exclude[i]` (none where it is −1)."""
    exclude = torch.as_tensor(exclude, dtype=torch.long)
    return torch.arange(gallery_size)[None, :] == exclude[:, None]


def _gaussian(phi: np.ndarray, per_example_std_from: int, std_floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(μ, σ) per example of reference statistics (N, R), NaN = no reference, by the module's σ rule."""
    if phi.ndim != 2 or phi.shape[1] < 1:
        raise ValueError(f"reference statistics must be (N, R) with R >= 1; got {phi.shape}")
    present = ~np.isnan(phi)
    counts = present.sum(1)
    if counts.min(initial=1) < 1:
        raise ValueError("every example needs at least one reference statistic (a row is all NaN)")
    mu = np.where(present, phi, 0.0).sum(1) / np.maximum(counts, 1)
    squares = np.where(present, (phi - mu[:, None]) ** 2, 0.0)
    n = len(mu)
    if counts.min(initial=0) >= max(per_example_std_from, 2):
        sigma = np.sqrt(squares.sum(1) / (counts - 1))
    elif counts.max(initial=0) >= 2:
        sigma = np.full(n, np.sqrt(squares.sum() / (counts - 1).sum()))
    else:  # one reference per example: the spread of the statistic over examples is all there is
        values = phi[present]
        sigma = np.full(n, values.std(ddof=1) if values.size > 1 else 0.0)
    return mu, np.maximum(sigma, std_floor)


def lira_offline(target_phi, reference_out_phi, per_example_std_from: int = 64, std_floor: float = 1e-3) -> np.ndarray:
    """target_phi (N,) the target model's φ; reference_out_phi (N, R) φ of R references not trained on each
    example (NaN: none) -> (N,) −log(1 − Φ((φ − μ_out)/σ_out))."""
    from scipy.special import log_ndtr

    phi, out = _numpy(target_phi).reshape(-1), _numpy(reference_out_phi)
    if out.shape[0] != phi.size:
        raise ValueError(f"reference_out_phi has {out.shape[0]} rows for {phi.size} examples")
    mu, sigma = _gaussian(out, per_example_std_from, std_floor)
    return -log_ndtr(-(phi - mu) / sigma)


def _log_normal(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def lira_online(target_phi, in_phi, out_phi, per_example_std_from: int = 64, std_floor: float = 1e-3) -> np.ndarray:
    """target_phi (N,); in_phi (N, R_in), out_phi (N, R_out): φ of references trained with / without each
    example (NaN: none) -> (N,) log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²)."""
    phi = _numpy(target_phi).reshape(-1)
    ins, outs = _numpy(in_phi), _numpy(out_phi)
    if ins.shape[0] != phi.size or outs.shape[0] != phi.size:
        raise ValueError("in_phi and out_phi need one row per example")
    mu_in, s_in = _gaussian(ins, per_example_std_from, std_floor)
    mu_out, s_out = _gaussian(outs, per_example_std_from, std_floor)
    return _log_normal(phi, mu_in, s_in) - _log_normal(phi, mu_out, s_out)


def rmia(
    target_prob,
    reference_probs,
    population_target_prob,
    population_reference_probs,
    gamma: float = 1.0,
    offline_a: float | None = None,
    eps: float = 1e-30,
) -> np.ndarray:
    """RMIA's score. target_prob (N,) Pr(y_x | x, θ_target), the target's probability of each example's true
    label; reference_probs (N, R) the same under R reference models; population_target_prob (M,),
    population_reference_probs (M, R') the same for M population samples z (non-members of the target).
    r(·) = target prob / mean reference prob; with `offline_a` (references all OUT) the mean is replaced by
    ½((1 + a)·mean + (1 − a)) as in the paper's offline variant. -> (N,) share of z with r(x)/r(z) ≥ γ."""
    if gamma <= 0:
        raise ValueError(f"gamma must be positive; got {gamma}")

    def ratio(target, refs):
        target, refs = _numpy(target).reshape(-1), _numpy(refs)
        if refs.ndim != 2 or refs.shape[0] != target.size:
            raise ValueError(f"reference probabilities must be ({target.size}, R); got {refs.shape}")
        mean = refs.mean(1)
        if offline_a is not None:
            mean = 0.5 * ((1 + offline_a) * mean + (1 - offline_a))
        return target / np.maximum(mean, eps)

    rx = ratio(target_prob, reference_probs)
    rz = np.sort(ratio(population_target_prob, population_reference_probs))
    # r(x) / r(z) ≥ γ  ⇔  r(z) ≤ r(x) / γ
    return np.searchsorted(rz, rx / gamma, side="right") / rz.size
