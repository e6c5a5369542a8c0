"""What every dataset hands to the rest of the code: splits of (image, text, label) or (image, label)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ppp.errors import ConfigError


class LabelledDataset(Dataset):
    """A dataset whose labels are known without decoding images.

    `labels` is a float multi-hot matrix (N, C) for retrieval data and a long vector (N,) for
    single-label classification; subsets (forget / retain / neighbour) are chosen from it alone.
    """

    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "Subset":
        return Subset(self, torch.as_tensor(indices, dtype=torch.long))

    def sample(self, n: int | None, seed: int) -> "LabelledDataset":
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

    Retrieval (multi-label): `query` and `database` are the evaluation sets, `train` the training set.
    Classification (single-label): `train` and `test` (the test split is MIA's non-member pool).
    """

    name: str
    class_names: list[str]
    task: str  # "retrieval" or "classification"
    train: LabelledDataset
    query: LabelledDataset | None = None
    database: LabelledDataset | None = None
    test: LabelledDataset | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

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


def split_indices(n_total: int, n_query: int, n_train: int, seed: int) -> dict[str, np.ndarray]:
    """The DSPH protocol: one seeded permutation; query first, train next; database = all but query."""
    if n_query + n_train > n_total:
        raise ConfigError(f"n_query + n_train = {n_query + n_train} exceeds the {n_total} samples")
    perm = np.random.default_rng(seed).permutation(n_total)
    return {"query": perm[:n_query], "train": perm[n_query:n_query + n_train], "database": perm[n_query:]}
