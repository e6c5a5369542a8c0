"""Datasets, picked by name from the `dataset` config group."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ppp.data import digits as _digits
from ppp.data.base import Benchmark, LabelledDataset, carries_any
from ppp.errors import ConfigError
from ppp.registry import Registry

DATASETS: Registry = Registry("dataset")
DATASETS.register("digit_scenes")(_digits.digit_scenes)
DATASETS.register("digits")(_digits.digits)


def build_benchmark(cfg: DictConfig, data_root: str | None = None) -> Benchmark:
    """Build the benchmark named by `cfg.name`; every other key but `forget` is a builder argument."""
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    name = kwargs.pop("name")
    kwargs.pop("forget", None)
    builder = DATASETS.get(name)
    if getattr(builder, "needs_data_root", False):
        kwargs["data_root"] = data_root
    try:
        return builder(**kwargs)
    except TypeError as err:
        raise ConfigError(f"dataset '{name}': {err}") from None


__all__ = ["Benchmark", "LabelledDataset", "DATASETS", "build_benchmark", "carries_any"]
