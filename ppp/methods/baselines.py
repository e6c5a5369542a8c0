"""Training-based baselines: Finetune, Bad Teacher and Amnesiac.

Each is a data set plus, where needed, an objective for the one shared loop (`ppp.train.train`); the
recipe is the backbone's `train` settings with the method's overrides for the system's task
(`method.train.classification` / `method.train.retrieval`). Classification follows the SSD
repository's versions (see the method configs). For hashing systems (multi-hot labels, no class
head) no reference code exists; our adaptations:

- finetune: the system's own loss (DSPH) on D_r.
- amnesiac: each forget sample's forget labels are replaced by one random retained label it does not
  carry (for single-label data: a uniform random retained class), then the system's own loss on
  those plus all of D_r.
- bad_teacher: the distilled distributions are softmax(cos / T) over the cosines of the real-valued
  codes to the model's own DSPH proxies, for the image and the text code; the KL terms of the two
  modalities are summed. The student's proxies train with it at the backbone's proxy lr.

Bad Teacher takes at least `method.min_steps` optimiser steps (60, the official run's count on CIFAR-100):
the recipe's epochs are raised to ceil(min_steps / batches per epoch) where they would take fewer
(docs/decisions.md, "Baselines").

Retrieval recipes inherit the backbone's optimiser and learning rates (only epochs and warm-up are
overridden). Every baseline runs under the shared loop's warm-up + cosine schedule (warmup 0 here),
where the SSD code keeps the learning rate constant.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ppp.data.base import Concatenated, ForgetTagged, LabelledDataset
from ppp.errors import ConfigError
from ppp.methods.registry import METHODS, OWN_MODEL, MethodSettings
from ppp.models import System
from ppp.models.scores import class_scores
from ppp.schema import boolean, integer, mapping, number, one_of, read, schema, setting
from ppp.train import batches_per_epoch, tagged_collate, train

MODALITIES = ("image", "text")  # what the bad teacher distils for hashing systems (classifiers have one output)


@schema
class Trained(MethodSettings):
    """A method that trains: `train` holds its overrides of `backbone.train`, per backbone task."""

    train: dict | None = setting(mapping(optional=True), default=None)


@schema
class BadTeacherSettings(Trained):
    needs = frozenset({OWN_MODEL})  # its incompetent teacher is a fresh model built from the backbone config

    retain_fraction: float = setting(number(0, 1, low_open=True))
    kl_reduction: str = setting(one_of("mean", "batchmean"))
    temperature: dict = setting(mapping())
    teacher_seed_offset: int = setting(integer(0))
    incompetent_pretrained: bool = setting(boolean())
    min_steps: int = setting(integer(0))


def recipe(system: System, ctx, cfg: DictConfig) -> DictConfig:
    """The backbone's training recipe with this method's overrides for the system's task."""
    base = OmegaConf.to_container(ctx.cfg.backbone.train, resolve=True)
    overrides = (read(Trained, cfg).train or {}).get(system.task)
    return OmegaConf.merge(base, overrides or {})


def _train(
    system: System, data: LabelledDataset, ctx, cfg: DictConfig, objective=None, settings: DictConfig | None = None
) -> tuple[System, dict]:
    """Train on `data` in `settings` (default: the method's recipe); the data order follows the sample seed.
    `ForgetTagged` data reach the objective with their tags (`batch["forget"]`). No diagnostics."""
    return train(
        system,
        data,
        recipe(system, ctx, cfg) if settings is None else settings,
        ctx.device,
        ctx.sample_seed,
        objective=objective,
        desc=cfg.name,
        num_workers=int(ctx.cfg.num_workers),
        collate=tagged_collate(system) if isinstance(data, ForgetTagged) else None,
    ), {}


class Relabelled(LabelledDataset):
    """`base` with new labels (the last element of each item)."""

    def __init__(self, base: LabelledDataset, labels: torch.Tensor):
        assert len(base) == len(labels)
        self.base, self.labels = base, labels

    def __getitem__(self, i):
        *rest, _ = self.base[i]
        return (*rest, self.labels[i])


