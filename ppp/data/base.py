"""What every dataset hands to the rest of the code: splits of (image, text, label) or (image, label)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ppp.errors import ConfigError, choose
from ppp.schema import schema, setting


@schema
class DatasetSettings:
    """Every dataset's section: its name and default forget classes; a reader's schema (registered with it
    in `ppp.data.DATASETS`) adds its builder's arguments and names the benchmark task it builds."""

    task: ClassVar[str]
    name: str = setting()
    forget: list[str] = setting()


class LabelledDataset(Dataset):
    """A dataset whose labels are known without decoding images.

    `labels` is a float multi-hot matrix (N, C) for retrieval data and a long vector (N,) for
    single-label classification; subsets (forget / retain / neighbour) are chosen from it alone.
    """

    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> Subset:
        return Subset(self, torch.as_tensor(indices, dtype=torch.long))

    def sample(self, n: int | None, seed: int) -> LabelledDataset:
        """A seeded random subset of `n` items (in dataset order), or self when n is None or >= len."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=g)[:n].sort().values)


class Subset(LabelledDataset):
    def __init__(self, base: LabelledDataset, indices: torch.Tensor):
        self.base = base
        self.indices = indices
        self.labels = base.labels[indices]

    def __getitem__(self, i):
        return self.base[int(self.indices[i])]

    def root_indices(self) -> torch.Tensor:
        """Indices into the underlying full dataset (subsets of subsets resolved): a stable identity."""
        return self.base.root_indices()[self.indices] if isinstance(self.base, Subset) else self.indices


def root_indices(data: LabelledDataset) -> torch.Tensor:
    """The samples of `data` as indices into its underlying dataset, in order: their identity in keys."""
    return data.root_indices() if isinstance(data, Subset) else torch.arange(len(data))


def item_roots(data: LabelledDataset) -> torch.Tensor:
    """`root_indices`, through concatenations of subsets of one dataset (the membership audit's population): which
    underlying item each sample is. Not a key: keys keep `root_indices`, so that no cached artefact changes."""
    if isinstance(data, Concatenated):
        return torch.cat([item_roots(part) for part in data.parts])
    return root_indices(data)


class Concatenated(LabelledDataset):
    """The items of several datasets (of one label format), one after another."""

    def __init__(self, *parts: LabelledDataset):
        self.parts = parts
        self.labels = torch.cat([p.labels for p in parts])
        self.starts = [0, *itertools.accumulate(len(p) for p in parts[:-1])]

    def __getitem__(self, i):
        part = bisect.bisect_right(self.starts, i) - 1
        return self.parts[part][i - self.starts[part]]


class InMemoryPairs(LabelledDataset):
    """Image-text pairs held in memory: images (N, 3, H, W) uint8, one caption each, multi-hot labels."""

    def __init__(self, images: torch.Tensor, texts: Sequence[str], labels: torch.Tensor):
        assert len(images) == len(texts) == len(labels)
        self.images, self.texts, self.labels = images, list(texts), labels

    def __getitem__(self, i):
        return self.images[i], self.texts[i], self.labels[i]


class InMemoryImages(LabelledDataset):
    """Single-label images held in memory: images (N, 3, H, W) uint8, labels (N,) long."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        assert len(images) == len(labels)
        self.images, self.labels = images, labels

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class ForgetTagged(LabelledDataset):
    """D_f's items then D_r's, each with a last element saying whether it is a forget item: what a method that
    treats the two differently within one batch reads (Bad Teacher's tag), for classes and items alike."""

    def __init__(self, forget: LabelledDataset, retain: LabelledDataset):
        self.items = Concatenated(forget, retain)
        self.labels = self.items.labels
        self.is_forget = torch.arange(len(self.items)) < len(forget)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return (*self.items[i], bool(self.is_forget[i]))


class Transformed(Dataset):
    """Applies a per-item transform to the image (runs in DataLoader workers)."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, *rest = self.base[i]
        return (self.transform(image), *rest)


@dataclass
class Benchmark:
    """A dataset cut into the splits of its protocol.

    Retrieval (multi-label): `query` and `database` are the evaluation sets, `train` the training set;
    `val` holds validation queries, searched against the same database, disjoint from the queries and
    absent from the database.
    Classification (single-label): `train` and `test` (the test split is MIA's non-member pool); `val`
    holds validation images carved out of the training pool.
    `population`, where a dataset has one, holds further non-members drawn like the test split (never
    trained on, never scored), so that membership attacks have a non-member pool as large as the training set.
    Hyperparameters are chosen on `val`; results are reported on the test split.
    """

    name: str
    class_names: list[str]
    task: str  # "retrieval" or "classification"
    train: LabelledDataset
    query: LabelledDataset | None = None
    database: LabelledDataset | None = None
    test: LabelledDataset | None = None
    val: LabelledDataset | None = None
    population: LabelledDataset | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def evaluation_split(self, split: str) -> LabelledDataset | None:
        """What an evaluator scores: `test` (the reported queries or test images) or `val`."""
        choose("evaluation split", split, ("test", "val"))
        if split == "val":
            return self.val
        return self.query if self.task == "retrieval" else self.test

    def class_indices(self, names: Sequence[str]) -> list[int]:
        """Indices of the named classes; a name the dataset lacks is a config error listing the valid ones."""
        if len(names) == 0:
            raise ConfigError("forget must name at least one class")
        unknown = [n for n in names if n not in self.class_names]
        if unknown:
            raise ConfigError(
                f"forget class(es) {', '.join(map(str, unknown))} not in dataset '{self.name}'; "
                f"its classes are: {', '.join(self.class_names)}"
            )
        if len(set(names)) == len(self.class_names):
            raise ConfigError("forget names every class of the dataset; nothing would be retained")
        return [self.class_names.index(n) for n in names]


def carries_any(labels: torch.Tensor, class_idx: Sequence[int]) -> torch.Tensor:
    """Boolean mask of samples that carry at least one of the classes (multi-hot or single-label)."""
    idx = torch.as_tensor(list(class_idx), dtype=torch.long)
    if labels.dim() == 1:
        return torch.isin(labels, idx)
    return labels[:, idx].sum(dim=1) > 0


def split_indices(n_total: int, n_query: int, n_train: int, seed: int, n_val: int = 0) -> dict[str, np.ndarray]:
    """The DSPH protocol: one seeded permutation; query first, train next; database = all but query.

    `n_val` validation queries (database = all but query and val) follow the training items in the same permutation and leave the
    database, so queries and training set are those of the plain protocol whatever `n_val` is.
    """
    if n_query + n_train + n_val > n_total:
        raise ConfigError(f"n_query + n_train + n_val = {n_query + n_train + n_val} exceeds the {n_total} samples")
    perm = np.random.default_rng(seed).permutation(n_total)
    end_train = n_query + n_train
    return {
        "query": perm[:n_query],
        "train": perm[n_query:end_train],
        "val": perm[end_train : end_train + n_val],
        "database": np.concatenate([perm[n_query:end_train], perm[end_train + n_val :]]),
    }


def stratified_split(labels: np.ndarray, fraction: float, seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(rest, picked) indices: `fraction` of every class (rounded) picked by a seeded RNG."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"a split fraction must be in [0, 1); got {fraction}")
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(labels == cls), size=int(round(fraction * (labels == cls).sum())), replace=False)
        for cls in np.unique(labels)
    ]
    picked = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), picked), picked


def stratified_partition(
    labels: np.ndarray, shares: Mapping[str, float], seed: Sequence[int], rest: str
) -> dict[str, np.ndarray]:
    """Disjoint index sets: every named part takes its `share` of each class (rounded; part k drawn by
    `stratified_split` seeded [*seed, k]), and `rest` keeps what is left."""
    if sum(shares.values()) >= 1:
        raise ConfigError(f"split shares {dict(shares)} leave nothing for {rest}")
    left, parts, remaining = np.arange(len(labels)), {}, 1.0
    for k, (name, share) in enumerate(shares.items()):
        keep, picked = stratified_split(labels[left], share / remaining, [*seed, k])
        parts[name], left, remaining = left[picked], left[keep], remaining - share
    return {**parts, rest: left}


SPLITS = ("train", "query", "database", "test", "val", "population")


def benchmark_payload(bench: Benchmark) -> dict:
    """A benchmark whose splits are subsets of one in-memory dataset, as tensors, lists and dicts (what
    the cache stores and `weights_only` loads)."""
    splits = {name: getattr(bench, name) for name in SPLITS if getattr(bench, name) is not None}
    base = next(iter(splits.values())).base
    assert all(isinstance(s, Subset) and s.base is base for s in splits.values()) and isinstance(
        base, (InMemoryPairs, InMemoryImages)
    ), "only in-memory benchmarks are stored whole"
    data = {"images": base.images, "labels": base.labels}
    if isinstance(base, InMemoryPairs):
        data["texts"] = base.texts
    return {
        "name": bench.name,
        "class_names": bench.class_names,
        "task": bench.task,
        "info": bench.info,
        "data": data,
        "splits": {name: s.indices for name, s in splits.items()},
    }


def benchmark_from_payload(payload: dict) -> Benchmark:
    data = payload["data"]
    base = (
        InMemoryPairs(data["images"], data["texts"], data["labels"])
        if "texts" in data
        else InMemoryImages(data["images"], data["labels"])
    )
    return Benchmark(
        name=payload["name"],
        class_names=list(payload["class_names"]),
        task=payload["task"],
        info=payload["info"],
        **{name: base.subset(i) for name, i in payload["splits"].items()},
    )
