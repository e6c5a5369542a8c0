"""Backbones, picked by `backbone.kind` from a registry."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ppp.losses import LOSSES
from ppp.models.base import System, TrainRecipe, batch_to
from ppp.models.clip_hashing import ClipHashingSystem
from ppp.models.resnet import ClassifierSystem, ResnetRecipe
from ppp.registry import Registry
from ppp.schema import block, choice, integer, number, one_of, read, schema, setting

BACKBONES: Registry = Registry("backbone kind")
TASKS = ("retrieval", "classification")


@schema
class BackboneSettings:
    """Every backbone's section: `kind` picks the registry entry (and schema), `task` what data it serves."""

    name: str = setting()
    kind: str = setting()
    task: str = setting(one_of(*TASKS))
    arch: str = setting()


@schema
class HashingLoss:
    """`backbone.loss` of the CLIP hashing backbones; keys added later default to the behaviour of before."""

    name: str = setting(choice(*LOSSES.names()), default="dsap")
    delta: float | None = setting(number(0, optional=True))
    irrelevant_weight: float = setting(number(0))
    proxy_seed: int = setting(integer(0))
    contrastive_weight: float = setting(number(0), default=0.0)


@schema
class ClipRecipe(TrainRecipe):
    lr_head: float = setting(number(0))
    lr_proxy: float = setting(number(0))


@schema
class ClipHashingSettings(BackboneSettings):
    pretrained: str | None = setting(default=None)
    context_length: int | None = setting(integer(1, optional=True), default=None)
    dropout: float = setting(number(0, 1))
    loss: HashingLoss = block(HashingLoss)
    train: ClipRecipe = block(ClipRecipe)


@schema
class ResnetSettings(BackboneSettings):
    weights: str | None = setting(default=None)
    image_size: int = setting(integer(1))
    small_input: bool | str = setting(one_of(True, False, "auto"), default="auto")
    train: ResnetRecipe = block(ResnetRecipe)


@BACKBONES.register("clip_hashing", schema=ClipHashingSettings)
def _clip_hashing(cfg: DictConfig, num_classes: int, bits: int) -> System:
    settings = read(ClipHashingSettings, cfg)
    loss = read(HashingLoss, cfg.loss)
    return ClipHashingSystem(
        arch=cfg.arch,
        bits=bits,
        num_classes=num_classes,
        pretrained=settings.pretrained,
        dropout=cfg.dropout,
        delta=cfg.loss.delta,
        irrelevant_weight=cfg.loss.irrelevant_weight,
        proxy_seed=cfg.loss.proxy_seed,
        context_length=settings.context_length,
        loss=loss.name,
        contrastive_weight=float(loss.contrastive_weight),
    )


@BACKBONES.register("resnet", schema=ResnetSettings)
def _resnet(cfg: DictConfig, num_classes: int, bits: int) -> System:
    """`bits` is unused: classifiers have no hash codes."""
    settings = read(ResnetSettings, cfg)
    return ClassifierSystem(
        arch=cfg.arch,
        num_classes=num_classes,
        image_size=cfg.image_size,
        small_input=settings.small_input,
        weights=settings.weights,
    )


def from_scratch(cfg: DictConfig) -> DictConfig:
    """The backbone config without pretrained weights (`pretrained`, `weights`): every layer random."""
    return OmegaConf.merge(cfg, {k: None for k in ("pretrained", "weights") if k in cfg})


def build_system(cfg: DictConfig, num_classes: int, bits: int, seed: int) -> System:
    """A freshly initialised system; the init is a function of `seed` alone."""
    import torch

    torch.manual_seed(seed)
    return BACKBONES.get(cfg.kind)(cfg, num_classes, bits)


__all__ = ["System", "ClassifierSystem", "BACKBONES", "build_system", "from_scratch", "batch_to"]
