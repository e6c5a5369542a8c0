"""What every unlearning method may use, and nothing method-specific."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from ppp.cache import Cache, content_key
from ppp.data.base import Benchmark, LabelledDataset, Subset, carries_any
from ppp.fisher import fisher_diagonal
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

    @property
    def sample_seed(self) -> int:
        """Draws of the unlearning step (D_f / D_n / D_r samples, a method's own data order); `seed` fixes
        the models, so several sample seeds on one seed reuse every cached model."""
        return int(self.cfg.sample_seed)

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

    @property
    def original_key(self) -> str:
        return content_key(self.model_key(exclude_forget=False))

    def fisher(self, system: System, data: LabelledDataset, mode: str, batch_size: int = 64,
               chunk: int = 32, label: str = "fisher") -> tuple[dict[str, torch.Tensor], float]:
        """Diagonal Fisher of the original model on `data`, cached by model, samples, loss and mode; and the
        seconds it took to build or to load (the same key either way, so runs in one process stay alike)."""
        indices = data.root_indices() if isinstance(data, Subset) else torch.arange(len(data))
        key = content_key({
            "model": self.original_key,
            "samples": hashlib.sha256(indices.numpy().tobytes()).hexdigest(),
            "mode": mode,
            "batch_size": batch_size if mode == "batch" else None,
        })

        start = time.perf_counter()
        diag, _ = self.cache.get_or_build("fisher", key,
                                          lambda: fisher_diagonal(system, data, self.device, mode, batch_size, chunk),
                                          f"{label} ({mode}, {len(data)} samples)")
        return diag, time.perf_counter() - start

    def prototypes(self, system: System, modality: str) -> torch.Tensor:
        """Prior-prototypes of the original model over D = D_f u D_r (the training set), cached."""
        from ppp.unlearn.prototypes import system_prototypes

        key = content_key({"model": self.original_key, "modality": modality})
        payload, _ = self.cache.get_or_build(
            "prototypes", key,
            lambda: {"prototypes": system_prototypes(system, self.bench.train, self.device,
                                                     self.bench.num_classes, modality)},
            f"prototypes ({modality})")
        return payload["prototypes"]

    def trained(self, exclude_forget: bool = False) -> tuple[System, float]:
        """The original model (or, with exclude_forget, the retrained one), from cache or trained now.

        Returns the system and the seconds its training took (when it was first built).
        """
        key = content_key(self.model_key(exclude_forget))
        label = "retrain model" if exclude_forget else "original model"
        data = self.retain_train if exclude_forget else self.bench.train

        def build():
            system = self.fresh_system()
            start = time.perf_counter()
            train(system, data, self.cfg.backbone.train, self.device, int(self.cfg.seed), desc=label,
                  num_workers=int(self.cfg.num_workers), checkpoint=self.cache.root / "checkpoints" / f"{key}.pt")
            return {"state_dict": {k: v.cpu() for k, v in system.state_dict().items()},
                    "train_s": time.perf_counter() - start}

        payload, _ = self.cache.get_or_build("models", key, build, label)
        system = self.fresh_system()
        system.load_state_dict(payload["state_dict"])
        return system.eval(), float(payload["train_s"])
