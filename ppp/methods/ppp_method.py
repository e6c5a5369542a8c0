"""PPP: Prior-Prototype guided Partitioned dampening (Lu, Li & Qian, AAAI 2026), Algorithm 1.

Flags that take the mechanism apart (defaults: the paper's method): `neighbours` (prototype | random,
drawn with the sample seed), `gamma` (null: Eq. 3's gamma; a number replaces it) and `sign_flip`
(false: the core is scaled by +gamma * w instead of -gamma * w)."""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from ppp.data.base import carries_any
from ppp.methods.dampening import DampeningRule, FisherMethod, apply_dampening
from ppp.methods.prototypes import prototype_geometry, random_neighbours, system_features
from ppp.methods.registry import METHODS, PER_SAMPLE_LOSS
from ppp.schema import boolean, integer, number, one_of, read, schema, setting

log = logging.getLogger(__name__)
ITEM_PROTOTYPES = ("forget_mean", "forget_classes")


@schema
class PPPSettings(FisherMethod):
    """PPP's keys (`method/ppp.yaml`); the mechanism flags added later default to the paper's method."""

    needs = frozenset({PER_SAMPLE_LOSS})

    alpha: float = setting(number(0))
    tau: float = setting(number(0, low_open=True))
    lam: float = setting(number(0))
    lam_max: float = setting(number(0))
    exponent: float = setting(number(0, low_open=True))
    eps: float = setting(number(0))
    k: int = setting(integer(1))
    gamma_max: float | None = setting(number(0, low_open=True, optional=True), default=None)
    gamma: float | None = setting(number(0, optional=True), default=None)
    sign_flip: bool = setting(boolean(), default=True)
    neighbours: str = setting(one_of("prototype", "random"), default="prototype")
    # An item forget set's prototype (issue 22): the mean feature of its items, or the mean of their classes'
    # prototypes (each item weighted once, its classes equally); docs/decisions.md.
    item_prototype: str = setting(one_of(*ITEM_PROTOTYPES), default="forget_mean")
    prototype_modality: str = setting(one_of("image", "text", "mean"))
    retain_excludes_neighbours: bool = setting(boolean())
    neighbour_samples: int | None = setting(integer(1, optional=True), default=None)
    retain_samples: int | None = setting(integer(1, optional=True), default=None)


def item_prototype(system, ctx, protos: torch.Tensor, rule: str, modality: str) -> torch.Tensor:
    """The prototype of an item forget set under the original model: `forget_mean`, the mean feature of D_f's
    items; `forget_classes`, the mean over its items of their classes' prototypes."""
    forget = ctx.forget_train
    if rule == "forget_mean":
        return system_features(system, forget, ctx.device, modality).float().mean(0)
    labels = forget.labels.float() if forget.labels.dim() == 2 else F.one_hot(forget.labels, len(protos)).float()
    return ((labels / labels.sum(1, keepdim=True).clamp_min(1)) @ protos.float()).mean(0)


@METHODS.register("ppp", schema=PPPSettings)
def ppp(system, ctx, cfg):
    seed = ctx.sample_seed
    settings = read(PPPSettings, cfg)
    names = ctx.bench.class_names

    # 1-3. Prior-prototypes over D = D_f u D_r under the trained model, neighbours, gamma (Eqs. 2-3). An item
    # forget set is one more prototype (`item_prototype`), its neighbours the classes nearest to it.
    start = time.perf_counter()
    protos = ctx.prototypes(system, cfg.prototype_modality)
    forget_rows = ctx.forget_idx
    if not ctx.forget_set.by_class:
        item = item_prototype(system, ctx, protos, settings.item_prototype, cfg.prototype_modality)
        protos, forget_rows = torch.cat([protos, item[None]]), [len(protos)]
    geometry = prototype_geometry(protos, forget_rows, int(cfg.k), settings.gamma_max)
    diagnostics = {"time/prototypes_s": time.perf_counter() - start}
    neighbour_classes = geometry.neighbours
    if settings.neighbours == "random":
        neighbour_classes = random_neighbours(len(names), ctx.forget_idx, len(geometry.neighbours), seed)
    gamma = geometry.gamma if settings.gamma is None else float(settings.gamma)

    # D_n: retained samples carrying a neighbour class; D_r for Fisher excludes them by default.
    retain = ctx.retain_train
    is_neighbour = carries_any(retain.labels, neighbour_classes)
    neighbours = retain.subset(torch.nonzero(is_neighbour).flatten())
    if cfg.retain_excludes_neighbours:
        retain = retain.subset(torch.nonzero(~is_neighbour).flatten())
    forget = ctx.forget_train.sample(cfg.forget_samples, seed)
    neighbours = neighbours.sample(settings.neighbour_samples, seed)
    retain = retain.sample(settings.retain_samples, seed)

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
        sign_flip=bool(settings.sign_flip),
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
        ", ".join(names[c] for c in ctx.forget_idx) or f"{len(ctx.forget_train)} items",
        ", ".join(names[c] for c in neighbour_classes),
        gamma,
        geometry.ratio,
        counts["n_shared"],
        counts["n_buffer"],
        counts["n_core"],
    )
    return system, diagnostics
