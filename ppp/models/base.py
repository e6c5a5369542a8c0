"""A `System` bundles a network with its training loss and its input pipeline.

Unlearning methods touch `system.net` only (the parameters that serve queries); the loss may carry
its own trained state (DSPH proxies), which is saved with the checkpoint and used, frozen, by Fisher.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ppp.schema import boolean, integer, number, schema, setting


class System(nn.Module):
    net: nn.Module
    task: str  # "retrieval" or "classification"

    def transform(self, image: Any) -> torch.Tensor:
        """Per-item image preprocessing (runs in DataLoader workers)."""
        raise NotImplementedError

    def collate(self, items: list[tuple]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean training loss over the batch."""
        raise NotImplementedError

    def fisher_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch-mean objective a batch-mode Fisher differentiates: the one `sample_loss` measures per
        sample, so both Fisher modes measure one loss. The training loss unless a system trains on more."""
        return self.loss(batch)

    def loss_context(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detached batch-level quantities that a per-sample loss needs (e.g. the batch's codes)."""
        return {}

    def sample_loss(
        self, net_forward, sample: dict[str, torch.Tensor], context: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Loss of one sample (tensors without the batch dim), through `net_forward` (a functional call
        of `self.net`), written without data-dependent shapes so that torch.func.vmap can batch it."""
        raise NotImplementedError

    def net_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The arguments `sample_loss` passes to `net_forward`, for a whole batch. Systems that name them
        get the hook-based per-sample Fisher (ppp/per_sample_grads.py); the others, torch.func's."""
        raise NotImplementedError

    def param_groups(self, settings) -> list[dict]:
        """Optimiser groups: dicts with 'params', 'lr', 'weight_decay' and 'optimizer' ('adamw' | 'sgd')."""
        raise NotImplementedError

    def parameter_group(self, name: str) -> tuple[str, str]:
        """(tower, module) of the parameter `name` of `net`: the groups the parameter-change shares are
        reported over (`ppp/evaluation/changes.py`). Without a layout, one group for everything."""
        return "all", "all"


def batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@schema
class TrainRecipe:
    """A backbone's training recipe (`backbone.train`); a backbone's schema adds its optimiser keys."""

    epochs: int = setting(integer(0))
    batch_size: int = setting(integer(1))
    lr: float = setting(number(0))
    weight_decay: float = setting(number(0))
    warmup: float = setting(number(0, 1))
    grad_clip: float | None = setting(number(0, optional=True), default=None)
    # torch's fused optimiser kernels (one kernel per step over every parameter): faster, not bit-identical to the
    # multi-tensor ones, so a model trained with them is another model (docs/decisions.md, "Fused optimiser kernels")
    fused_optimizer: bool = setting(boolean(), default=False)


def normalised_tensor_image(image: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """An embedded dataset's uint8 (3, H, W) image as the network takes it: [0, 1], bilinear-resized
    (antialiased) to size x size when it differs, then normalised per channel."""
    x = image.float().div(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
