"""Datasets, picked by name from the `dataset` config group."""

from __future__ import annotations

import inspect
import os

from omegaconf import DictConfig, OmegaConf

from ppp import identity
from ppp.cache import Cache, config_identity, content_key
from ppp.data import coco as _coco
from ppp.data import deepfashion as _deepfashion
from ppp.data import digits as _digits
from ppp.data import flickr25k as _flickr25k
from ppp.data import imagenet100 as _imagenet100
from ppp.data.base import Benchmark, LabelledDataset, benchmark_from_payload, benchmark_payload, carries_any
from ppp.errors import ConfigError
from ppp.registry import Registry
from ppp.schema import reject_unknown

DATASETS: Registry = Registry("dataset")
DATASETS.register("digit_scenes", schema=_digits.DigitScenesSettings)(_digits.digit_scenes)
DATASETS.register("digits", schema=_digits.DigitsSettings)(_digits.digits)
DATASETS.register("coco", schema=_coco.CocoSettings)(_coco.coco)
DATASETS.register("flickr25k", schema=_flickr25k.Flickr25kSettings)(_flickr25k.flickr25k)
DATASETS.register("imagenet100", schema=_imagenet100.ImageNet100Settings)(_imagenet100.imagenet100)
DATASETS.register("deepfashion", schema=_deepfashion.DeepFashionSettings)(_deepfashion.deepfashion)


# Built in memory by code: stored whole in the cache (`datasets`), keyed by the dataset config's identity.
EMBEDDED = ("digit_scenes", "digits")


def build_benchmark(cfg: DictConfig, cache_dir: str | os.PathLike | None = None) -> Benchmark:
    """Build the benchmark named by `cfg.name`; every other key but `forget` is a builder argument
    (on-disk datasets get `root: ${data_root}/<name>` from their config), declared in the dataset's schema
    (a key the section leaves out takes the builder's default). With `cache_dir`, an embedded
    dataset is built once and then loaded (about 4 s against a few hundred ms for the default), and a
    reader of large annotation files keeps them parsed there (`files.parsed_annotations`)."""
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    name = kwargs.pop("name")
    kwargs.pop("forget", None)
    builder = DATASETS.get(name)
    if "annotation_cache" in kwargs:
        raise ConfigError("dataset.annotation_cache is not a dataset setting; the cache is `cache_dir`")
    reject_unknown(DATASETS.schema(name), kwargs, "dataset")
    if "annotation_cache" in inspect.signature(builder).parameters:  # a reader that parses large annotation files
        kwargs["annotation_cache"] = Cache(cache_dir) if cache_dir is not None else None
    if cache_dir is None or name not in EMBEDDED:
        return builder(**kwargs)

    key = content_key({"version": identity.DATASET_VERSION, "dataset": config_identity(cfg, "dataset")})
    payload, _ = Cache(cache_dir).get_or_build(
        "datasets", key, lambda: benchmark_payload(builder(**kwargs)), f"{name} dataset"
    )
    return benchmark_from_payload(payload)


__all__ = ["Benchmark", "LabelledDataset", "DATASETS", "build_benchmark", "carries_any"]
