"""Unlearning contexts that run in seconds: a tiny MLP on 8-px digits, and the tiny CLIP hashing system
on a few hundred digit scenes."""

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from ppp.cache import Cache
from ppp.config import CONF_DIR as CONF
from ppp.data import build_benchmark
from ppp.data.digits import digits
from ppp.experiment import build_context
from ppp.methods import UnlearnContext
from ppp.models.base import System
from ppp.models.resnet import ClassifierSystem


class MLP(nn.Module):
    def __init__(self, inputs: int, hidden: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


class TinyClassifier(ClassifierSystem):
    """ClassifierSystem's pipeline, loss and optimiser groups around an MLP instead of a ResNet."""

    def __init__(self, num_classes: int, image_size: int, hidden: int):
        System.__init__(self)
        self.image_size = image_size
        self.net = MLP(3 * image_size * image_size, hidden, num_classes)

    def features(self, batch):
        return self.net.body(batch["image"])


def tiny_mlp(cfg, num_classes: int, bits: int, seed: int) -> TinyClassifier:
    """A system factory (`ppp.models.build_system`'s signature): the context builds it, nothing registers it."""
    torch.manual_seed(seed)
    return TinyClassifier(num_classes, cfg.image_size, cfg.hidden)


RECIPE = {"epochs": 30, "batch_size": 32, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.0, "warmup": 0.0}


def make_context(cache_dir, **recipe) -> UnlearnContext:
    """The tiny MLP on 8-px digits, forgetting 'six'; `recipe` overrides its training settings."""
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "sample_seed": 0,
            "bits": 16,
            "num_workers": 0,
            "forget": ["six"],
            "dataset": {"name": "digits", "size": 8, "per_class": 180, "seed": 0},
            "backbone": {
                "name": "tiny_mlp",
                "kind": "tiny_mlp",
                "image_size": 8,
                "hidden": 64,
                "train": {**RECIPE, **recipe},
            },
        }
    )
    return build_context(
        cfg,
        benchmarks=lambda dataset, cache_dir: digits(size=8, per_class=180),
        cache=Cache(cache_dir),
        system_factory=tiny_mlp,
        device=torch.device("cpu"),
        checks=False,
    )


def make_hashing_context(cache_dir, overrides=()) -> UnlearnContext:
    """clip_tiny on 240 digit scenes, one training epoch, from the shipped configs."""
    from conftest import TINY

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*TINY, f"cache_dir={cache_dir}", "device=cpu", *overrides])
    return build_context(
        cfg,
        benchmarks=lambda dataset, cache_dir: build_benchmark(dataset),  # built, not stored in the test's cache
        cache=Cache(cache_dir),
        device=torch.device("cpu"),
        checks=False,
    )
