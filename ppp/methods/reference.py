"""Reference rows of every table: Original, Retrain (from scratch without D_f) and Bad (random init)."""

from __future__ import annotations

from ppp.methods.registry import METHODS


@METHODS.register("original")
def original(system, ctx, cfg):
    return system, {}


@METHODS.register("retrain")
def retrain(system, ctx, cfg):
    """Every layer re-initialised and trained on D_r alone with the original recipe (cached)."""
    model, train_s = ctx.trained(exclude_forget=True)
    return model, {"time/train_s": train_s}


@METHODS.register("bad")
def bad(system, ctx, cfg):
    """A random initialisation of every layer (pretrained weights too), no training: the floor of every metric."""
    seed = int(ctx.cfg.seed) + int(cfg.get("init_seed_offset", 1))
    return ctx.fresh_system(seed=seed, scratch=True), {}
