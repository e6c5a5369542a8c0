"""DeepFashion (Category and Attribute Prediction) as single-label clothing-category classification.

Categories with more than `min_per_class` images are kept (in category-id order), `per_class` of
each are drawn by a seeded RNG, and the official partition splits them: train -> train,
val + test -> test. `val_fraction` of each category's training part is then held out for our own
validation split (the official `val` stays in test, as before).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ppp.data.base import Benchmark, DatasetSettings
from ppp.data.files import ImageFiles, Source, classification_benchmark, sample_per_class
from ppp.errors import ConfigError
from ppp.schema import boolean, integer, number, schema, setting

SOURCE = Source(
    name="deepfashion",
    layout="<root>/Anno_coarse/list_category_{cloth,img}.txt (or <root>/Anno/), "
    "<root>/Eval/list_eval_partition.txt and <root>/img/...",
    url="https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/AttributePrediction.html "
    "(Category and Attribute Prediction Benchmark: img.zip, Anno_coarse, Eval)",
)


def read_listing(path: Path) -> list[tuple[str, str]]:
    """Rows of a DeepFashion list file (a count line, a header line, then `first  last` rows)."""
    lines = SOURCE.require(path).read_text(encoding="utf-8").splitlines()[2:]
    return [tuple(line.rsplit(maxsplit=1)) for line in lines if line.strip()]


@schema
class DeepFashionSettings(DatasetSettings):
    """`dataset=deepfashion` (docs/datasets.md)."""

    task: ClassVar[str] = "classification"
    root: str = setting()
    min_per_class: int = setting(integer(0))
    per_class: int = setting(integer(1))
    val_fraction: float = setting(number(0, 1))
    seed: int = setting(integer(0))
    skip_bad_images: bool = setting(boolean())


def deepfashion(
    root: str,
    per_class: int = 1000,
    min_per_class: int = 1000,
    val_fraction: float = 0.1,
    seed: int = 0,
    skip_bad_images: bool = False,
) -> Benchmark:
    root = SOURCE.root(root)
    anno = SOURCE.first_existing(root / "Anno_coarse", root / "Anno")
    categories = [name for name, _type in read_listing(anno / "list_category_cloth.txt")]
    image_category = read_listing(anno / "list_category_img.txt")
    partition = dict(read_listing(root / "Eval" / "list_eval_partition.txt"))

    category_ids = np.asarray([int(c) - 1 for _, c in image_category], dtype=np.int64)  # 1-based in the file
    counts = np.bincount(category_ids, minlength=len(categories))
    kept = [c for c in range(len(categories)) if counts[c] > min_per_class]
    if not kept:
        raise ConfigError(f"deepfashion: no category has more than min_per_class={min_per_class} images")
    candidates = np.flatnonzero(np.isin(category_ids, kept))
    chosen = candidates[sample_per_class(category_ids[candidates], per_class, seed)]

    relative = [image_category[i][0] for i in chosen]
    missing = [p for p in relative if p not in partition]
    if missing:
        raise ConfigError(f"deepfashion: {missing[0]} has no row in Eval/list_eval_partition.txt")
    SOURCE.require(root / relative[0])  # the images sit where the layout says
    is_train = np.asarray([partition[p] == "train" for p in relative])
    label_of = {c: i for i, c in enumerate(kept)}
    labels = torch.tensor([label_of[int(category_ids[i])] for i in chosen], dtype=torch.long)
    images = ImageFiles([root / p for p in relative], labels, skip_bad_images)
    return classification_benchmark(
        "deepfashion",
        [categories[c] for c in kept],
        images,
        np.flatnonzero(is_train),
        np.flatnonzero(~is_train),
        val_fraction,
        seed,
    )
