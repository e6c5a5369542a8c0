"""What every unlearning method may use, and nothing method-specific."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf

from ppp.cache import Cache, content_key
from ppp.data.base import Benchmark, LabelledDataset, carries_any
from ppp.models import System, build_system
from ppp.train import train

# Bump when a change to training code alters what a cached model would be.
TRAINING_VERSION = 1


@dataclass
class UnlearnContext:
    cfg: DictConfig  # the whole run config
    bench: Benchmark
    forget_idx: list[int]
    device: torch.device
    cache: Cache
    metrics: dict = field(default_factory=dict)  # methods add their own diagnostics here

    @property
    def forget_train(self) -> LabelledDataset:
        """D_f: training samples that carry at least one forget class."""
        mask = carries_any(self.bench.train.labels, self.forget_idx)
        return self.bench.train.subset(torch.nonzero(mask).flatten())

    @property
    def retain_train(self) -> LabelledDataset:
        """D_r: training samples that carry no forget class."""
        mask = ~carries_any(self.bench.train.labels, self.forget_idx)
        return self.bench.train.subset(torch.nonzero(mask).flatten())

    def fresh_system(self, seed: int | None = None) -> System:
        cfg = self.cfg
        return build_system(cfg.backbone, self.bench.num_classes, int(cfg.bits),
                            int(cfg.seed if seed is None else seed)).to(self.device)

    def model_key(self, exclude_forget: bool) -> dict:
        """Everything that determines a trained model (forget classes only for retrain)."""
        cfg = self.cfg
        dataset = {k: v for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items() if k != "forget"}
        return {
            "version": TRAINING_VERSION,
            "dataset": dataset,
            "backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
            "bits": int(cfg.bits),
            "seed": int(cfg.seed),
            "excluded": sorted(cfg.forget) if exclude_forget else None,
        }

    def trained(self, exclude_forget: bool = False) -> tuple[System, float]:
        """The original model (or, with exclude_forget, the retrained one), from cache or trained now.

        Returns the system and the seconds its training took (when it was first built).
        """
        key_obj = self.model_key(exclude_forget)
        label = "retrain model" if exclude_forget else "original model"
        data = self.retain_train if exclude_forget else self.bench.train

        def build():
            system = self.fresh_system()
            start = time.perf_counter()
            train(system, data, self.cfg.backbone.train, self.device, int(self.cfg.seed), desc=label,
                  num_workers=int(self.cfg.num_workers))
            return {"state_dict": {k: v.cpu() for k, v in system.state_dict().items()},
                    "train_s": time.perf_counter() - start}

        payload, _ = self.cache.get_or_build("models", content_key(key_obj), build, label)
        system = self.fresh_system()
        system.load_state_dict(payload["state_dict"])
        return system.eval(), float(payload["train_s"])
