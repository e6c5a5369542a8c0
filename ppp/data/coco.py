"""MS-COCO 2017 as 80-class multi-label image-caption retrieval, the cross-modal hashing version.

Every train2017 + val2017 image with at least one instance annotation is a pair (122,218 on the
full data); its text is one of its captions, picked once by a seeded RNG so that evaluation is
fixed (DSPH re-picks at random on every access). Classes are the 80 categories in id order.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from ppp.data.base import Benchmark, DatasetSettings
from ppp.data.files import ImageTextFiles, Source, multi_hot, parsed_annotations, retrieval_benchmark
from ppp.errors import ConfigError
from ppp.schema import boolean, integer, schema, setting

SOURCE = Source(
    name="coco",
    layout="<root>/{train2017,val2017}/*.jpg and <root>/annotations/{instances,captions}_{train,val}2017.json",
    url="https://cocodataset.org/#download (2017 Train images, 2017 Val images, 2017 Train/Val annotations)",
)


def _load_json(path: Path) -> dict:
    with open(SOURCE.require(path), encoding="utf-8") as f:
        return json.load(f)


def _category_names(instances: dict) -> tuple[list[str], dict[int, int]]:
    """Category names in id order and the map from COCO category id to class index."""
    categories = sorted(instances["categories"], key=lambda c: c["id"])
    return [c["name"] for c in categories], {c["id"]: i for i, c in enumerate(categories)}


def _parse_split(instances_path: Path, captions_path: Path) -> dict:
    """One split's category names and, for each image with an instance and a caption (in image id order),
    [file name, its captions in caption id order, its sorted class indices]."""
    instances, captions = _load_json(instances_path), _load_json(captions_path)
    names, class_of = _category_names(instances)
    classes_of_image: dict[int, set[int]] = defaultdict(set)
    for ann in instances["annotations"]:
        classes_of_image[ann["image_id"]].add(class_of[ann["category_id"]])
    captions_of_image: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for ann in captions["annotations"]:
        captions_of_image[ann["image_id"]].append((ann["id"], ann["caption"].strip()))
    images = [
        [
            image["file_name"],
            [text for _, text in sorted(captions_of_image[image["id"]])],
            sorted(classes_of_image[image["id"]]),
        ]
        for image in sorted(instances["images"], key=lambda im: im["id"])
        if classes_of_image[image["id"]] and captions_of_image[image["id"]]
    ]
    return {"names": names, "images": images}


@schema
class CocoSettings(DatasetSettings):
    """`dataset=coco` (docs/datasets.md)."""

    task: ClassVar[str] = "retrieval"
    root: str = setting()
    splits: list[str] = setting()
    n_query: int = setting(integer(0))
    n_train: int = setting(integer(0))
    n_val: int = setting(integer(0))
    split_seed: int = setting(integer(0))
    seed: int = setting(integer(0))
    skip_bad_images: bool = setting(boolean())


def coco(
    root: str,
    n_query: int = 5000,
    n_train: int = 10000,
    n_val: int = 5000,
    split_seed: int = 1814,
    seed: int = 0,
    splits: Sequence[str] = ("train2017", "val2017"),
    skip_bad_images: bool = False,
    annotation_cache=None,
) -> Benchmark:
    """`annotation_cache` (a ppp.cache.Cache, set by build_benchmark): where the parsed annotations are kept."""
    root = SOURCE.root(root)
    if not splits:
        raise ConfigError("coco: dataset.splits must name at least one image folder, e.g. [train2017, val2017]")
    rng = np.random.default_rng(seed)
    class_names: list[str] | None = None
    paths, texts, label_sets = [], [], []
    for split in splits:
        files = [SOURCE.require(root / "annotations" / f"{kind}_{split}.json") for kind in ("instances", "captions")]
        parsed = parsed_annotations(annotation_cache, files, lambda: _parse_split(*files), f"coco {split} annotations")
        if class_names is not None and parsed["names"] != class_names:
            raise ConfigError(f"coco: the categories of instances_{split}.json differ from those of {splits[0]}")
        class_names = parsed["names"]
        folder = str(root / split)  # plain strings: Path joins cost seconds over 122k images
        for file_name, captions, classes in parsed["images"]:
            paths.append(os.path.join(folder, file_name))
            texts.append(captions[rng.integers(len(captions))])
            label_sets.append(classes)
    if paths:
        SOURCE.require(Path(paths[0]))  # the image folders sit where the layout says

    pairs = ImageTextFiles(paths, texts, multi_hot(label_sets, len(class_names)), skip_bad_images)
    return retrieval_benchmark("coco", class_names, pairs, n_query, n_train, n_val, split_seed, splits=list(splits))
