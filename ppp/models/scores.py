"""Class scores of any System: what membership inference attacks and what the bad teacher distils."""

from __future__ import annotations

import torch


def class_scores(
    system, batch: dict[str, torch.Tensor], modalities: tuple[str, ...] = ("image",)
) -> list[torch.Tensor]:
    """Logits of a classifier; for a hashing system, the cosines of each modality's real-valued (tanh)
    code to the DSPH class proxies, its closest analogue of a prediction vector. One (B, C) tensor per
    modality (a classifier has just the one)."""
    if system.task == "classification":
        return [system.logits(batch)]
    image, text = system.codes(batch)
    codes = {"image": image, "text": text}
    return [system.criterion.proxy_cosines(codes[m]) for m in modalities]
