"""Backbones, picked by `backbone.kind` from a registry."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ppp.models.base import System, batch_to
from ppp.models.clip_hashing import ClipHashingSystem
from ppp.models.resnet import ClassifierSystem
from ppp.registry import Registry

BACKBONES: Registry = Registry("backbone kind")


@BACKBONES.register("clip_hashing")
def _clip_hashing(cfg: DictConfig, num_classes: int, bits: int) -> System:
    return ClipHashingSystem(
        arch=cfg.arch,
        bits=bits,
        num_classes=num_classes,
        pretrained=cfg.get("pretrained"),
        dropout=cfg.dropout,
        delta=cfg.loss.delta,
        irrelevant_weight=cfg.loss.irrelevant_weight,
        proxy_seed=cfg.loss.proxy_seed,
        context_length=cfg.get("context_length"),
        loss=cfg.loss.get("name", "dsap"),
        contrastive_weight=float(cfg.loss.get("contrastive_weight", 0.0)),
    )


@BACKBONES.register("resnet")
def _resnet(cfg: DictConfig, num_classes: int, bits: int) -> System:
    """`bits` is unused: classifiers have no hash codes."""
    return ClassifierSystem(
        arch=cfg.arch,
        num_classes=num_classes,
        image_size=cfg.image_size,
        small_input=cfg.get("small_input", "auto"),
        weights=cfg.get("weights"),
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
