"""CLIP cross-modal hashing (DSPH): an open_clip model with one hash head per modality."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ppp.errors import ConfigError
from ppp.losses import DSPHLoss
from ppp.models.base import System

CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False


def _register_local_configs() -> None:
    """Make the package's JSON architectures (clip_tiny, ...) known to open_clip, once."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


class HashHead(nn.Sequential):
    """embedding -> Linear(embed_dim, bits) -> Dropout -> tanh; retrieval codes are sign() of it."""

    def __init__(self, embed_dim: int, bits: int, dropout: float):
        super().__init__(nn.Linear(embed_dim, bits), nn.Dropout(dropout), nn.Tanh())


class ClipHashNet(nn.Module):
    def __init__(self, clip: nn.Module, embed_dim: int, bits: int, dropout: float):
        super().__init__()
        self.clip = clip
        self.image_head = HashHead(embed_dim, bits, dropout)
        self.text_head = HashHead(embed_dim, bits, dropout)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.clip.encode_image(images))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_head(self.clip.encode_text(tokens))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens)


def create_clip(arch: str, pretrained: str | None) -> tuple[nn.Module, int, int, tuple, tuple]:
    """open_clip model, its embed dim, image size and normalisation; `pretrained` a tag or a local file."""
    import open_clip

    _register_local_configs()
    if arch not in open_clip.list_models() and not arch.startswith(("local-dir:", "hf-hub:")):
        raise ConfigError(f"unknown open_clip architecture '{arch}'")
    if pretrained and not os.path.isfile(str(pretrained)) and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        raise ConfigError(
            f"backbone.pretrained='{pretrained}' is neither a local file nor an open_clip tag for {arch}; "
            f"tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}"
        )
    clip = open_clip.create_model(arch, pretrained=pretrained or None)
    cfg = open_clip.get_model_config(arch) or {}
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = getattr(clip.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(clip.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return clip, cfg.get("embed_dim", clip.text_projection.shape[-1]), int(size), tuple(mean), tuple(std)


class ClipHashingSystem(System):
    task = "retrieval"

    def __init__(self, arch: str, bits: int, num_classes: int, pretrained: str | None = None,
                 dropout: float = 0.2, delta: float | None = None, irrelevant_weight: float = 0.8,
                 proxy_seed: int = 0, context_length: int | None = None):
        super().__init__()
        import open_clip

        clip, embed_dim, self.image_size, self.mean, self.std = create_clip(arch, pretrained)
        self.net = ClipHashNet(clip, embed_dim, bits, dropout)
        self.criterion = DSPHLoss(num_classes, bits, delta, irrelevant_weight, proxy_seed)
        self.tokenizer = open_clip.get_tokenizer(arch, context_length=context_length)
        self._preprocess = None
        self._arch, self._pretrained = arch, pretrained

    def transform(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):  # uint8 (3, H, W) from the embedded datasets
            x = image.float().div(255.0)
            if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
                x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                                  antialias=True, align_corners=False)[0]
            mean = torch.tensor(self.mean).view(3, 1, 1)
            std = torch.tensor(self.std).view(3, 1, 1)
            return (x - mean) / std
        if self._preprocess is None:  # PIL images from the real datasets
            import open_clip

            self._preprocess = open_clip.image_transform(self.image_size, is_train=False, mean=self.mean, std=self.std)
        return self._preprocess(image)

    def collate(self, items):
        images, texts, labels = zip(*items)
        return {"image": torch.stack(images), "text": self.tokenizer(list(texts)), "label": torch.stack(labels).float()}

    def codes(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(batch["image"], batch["text"])

    def loss(self, batch):
        img, txt = self.codes(batch)
        return self.criterion(img, txt, batch["label"])

    def param_groups(self, settings):
        heads = list(self.net.image_head.parameters()) + list(self.net.text_head.parameters())
        head_ids = {id(p) for p in heads}
        clip = [p for p in self.net.parameters() if id(p) not in head_ids]
        return [
            {"params": clip, "lr": settings.lr, "weight_decay": settings.weight_decay, "optimizer": "adamw"},
            {"params": heads, "lr": settings.lr_head, "weight_decay": settings.weight_decay, "optimizer": "adamw"},
            {"params": list(self.criterion.parameters()), "lr": settings.lr_proxy, "weight_decay": 5e-4,
             "optimizer": "sgd"},
        ]
