"""What every unlearning method may use, and nothing method-specific."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from ppp import identity
from ppp.cache import Cache, config_identity, content_key, index_digest
from ppp.data.base import Benchmark, LabelledDataset, root_indices
from ppp.errors import ConfigError
from ppp.fisher import FisherEstimate, batch_order, fisher_diagonal, official_order, predictive_fisher, uses_context
from ppp.forget_set import ForgetSet
from ppp.models import System, build_system, from_scratch
from ppp.schema import read
from ppp.train import train


@dataclass
class UnlearnContext:
    cfg: DictConfig  # the whole run config
    bench: Benchmark
    forget_set: ForgetSet  # classes, or items of the training split (`ppp.forget_set`)
    device: torch.device
    cache: Cache
    # Replaces `ppp.models.build_system` (same signature): a network of one's own, unregistered.
    system_factory: Callable[[DictConfig, int, int, int], System] | None = None
    # A trained model given by its user (`ppp.api`): the original, instead of one trained from the config.
    original: System | None = None
    # A stream's later request (issue 22): the model the earlier requests left, and a digest of how it came to
    # be (the run and the earlier requests), which keys what is cached of it in place of the Original's key.
    after: tuple[System, str] | None = None

    @property
    def sample_seed(self) -> int:
        """Draws of the unlearning step (D_f / D_n / D_r samples, a method's own data order); `seed` fixes
        the models, so several sample seeds on one seed reuse every cached model."""
        return int(self.cfg.sample_seed)

    @property
    def forget_idx(self) -> list[int]:
        """The forget classes; none for an item set (a deletion of training items, issue 22)."""
        return self.forget_set.classes

    @property
    def forget_train(self) -> LabelledDataset:
        """D_f: the training samples that carry a forget class, or the forgotten items."""
        mask = self.forget_set.of(self.bench.train)
        return self.bench.train.subset(torch.nonzero(mask).flatten())

    @property
    def retain_train(self) -> LabelledDataset:
        """D_r: the other training samples (in a stream: without what earlier requests deleted)."""
        mask = ~self.forget_set.gone(self.bench.train)
        return self.bench.train.subset(torch.nonzero(mask).flatten())

    def fresh_system(self, seed: int | None = None, scratch: bool = False) -> System:
        """A newly initialised system (`scratch`: without pretrained weights), through the context's factory."""
        cfg, build = self.cfg, self.system_factory or build_system
        backbone = from_scratch(cfg.backbone) if scratch else cfg.backbone
        return build(backbone, self.bench.num_classes, int(cfg.bits), int(cfg.seed if seed is None else seed)).to(
            self.device
        )

    def training_identity(self, recipe=None) -> dict:
        """What determines a model besides its data and seed: code version, device type, dataset, backbone
        (its training recipe replaced by `recipe` when given) and, for hashing, the code length.

        The device type is keyed because kernels differ in floating point: a model trained on CUDA is
        not the one a CPU run would train (docs/decisions.md, "Cache keys")."""
        backbone = config_identity(self.cfg.backbone, "backbone")
        if recipe is not None:
            backbone["train"] = config_identity(recipe, "backbone.train")
        return {
            "version": identity.TRAINING_VERSION,
            "device": self.device.type,
            "dataset": config_identity(self.cfg.dataset, "dataset"),
            "backbone": backbone,
            "bits": int(self.cfg.bits) if self.bench.task == "retrieval" else None,
        }

    def model_key(self, exclude_forget: bool, seed: int | None = None) -> dict:
        """Everything that determines a trained model (what is forgotten only for retrain); `seed` (default the
        run's) names another seed's model, e.g. the second Retrain of the distance floor."""
        key = {
            **self.training_identity(),
            "seed": int(self.cfg.seed if seed is None else seed),
            "excluded": self.forget_set.excluded(list(self.cfg.forget)) if exclude_forget else None,
        }
        if (after := self.stream_model(exclude_forget, seed)) is not None:
            key["after"] = after[1]
        return key

    def stream_model(self, exclude_forget: bool, seed: int | None) -> tuple[System, str] | None:
        """The model earlier requests of a stream left and its lineage, when that is what is asked for: this
        request's original (not a Retrain, not another seed's model); None outside a stream."""
        return None if exclude_forget or seed is not None else self.after

    @property
    def original_key(self) -> str:
        return content_key(self.model_key(exclude_forget=False))

    def fisher_context(self, settings) -> LabelledDataset:
        """The per-sample loss's context samples: `fisher_context_size` drawn from the whole training set
        with `seed` (not `sample_seed`), so every set, chunk and sample seed sees the same context."""
        return self.bench.train.sample(int(settings.fisher_context_size), int(self.cfg.seed))

    def fisher(
        self, system: System, data: LabelledDataset, settings: DictConfig, label: str = "fisher"
    ) -> tuple[dict[str, torch.Tensor], float]:
        """Diagonal Fisher of the original model on `data` under a method's Fisher settings (`fisher_mode`,
        `fisher_batch_size`, `batch_order`, `fisher_chunk`, `fisher_memory_mb`, `fisher_context_size`), cached; and the seconds
        it took to build or to load (the same key either way, so runs in one process stay alike).

        Keyed on the samples in the order the estimator sees them, the mode, and what the mode depends
        on: batch mode its batch size (and, through the order, which samples share a batch), per-sample
        mode its context samples. Not the chunk nor its memory budget: with a fixed context they do not
        change the loss."""
        mode = settings.fisher_mode
        context = None
        if mode == "batch" and batch_order(settings) == "official":
            data = data.subset(official_order(data.labels, self.forget_set.of(data)))
        elif mode == "per_sample" and uses_context(system):
            context = self.fisher_context(settings)
        estimate = {
            "mode": mode,
            "kind": "empirical",
            "batch_size": int(settings.fisher_batch_size) if mode == "batch" else None,
            "context": index_digest(root_indices(context)) if context is not None else None,
        }

        def build():
            budget = read(FisherEstimate, settings).fisher_memory_mb
            return fisher_diagonal(
                system,
                data,
                self.device,
                mode,
                int(settings.fisher_batch_size),
                int(settings.fisher_chunk),
                context,
                None if budget is None else float(budget),
            )

        return self._cached_fisher(data, estimate, build, f"{label} ({mode}, {len(data)} samples)")

    def _cached_fisher(self, data: LabelledDataset, estimate: dict, build, label: str):
        """A Fisher diagonal of the original model on `data`, keyed on the code version, the model, the samples
        in order and `estimate` (what else determines it), from cache or built now; and the seconds it took."""
        key = content_key(
            {
                "version": identity.FISHER_VERSION,
                "model": self.original_key,
                "samples": index_digest(root_indices(data)),
                **estimate,
            }
        )
        start = time.perf_counter()
        diag, _ = self.cache.get_or_build("fisher", key, build, label)
        return diag, time.perf_counter() - start

    def predictive_fisher(
        self, system: System, data: LabelledDataset, settings: DictConfig, label: str = "fisher"
    ) -> tuple[dict[str, torch.Tensor], float]:
        """The true Fisher of the original classifier on `data` (`ppp.fisher.predictive_fisher`: every class
        weighted by the model's softmax, Golatkar et al.'s), cached; and the seconds it took to build or load.
        Keyed as `fisher`'s per-sample mode (no loss context: a classifier has none) plus its kind and the
        number of classes it sums over; not `fisher_chunk` nor `fisher_memory_mb`."""
        classes = self.bench.num_classes
        budget = settings.fisher_memory_mb

        def build():
            return predictive_fisher(
                system,
                data,
                self.device,
                classes,
                int(settings.fisher_chunk),
                None if budget is None else float(budget),
            )

        estimate = {"mode": "per_sample", "kind": "predictive", "classes": classes}
        return self._cached_fisher(data, estimate, build, f"{label} (predictive, {len(data)} samples)")

    def prototypes(self, system: System, modality: str) -> torch.Tensor:
        """Prior-prototypes of the original model over D = D_f u D_r (the training set), cached."""
        from ppp.methods.prototypes import system_prototypes

        key = content_key(
            {
                "version": identity.PROTOTYPE_VERSION,
                "model": self.original_key,
                "modality": modality if system.task == "retrieval" else None,
            }
        )
        payload, _ = self.cache.get_or_build(
            "prototypes",
            key,
            lambda: {
                "prototypes": system_prototypes(system, self.bench.train, self.device, self.bench.num_classes, modality)
            },
            f"prototypes ({modality})",
        )
        return payload["prototypes"]

    def trained(self, exclude_forget: bool = False, seed: int | None = None) -> tuple[System, float]:
        """The original model (or, with exclude_forget, the retrained one), from cache or trained now;
        `seed` (default the run's `seed`) trains and keys that seed's model instead (init and data order).

        Returns the system and the seconds its training took (when it was first built).
        """
        if (after := self.stream_model(exclude_forget, seed)) is not None:
            return copy.deepcopy(after[0]).eval(), 0.0
        if self.original is not None:
            if exclude_forget:
                raise ConfigError("a retrained model needs a training recipe; this context was given its model")
            return copy.deepcopy(self.original).eval(), 0.0
        seed = int(self.cfg.seed if seed is None else seed)
        key = content_key(self.model_key(exclude_forget, seed))
        label = "retrain model" if exclude_forget else "original model"
        label += f" (seed {seed})" if seed != int(self.cfg.seed) else ""
        data = self.retain_train if exclude_forget else self.bench.train

        return self.trained_on(data, seed, key, label)

    def trained_on(self, data: LabelledDataset, seed: int, key: str, label: str) -> tuple[System, float]:
        """A model of the run's backbone and training recipe trained on `data` with `seed` (init and data
        order), cached under the content key `key` and resumable from a per-epoch checkpoint; and the seconds
        its training took when first built. Original, Retrain and the membership audit's references."""

        def build():
            system = self.fresh_system(seed)
            start = time.perf_counter()
            train(
                system,
                data,
                self.cfg.backbone.train,
                self.device,
                seed,
                desc=label,
                num_workers=int(self.cfg.num_workers),
                checkpoint=self.cache.root / "checkpoints" / f"{key}.pt",
            )
            return {
                "state_dict": {k: v.cpu() for k, v in system.state_dict().items()},
                "train_s": time.perf_counter() - start,
            }

        payload, _ = self.cache.get_or_build("models", key, build, label)
        system = self.fresh_system(seed)
        system.load_state_dict(payload["state_dict"])
        return system.eval(), float(payload.get("train_s", 0.0))  # references cached before it had no time
