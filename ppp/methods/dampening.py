"""Fisher-based dampening: one "select and scale" rule shared by SSD, the zeroing rule and PPP.

For every parameter theta_i, with forget importance I_f, reference importance I_r and (PPP only)
neighbour importance I_n:
    shared  S: I_f <= alpha * I_r                      -> unchanged
    buffer  B: not S and I_f <  tau * I_n              -> w * theta
    core    C: not S and not B                         -> -gamma * w * theta  (+gamma * w without sign_flip)
    w = min((lam * I_r / (I_f + eps)) ** exponent, lam_max)
SSD is the case tau = inf (no core), exponent 1, lam_max 1, eps 0; `fisher_zero` is lam = 0 (w = 0).
Golatkar et al.'s Fisher forgetting (`method=fisher`) is no dampening: ppp/methods/fisher_forgetting.py.
`apply_dampening` also reports the factor's quantiles in B and C, so a run shows whether the scaling
acted at all (e.g. w < (lam / alpha) ** exponent on every selected entry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ppp.fisher import REFERENCES, FisherEstimate, trainable_parameters
from ppp.methods.registry import METHODS, MethodSettings
from ppp.schema import integer, number, one_of, read, schema, setting


@dataclass(frozen=True)
class DampeningRule:
    alpha: float
    lam: float
    tau: float = math.inf
    lam_max: float = 1.0
    exponent: float = 1.0
    eps: float = 0.0
    gamma: float = 1.0
    sign_flip: bool = True

    def factors(self, i_f: torch.Tensor, i_r: torch.Tensor, i_n: torch.Tensor | None = None):
        """(multiplicative factor per entry, buffer mask, core mask)."""
        selected = i_f > self.alpha * i_r
        if i_n is None or math.isinf(self.tau):
            core = torch.zeros_like(selected)
        else:
            core = selected & ~(i_f < self.tau * i_n)
        buffer = selected & ~core
        denominator = torch.where(selected, i_f + self.eps, torch.ones_like(i_f))
        w = (self.lam * i_r / denominator).pow(self.exponent).clamp(max=self.lam_max)
        core_factor = (-self.gamma if self.sign_flip else self.gamma) * w
        factor = torch.where(buffer, w, torch.where(core, core_factor, torch.ones_like(w)))
        return factor, buffer, core


QUANTILES = (0.1, 0.5, 0.9)


@torch.no_grad()
def apply_dampening(net, rule: DampeningRule, i_f: dict, i_r: dict, i_n: dict | None = None) -> dict[str, float]:
    """Scale `net`'s parameters in place by the rule. Returns the sizes of the three regions
    (`n_shared`, `n_buffer`, `n_core`), the share of the selected entries in B and in C (`share_b`,
    `share_c`; 0 when nothing is selected) and the quantiles of the factor in each non-empty region
    (`factor_b_q10`, `factor_b_q50`, `factor_b_q90`, the same for `c`)."""
    counts = {"n_shared": 0, "n_buffer": 0, "n_core": 0}
    region_factors: dict[str, list[torch.Tensor]] = {"b": [], "c": []}
    for name, p in trainable_parameters(net).items():
        factor, buffer, core = rule.factors(
            i_f[name].to(p.device), i_r[name].to(p.device), None if i_n is None else i_n[name].to(p.device)
        )
        p.mul_(factor)
        counts["n_buffer"] += int(buffer.sum())
        counts["n_core"] += int(core.sum())
        counts["n_shared"] += p.numel() - int(buffer.sum()) - int(core.sum())
        region_factors["b"].append(factor[buffer].double().cpu())
        region_factors["c"].append(factor[core].double().cpu())
    selected = counts["n_buffer"] + counts["n_core"]
    out: dict[str, float] = {
        **counts,
        "share_b": counts["n_buffer"] / selected if selected else 0.0,
        "share_c": counts["n_core"] / selected if selected else 0.0,
    }
    for region, values in region_factors.items():
        values = torch.cat(values).numpy()
        if values.size:
            out.update(
                {
                    f"factor_{region}_q{round(100 * q)}": float(v)
                    for q, v in zip(QUANTILES, np.quantile(values, QUANTILES))
                }
            )
    return out


@schema
class FisherMethod(FisherEstimate, MethodSettings):
    """A method that estimates Fisher diagonals: the shared block plus its forget sample size."""

    forget_samples: int | None = setting(integer(1, optional=True), default=None)


@schema
class Dampening(FisherMethod):
    """The zeroing rule (`method=fisher_zero`): select by I_f > alpha * I_r against a reference set."""

    alpha: float = setting(number(0))
    reference: str = setting(one_of(*REFERENCES))
    reference_samples: int | None = setting(integer(1, optional=True), default=None)


@schema
class SSDSettings(Dampening):
    """Selective Synaptic Dampening: the zeroing rule's selection plus the dampening strength."""

    lam: float = setting(number(0))


def forget_and_reference_fisher(system, ctx, cfg) -> tuple[dict, dict, dict]:
    """I_f on (a seeded sample of) D_f; I_r on D = D_f u D_r ('full', SSD's code) or D_r ('retain');
    and the seconds each took. In batch mode the batches follow `cfg.batch_order` (`ctx.fisher`)."""
    seed = ctx.sample_seed
    settings = read(Dampening, cfg)
    forget = ctx.forget_train.sample(settings.forget_samples, seed)
    reference = {"full": ctx.bench.train, "retain": ctx.retain_train}[cfg.reference]
    reference = reference.sample(settings.reference_samples, seed)
    i_f, forget_s = ctx.fisher(system, forget, cfg, "fisher_forget")
    i_r, reference_s = ctx.fisher(system, reference, cfg, "fisher_reference")
    return i_f, i_r, {"time/fisher_forget_s": forget_s, "time/fisher_reference_s": reference_s}


@METHODS.register("ssd", schema=SSDSettings)
def ssd(system, ctx, cfg):
    """Selective Synaptic Dampening (Foster et al., AAAI 2024), as in its official code."""
    i_f, i_r, times = forget_and_reference_fisher(system, ctx, cfg)
    rule = DampeningRule(alpha=float(cfg.alpha), lam=float(cfg.lam))
    return system, {**times, **{f"ssd/{k}": v for k, v in apply_dampening(system.net, rule, i_f, i_r).items()}}


@METHODS.register("fisher_zero", schema=Dampening)
def fisher_zero(system, ctx, cfg):
    """Eq. 1 with w = 0: zero every parameter whose forget importance exceeds alpha x the retained one
    (SSD's selection with lam = 0). Not a published method: `method=fisher` until issue 20, kept as a
    variant; Golatkar et al.'s Fisher forgetting is `method=fisher` (ppp/methods/fisher_forgetting.py)."""
    i_f, i_r, times = forget_and_reference_fisher(system, ctx, cfg)
    rule = DampeningRule(alpha=float(cfg.alpha), lam=0.0)
    diagnostics = apply_dampening(system.net, rule, i_f, i_r)
    return system, {**times, **{f"fisher_zero/{k}": v for k, v in diagnostics.items()}}
