"""Reference rows of every table: Original, Retrain (from scratch without D_f) and Bad (random init)."""

from __future__ import annotations

from ppp.methods.registry import METHODS, OWN_MODEL, MethodSettings
from ppp.schema import integer, read, schema, setting


@schema
class RetrainSettings(MethodSettings):
    """`method=retrain`: trains a model of its own from the backbone's recipe."""

    needs = frozenset({OWN_MODEL})


@schema
class BadSettings(MethodSettings):
    """`method=bad`; the reference rows build it from its name alone, so the offset has a default."""

    needs = frozenset({OWN_MODEL})

    init_seed_offset: int = setting(integer(0), default=1)


@METHODS.register("original", schema=MethodSettings)
def original(system, ctx, cfg):
    return system, {}


@METHODS.register("retrain", schema=RetrainSettings)
def retrain(system, ctx, cfg):
    """Every layer re-initialised and trained on D_r alone with the original recipe (cached)."""
    model, train_s = ctx.trained(exclude_forget=True)
    return model, {"time/train_s": train_s}


@METHODS.register("bad", schema=BadSettings)
def bad(system, ctx, cfg):
    """A random initialisation of every layer (pretrained weights too), no training: the floor of every metric."""
    seed = int(ctx.cfg.seed) + int(read(BadSettings, cfg).init_seed_offset)
    return ctx.fresh_system(seed=seed, scratch=True), {}
