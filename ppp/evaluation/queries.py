"""Which samples an evaluator scores: the split (`evaluator.split`) and the forget queries
(`evaluator.forget_queries`).

- `split: test` scores the reported split (retrieval queries, classification test images); `val` the
  validation split, on which hyperparameters are chosen. Retrieval searches the same database either way.
- `forget_queries` (docs/decisions.md, "What varied in the paper"):
  - `all`: every sample of the split that carries a forget class;
  - `sampled`: `forget_query_samples` of them, drawn with the sample seed;
  - `forget_samples`: `forget_query_samples` D_f training samples, drawn with the sample seed as the
    methods draw theirs (PPP's own forget samples when the sizes agree); they sit in the database.
    With `split: val` the validation draw is disjoint from the test draw: `forget_query_samples` of the D_f
    training samples the test draw leaves out, drawn with the sample seed (D_f must hold twice the count), so
    that a search in this mode does not tune on the queries the test split reports (docs/decisions.md).
  Retain samples are always every sample of the split that carries no forget class.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ppp.data.base import Benchmark, Concatenated, LabelledDataset, carries_any
from ppp.errors import ConfigError
from ppp.schema import choice, parse, schema, setting

SPLITS = ("test", "val")
FORGET_QUERIES = ("all", "sampled", "forget_samples")


@schema
class Queries:
    """The evaluator keys that pick the scored samples; a section may leave them out (the test split,
    every forget query)."""

    split: str = setting(choice(*SPLITS), default="test")
    forget_queries: str = setting(choice(*FORGET_QUERIES), default="all")
    forget_query_samples: int | None = setting(default=None)

    def check(self, path: str) -> None:
        count = self.forget_query_samples
        if self.forget_queries != "all" and (isinstance(count, bool) or not isinstance(count, int) or count <= 0):
            raise ConfigError(
                f"{path}.forget_query_samples must be a positive integer with forget_queries={self.forget_queries}; "
                f"got '{count}'"
            )


def query_settings(cfg: DictConfig) -> Queries:
    """The evaluator section's query keys, checked (a section may hold other keys: they are its evaluator's)."""
    settings = parse(Queries, cfg, "evaluator", complete=False)
    settings.check("evaluator")
    return settings


def check_query_settings(cfg: DictConfig, bench: Benchmark, forget_idx: list[int] | None = None) -> None:
    """One-line errors for the evaluator's split and forget-query keys, before any training: the keys
    alone (`Queries`, also checked by `ppp.experiment.validate`), the split against the benchmark and, given
    the forget classes, whether D_f holds a validation draw of forget samples disjoint from the test draw."""
    settings = query_settings(cfg)
    split = settings.split
    data = bench.evaluation_split(split)
    if data is None or len(data) == 0:
        key = "n_val" if bench.task == "retrieval" else "val_fraction"
        raise ConfigError(
            f"evaluator.split={split}: dataset '{bench.name}' has no {split} samples"
            + (f"; set dataset.{key}" if split == "val" else "")
        )
    if forget_idx is not None and split == "val" and settings.forget_queries == "forget_samples":
        available = int(carries_any(bench.train.labels, forget_idx).sum())
        needed = 2 * int(settings.forget_query_samples)
        if available < needed:
            raise ConfigError(
                f"evaluator.split=val with forget_queries=forget_samples draws forget_query_samples="
                f"{settings.forget_query_samples} D_f training samples apart from the test draw's: needs {needed}, "
                f"D_f has {available}"
            )


def forget_sample_queries(forget: LabelledDataset, count: int, seed: int, split: str) -> LabelledDataset:
    """The `forget_samples` queries: `count` of the D_f training samples `forget`, drawn with `seed` (the
    methods' draw); for `val`, `count` drawn with `seed` from the ones the test draw leaves out."""
    test = forget.sample(count, seed)
    if split == "test":
        return test
    taken = torch.ones(len(forget), dtype=torch.bool)
    if test is not forget:
        taken[:] = False
        taken[test.indices] = True
    rest = forget.subset(torch.nonzero(~taken).flatten())
    if len(rest) < count:
        raise ConfigError(
            f"evaluator.split=val with forget_queries=forget_samples draws forget_query_samples={count} D_f training "
            f"samples apart from the test draw's: needs {2 * count}, D_f has {len(forget)}"
        )
    return rest.sample(count, seed)


def evaluation_set(ctx, cfg: DictConfig) -> LabelledDataset:
    """The samples the evaluator scores: the retain samples of the split, and the forget samples the
    mode names (the runner checks the keys before training; checked again here for direct callers)."""
    by_class = ctx.forget_set.by_class
    check_query_settings(cfg, ctx.bench, ctx.forget_idx if by_class else None)
    settings = query_settings(cfg)
    data = ctx.bench.evaluation_split(settings.split)
    mode = settings.forget_queries
    if mode == "all" or not by_class:  # an item forget set: the whole split, its items measured apart (items.py)
        return data
    is_forget = carries_any(data.labels, ctx.forget_idx)
    count = int(settings.forget_query_samples)
    if mode == "sampled":
        forget = data.subset(torch.nonzero(is_forget).flatten()).sample(count, ctx.sample_seed)
    else:
        forget = forget_sample_queries(ctx.forget_train, count, ctx.sample_seed, settings.split)
    return Concatenated(data.subset(torch.nonzero(~is_forget).flatten()), forget)
