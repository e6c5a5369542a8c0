"""ImageNet-100 as single-label classification: a class list, `per_class` images each, seeded split.

The default classes are the common 100-class subset of CMC (Tian et al. 2019), bundled with
their names in `imagenet100_classes.txt`. Images come from an ImageFolder tree of the ILSVRC-2012
training set; `per_class` of each class are drawn by a seeded RNG, then split per class into
train and test by `test_fraction`; `val_fraction` of each class's training part is then held out for
validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ppp.data.base import Benchmark, DatasetSettings, stratified_split
from ppp.data.files import ImageFiles, Source, classification_benchmark, image_files, sample_per_class
from ppp.errors import ConfigError
from ppp.schema import boolean, integer, number, schema, setting

SOURCE = Source(
    name="imagenet100",
    layout="<root>/train/<wnid>/*.JPEG (or <root>/<wnid>/*.JPEG), optionally <root>/LOC_synset_mapping.txt",
    url="https://image-net.org/download.php (ILSVRC 2012 training images; or the Kaggle "
    "imagenet-object-localization-challenge, which also has LOC_synset_mapping.txt)",
)

BUNDLED_CLASSES = Path(__file__).with_name("imagenet100_classes.txt")


def read_synset_names(path: Path) -> dict[str, str]:
    """wnid -> first name, from lines `n02107142 Doberman, Doberman pinscher` (LOC_synset_mapping.txt)."""
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            wnid, _, rest = line.strip().partition(" ")
            names[wnid] = rest.split(",")[0].strip() or wnid
    return names


def class_names(wnids: list[str], synset_names: dict[str, str]) -> list[str]:
    """Human names; a name shared by two wnids (ImageNet has a few) gets its wnid appended."""
    names = [synset_names.get(w, w) for w in wnids]
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids)]


@schema
class ImageNet100Settings(DatasetSettings):
    """`dataset=imagenet100` (docs/datasets.md)."""

    task: ClassVar[str] = "classification"
    root: str = setting()
    classes: list[str] | None = setting()
    per_class: int = setting(integer(1))
    test_fraction: float = setting(number(0, 1))
    val_fraction: float = setting(number(0, 1))
    seed: int = setting(integer(0))
    skip_bad_images: bool = setting(boolean())


def imagenet100(
    root: str,
    classes: list[str] | None = None,
    per_class: int = 150,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    seed: int = 0,
    skip_bad_images: bool = False,
) -> Benchmark:
    """`classes`: wnids, or null for the bundled CMC ImageNet-100 list."""
    root = SOURCE.root(root)
    bundled = read_synset_names(BUNDLED_CLASSES)
    wnids = list(bundled) if classes is None else [str(c) for c in classes]
    if not wnids:
        raise ConfigError("imagenet100: dataset.classes is empty; give wnids or null for the ImageNet-100 list")
    mapping = root / "LOC_synset_mapping.txt"
    names = class_names(wnids, {**bundled, **(read_synset_names(mapping) if mapping.exists() else {})})

    class_root = root / "train" if (root / "train").is_dir() else root
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        files = image_files(SOURCE.require(class_root / wnid))
        paths += files
        labels += [label] * len(files)
    labels = np.asarray(labels, dtype=np.int64)

    chosen = sample_per_class(labels, per_class, seed)
    images = ImageFiles([paths[i] for i in chosen], torch.from_numpy(labels[chosen]), skip_bad_images)
    train, test = stratified_split(labels[chosen], test_fraction, seed)
    return classification_benchmark("imagenet100", names, images, train, test, val_fraction, seed, wnids=wnids)
