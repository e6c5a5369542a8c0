"""What the on-disk benchmarks share: layout checks, lazily decoded images, seeded sampling.

Images are decoded in `__getitem__`, so DataLoader workers do the decoding; labels are read from
the annotation files up front, so subsets (forget / retain / neighbours) never touch an image.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ppp import identity
from ppp.data.base import Benchmark, LabelledDataset, split_indices, stratified_split
from ppp.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

# Stands in for an unreadable image under skip_bad_images; normalises to about zero under CLIP/ImageNet stats.
PLACEHOLDER_RGB = (124, 116, 104)


def parsed_annotations(cache, files: Sequence[Path], parse: Callable[[], Any], label: str) -> Any:
    """`parse()` of annotation files, stored in `cache` (a ppp.cache.Cache, or None: parse every time) under
    `annotations`, keyed by each file's resolved path, size and modification time, so that a file is parsed
    again only when one of those changes (COCO's 448 MB of JSON take tens of seconds to parse)."""
    if cache is None:
        return parse()
    from ppp.cache import content_key

    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    payload, _ = cache.get_or_build(
        "annotations", content_key({"version": identity.ANNOTATIONS_VERSION, "files": stats}), parse, label
    )
    return payload


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from and how it sits under its root: the text of every layout error."""

    name: str
    layout: str
    url: str

    def missing(self, path: Path) -> ConfigError:
        return ConfigError(f"{self.name}: {path} not found; expected {self.layout}; get the data from {self.url}")

    def require(self, path: Path) -> Path:
        if not path.exists():
            raise self.missing(path)
        return path

    def root(self, root: str | Path | None) -> Path:
        """The dataset root, which must exist (set via data_root=... or dataset.root=...)."""
        if not root:
            raise ConfigError(f"{self.name}: no root directory given; set data_root=... or dataset.root=...")
        return self.require(Path(root).expanduser())

    def first_existing(self, *candidates: Path) -> Path:
        """The first candidate that exists (datasets ship in slightly different layouts)."""
        for path in candidates:
            if path.exists():
                return path
        raise self.missing(candidates[0])


class BadImages:
    """Which items were unreadable and replaced by a placeholder (skip_bad_images).

    One flag per item in shared memory, so that replacements made in DataLoader worker processes
    are seen by the main process; `count` is the number of distinct bad images met so far.
    """

    def __init__(self, paths: Sequence[str]):
        self._paths = paths
        self._flags = multiprocessing.RawArray("b", len(paths))

    def __getstate__(self):
        """Shared with a process being spawned (a DataLoader worker); a snapshot for pickle / deepcopy."""
        if multiprocessing.context.get_spawning_popen() is not None:
            return self.__dict__
        return {**self.__dict__, "_flags": bytes(self._flags)}

    def __setstate__(self, state):
        if isinstance(state["_flags"], bytes):
            state = {**state, "_flags": multiprocessing.RawArray("b", state["_flags"])}
        self.__dict__.update(state)

    def mark(self, index: int) -> None:
        if not self._flags[index]:
            log.warning("unreadable image %s replaced by a grey placeholder", self._paths[index])
        self._flags[index] = 1

    @property
    def count(self) -> int:
        return int(np.frombuffer(self._flags, dtype=np.int8).sum())

    @property
    def paths(self) -> list[str]:
        return [self._paths[i] for i in np.flatnonzero(np.frombuffer(self._flags, dtype=np.int8))]


class ImageFiles(LabelledDataset):
    """Images read from disk on access, each with a label known up front.

    An unreadable image raises a ConfigError naming its path, unless `skip_bad_images`: then it is
    replaced by a grey placeholder of the same item (its text and label stay right, so `labels`
    remains the truth for every index) and counted in `bad_images`.
    """

    def __init__(self, paths: Sequence[str | Path], labels: torch.Tensor, skip_bad_images: bool = False):
        assert len(paths) == len(labels)
        self.paths = [str(p) for p in paths]
        self.labels = labels
        self.skip_bad_images = skip_bad_images
        self.bad_images = BadImages(self.paths)

    def image(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for missing, truncated, corrupt files
            if not self.skip_bad_images:
                raise ConfigError(
                    f"cannot read image {path} ({err}); fix or remove it, or set "
                    f"dataset.skip_bad_images=true to replace unreadable images"
                ) from None
            self.bad_images.mark(index)
            return Image.new("RGB", (224, 224), PLACEHOLDER_RGB)

    def __getitem__(self, index: int):
        return self.image(index), self.labels[index]


class ImageTextFiles(ImageFiles):
    """Image-text pairs: (PIL image, text, float multi-hot label)."""

    def __init__(
        self, paths: Sequence[str | Path], texts: Sequence[str], labels: torch.Tensor, skip_bad_images: bool = False
    ):
        super().__init__(paths, labels, skip_bad_images)
        assert len(texts) == len(paths)
        self.texts = list(texts)

    def __getitem__(self, index: int):
        return self.image(index), self.texts[index], self.labels[index]


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (a fixed order for seeded sampling)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def multi_hot(label_sets: Sequence[Sequence[int]], num_classes: int) -> torch.Tensor:
    labels = torch.zeros(len(label_sets), num_classes)
    for row, classes in enumerate(label_sets):
        labels[row, list(classes)] = 1.0
    return labels


def sample_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of up to `per_class` items of each class (single-label), drawn by a seeded RNG."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        chosen.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def retrieval_benchmark(
    name: str,
    class_names: list[str],
    pairs: ImageTextFiles,
    n_query: int,
    n_train: int,
    n_val: int,
    split_seed: int,
    **info,
) -> Benchmark:
    """Query / train / database cut by `split_indices` (one seeded permutation), as DSPH does; the
    `n_val` validation queries come out of the database, so queries and train stay DSPH's."""
    try:
        idx = split_indices(len(pairs), n_query, n_train, split_seed, n_val)
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}; lower dataset.n_query / dataset.n_train / dataset.n_val") from None
    return Benchmark(
        name=name,
        class_names=class_names,
        task="retrieval",
        train=pairs.subset(idx["train"]),
        query=pairs.subset(idx["query"]),
        database=pairs.subset(idx["database"]),
        val=pairs.subset(idx["val"]),
        info={"pairs": len(pairs), "bad_images": pairs.bad_images, **info},
    )


def classification_benchmark(
    name: str,
    class_names: list[str],
    images: ImageFiles,
    train: np.ndarray,
    test: np.ndarray,
    val_fraction: float,
    seed: int,
    **info,
) -> Benchmark:
    """Train / validation / test; validation is `val_fraction` of each class's training pool (seeded)."""
    keep, val = (train[part] for part in stratified_split(images.labels[train].numpy(), val_fraction, [seed, 1]))
    return Benchmark(
        name=name,
        class_names=class_names,
        task="classification",
        train=images.subset(keep),
        test=images.subset(test),
        val=images.subset(val),
        info={"images": len(train) + len(test), "bad_images": images.bad_images, **info},
    )