def random_wrong_labels(labels: torch.Tensor, swapped: list[int] | None, num_classes: int, seed: int) -> torch.Tensor:
    """Each sample's `swapped` classes (None: every class it carries, an item deletion) replaced by one random
    class it does not carry and that is not swapped (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    hot = labels.float() if labels.dim() == 2 else F.one_hot(labels, num_classes).float()
    allowed = torch.ones(num_classes, dtype=torch.bool)
    if swapped is None:
        new = torch.zeros_like(hot)
    else:
        allowed[swapped] = False
        new = hot.clone()
        new[:, swapped] = 0
    for i in range(len(new)):
        candidates = torch.nonzero(allowed & (hot[i] == 0)).flatten()
        if len(candidates) == 0:  # a sample carrying every allowed class: any allowed one will do
            candidates = torch.nonzero(allowed).flatten()
        new[i, candidates[torch.randint(len(candidates), (1,), generator=gen)]] = 1
    return new.to(labels.dtype) if labels.dim() == 2 else new.argmax(dim=1)


@METHODS.register("finetune", schema=Trained)
def finetune(system, ctx, cfg):
    """Continue training on D_r alone with the system's own loss, so that D_f is catastrophically forgotten."""
    return _train(system, ctx.retain_train, ctx, cfg)


@METHODS.register("amnesiac", schema=Trained)
def amnesiac(system, ctx, cfg):
    """Train on D_r plus the forget samples relabelled with random wrong (retained) classes (Graves et al.,
    the relabelling variant)."""
    forget = ctx.forget_train
    wrong = random_wrong_labels(forget.labels, ctx.forget_set.swapped, ctx.bench.num_classes, ctx.sample_seed)
    return _train(system, Concatenated(ctx.retain_train, Relabelled(forget, wrong)), ctx, cfg)


def incompetent_teacher(ctx, cfg) -> System:
    """A randomly initialised model; with `incompetent_pretrained`, pretrained weights stay (SSD's ViT quirk)."""
    seed = ctx.sample_seed + int(cfg.teacher_seed_offset)
    if cfg.incompetent_pretrained:
        return ctx.fresh_system(seed=seed)
    return ctx.fresh_system(seed=seed, scratch=True)


def kl_divergence(log_student: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """KL(target || student); 'mean' averages over batch x classes, as the official code's
    F.kl_div default does, 'batchmean' over the batch (the true KL per sample)."""
    pointwise = F.kl_div(log_student, target, reduction="none")
    if reduction == "mean":
        return pointwise.mean()
    if reduction == "batchmean":
        return pointwise.sum() / len(pointwise)
    raise ConfigError(f"method.kl_reduction must be mean or batchmean; got '{reduction}'")


@METHODS.register("bad_teacher", schema=BadTeacherSettings)
def bad_teacher(system, ctx, cfg):
    """Distil the original (competent teacher) on a random part of D_r and a random model (incompetent
    teacher) on D_f into a copy of the original (Chundawat et al. 2023).

    A sample's teacher follows from its tag (`ForgetTagged`), as in the published code: a forget item is
    one of D_f, a class's sample or a listed item alike.
    """
    competent = copy.deepcopy(system).eval().requires_grad_(False)
    incompetent = incompetent_teacher(ctx, cfg).eval().requires_grad_(False)
    retain = ctx.retain_train
    data = ForgetTagged(
        ctx.forget_train, retain.sample(round(float(cfg.retain_fraction) * len(retain)), ctx.sample_seed)
    )
    temperature = float(cfg.temperature[system.task])

    def objective(student, batch):
        is_forget = batch["forget"].float()[:, None]
        with torch.no_grad():
            targets = [
                is_forget * F.softmax(bad / temperature, dim=1) + (1 - is_forget) * F.softmax(good / temperature, dim=1)
                for good, bad in zip(
                    class_scores(competent, batch, MODALITIES), class_scores(incompetent, batch, MODALITIES)
                )
            ]
        return sum(
            kl_divergence(F.log_softmax(scores / temperature, dim=1), target, cfg.kl_reduction)
            for scores, target in zip(class_scores(student, batch, MODALITIES), targets)
        )

    settings = recipe(system, ctx, cfg)
    per_epoch = batches_per_epoch(len(data), int(settings.batch_size))
    settings.epochs = max(int(settings.epochs), math.ceil(int(cfg.min_steps) / max(per_epoch, 1)))
    model, _ = _train(system, data, ctx, cfg, objective, settings)
    return model, {"bad_teacher/epochs": int(settings.epochs), "bad_teacher/steps": int(settings.epochs) * per_epoch}
