"""Reference ("shadow") models for the membership audit (issue 21): K models trained like the target.

The population P is the training split followed by the non-member pool (`nonmember_pool`). Reference k has
the target's backbone and exact recipe (`ctx.fresh_system`, `ppp.train.train` with `backbone.train`) and
trains on the half of P that row k of a K×|P| in/out matrix marks; the matrix is drawn from the audit's seed
and the run's model seed so that every example is IN in exactly K/2 models (Carlini et al. 2022's LiRA
design), which gives each example IN and OUT references.

A reference is cached under what determines it: the training identity, the run's model `seed`, its index,
the audit's reference seed and its IN samples (root indices of the train and pool parts, with the pool's
name), never the method, so every method of a seed shares them. Its outputs on all of P (logits, or a
hashing system's real-valued codes) are cached beside it, so a second evaluation loads two small tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ppp.cache import content_key, index_digest
from ppp.data.base import Benchmark, Concatenated, LabelledDataset, root_indices
from ppp.errors import ConfigError
from ppp.evaluation.mia import nonmember_pool

Outputs = Callable[[object, LabelledDataset], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Population:
    """P = the training split, then the non-member pool; positions index `data`."""

    data: LabelledDataset
    train: LabelledDataset
    pool: LabelledDataset
    pool_name: str

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def train_positions(self) -> torch.Tensor:
        return torch.arange(self.n_train)

    @property
    def pool_positions(self) -> torch.Tensor:
        return torch.arange(self.n_train, len(self.data))

    def identity(self, inside: np.ndarray | None = None) -> dict:
        """Which samples (of the IN part when `inside` is a bool mask over P): root indices per part, the pool's name."""
        mask = torch.ones(len(self.data), dtype=torch.bool) if inside is None else torch.as_tensor(inside)
        return {
            "train": index_digest(root_indices(self.train)[mask[: self.n_train]]),
            "pool": self.pool_name,
            "pool_samples": index_digest(root_indices(self.pool)[mask[self.n_train :]]),
        }


def population(bench: Benchmark) -> Population:
    pool, name = nonmember_pool(bench)
    return Population(Concatenated(bench.train, pool), bench.train, pool, name)


def inclusion_matrix(k: int, n: int, seed: int) -> np.ndarray:
    """(k, n) bool: column j marks the k/2 references example j trains, a uniformly drawn half (k even)."""
    if k < 2 or k % 2:
        raise ConfigError(f"the reference count must be even and >= 2; got {k}")
    order = np.random.default_rng(seed).random((k, n)).argsort(0)
    return order < k // 2


def draw_seed(*parts: int) -> int:
    """A 31-bit seed from integers (platform-independent: numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % (2**31))


@dataclass(frozen=True)
class References:
    """K reference models' outputs on P and the in/out matrix they were trained by."""

    inside: np.ndarray  # (K, |P|) bool
    outputs: list[dict[str, torch.Tensor]]  # per reference, each (|P|, ...) in P's order


def reference_models(ctx, pop: Population, k: int, seed: int, outputs: Outputs) -> References:
    """The K references' outputs on P (`outputs(system, data)`), each model and its outputs from cache or
    trained now (progress label "reference model i/K")."""
    if ctx.original is not None:
        raise ConfigError(
            "the membership audit trains reference models with the backbone's recipe; this context was given its model"
        )
    run_seed = int(ctx.cfg.seed)
    inside = inclusion_matrix(k, len(pop.data), draw_seed(seed, run_seed))
    everything = pop.identity()
    results = []
    for i in range(k):
        key = {
            **ctx.training_identity(),
            "seed": run_seed,
            "reference": {"index": i, "seed": seed, "in": pop.identity(inside[i])},
        }
        label = f"reference model {i + 1}/{k}"

        def build(i=i, key=key, label=label):
            system = trained_reference(
                ctx, pop.data.subset(np.flatnonzero(inside[i])), key, label, draw_seed(seed, run_seed, i)
            )
            return {name: value.cpu() for name, value in outputs(system, pop.data).items()}

        out_key = content_key({"model": content_key(key), "population": everything, "outputs": ctx.bench.task})
        payload, _ = ctx.cache.get_or_build("reference_outputs", out_key, build, f"{label} outputs")
        results.append(payload)
    return References(inside, results)


def trained_reference(ctx, data: LabelledDataset, key: dict, label: str, train_seed: int):
    """One reference model trained on `data` with the run's recipe and its own seed, cached under `key`."""
    return ctx.trained_on(data, train_seed, content_key(key), label)[0]
