"""PPP: Prior-Prototype guided Partitioned dampening (Lu, Li & Qian, AAAI 2026), Algorithm 1.

Flags that take the mechanism apart (defaults: the paper's method): `neighbours` (prototype | random,
drawn with the sample seed), `gamma` (null: Eq. 3's gamma; a number replaces it) and `sign_flip`
(false: the core is scaled by +gamma * w instead of -gamma * w)."""

from __future__ import annotations

import logging
import time

import torch

from ppp.data.base import carries_any
from ppp.methods.dampening import DampeningRule, apply_dampening
from ppp.methods.prototypes import prototype_geometry, random_neighbours
from ppp.methods.registry import METHODS

log = logging.getLogger(__name__)


@METHODS.register("ppp")
def ppp(system, ctx, cfg):
    seed = ctx.sample_seed
    names = ctx.bench.class_names

    # 1-3. Prior-prototypes over D = D_f u D_r under the trained model, neighbours, gamma (Eqs. 2-3).
    start = time.perf_counter()
    protos = ctx.prototypes(system, cfg.prototype_modality)
    geometry = prototype_geometry(protos, ctx.forget_idx, int(cfg.k), cfg.get("gamma_max"))
    diagnostics = {"time/prototypes_s": time.perf_counter() - start}
    neighbour_classes = geometry.neighbours
    if cfg.get("neighbours", "prototype") == "random":
        neighbour_classes = random_neighbours(len(names), ctx.forget_idx, len(geometry.neighbours), seed)
    gamma = geometry.gamma if cfg.get("gamma") is None else float(cfg.gamma)

    # D_n: retained samples carrying a neighbour class; D_r for Fisher excludes them by default.
    retain = ctx.retain_train
    is_neighbour = carries_any(retain.labels, neighbour_classes)
    neighbours = retain.subset(torch.nonzero(is_neighbour).flatten())
    if cfg.retain_excludes_neighbours:
        retain = retain.subset(torch.nonzero(~is_neighbour).flatten())
    forget = ctx.forget_train.sample(cfg.forget_samples, seed)
    neighbours = neighbours.sample(cfg.get("neighbour_samples"), seed)
    retain = retain.sample(cfg.get("retain_samples"), seed)

    # 4. Empirical Fisher on D_f, D_n, D_r (Eq. 4).
    fisher = {}
    for label, data in (("fisher_forget", forget), ("fisher_neighbour", neighbours), ("fisher_retain", retain)):
        fisher[label], diagnostics[f"time/{label}_s"] = ctx.fisher(system, data, cfg, label)

    # 5-7. Regions S / B / C (Eq. 5), base factor w (Eq. 6), hierarchical update (Eq. 7).
    rule = DampeningRule(
        alpha=float(cfg.alpha),
        lam=float(cfg.lam),
        tau=float(cfg.tau),
        lam_max=float(cfg.lam_max),
        exponent=float(cfg.exponent),
        eps=float(cfg.eps),
        gamma=gamma,
        sign_flip=bool(cfg.get("sign_flip", True)),
    )
    counts = apply_dampening(
        system.net, rule, fisher["fisher_forget"], fisher["fisher_retain"], fisher["fisher_neighbour"]
    )
    diagnostics.update({f"ppp/{k}": v for k, v in counts.items()})
    diagnostics.update(
        {
            "ppp/gamma": gamma,
            "ppp/gamma_uncapped": geometry.ratio**2,
            "ppp/mu_n": geometry.mu_n,
            "ppp/mu_rest": geometry.mu_rest,
            "ppp/neighbours": [names[c] for c in neighbour_classes],
            "ppp/n_forget_samples": len(forget),
            "ppp/n_neighbour_samples": len(neighbours),
            "ppp/n_retain_samples": len(retain),
        }
    )
    log.info(
        "[ppp] neighbours of %s: %s; gamma=%.3f (mu_rest/mu_n=%.3f); regions S=%d B=%d C=%d",
        ", ".join(names[c] for c in ctx.forget_idx),
        ", ".join(names[c] for c in neighbour_classes),
        gamma,
        geometry.ratio,
        counts["n_shared"],
        counts["n_buffer"],
        counts["n_core"],
    )
    return system, diagnostics
