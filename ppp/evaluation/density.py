"""Figure 1's data: how far each evaluation sample's feature lies from the forget-class prototype.

The features and prototypes are PPP's own (`ppp.methods.prototypes`): the mean of the real-valued
image and text codes for retrieval, penultimate features for classifiers; prototypes are class means
over the training set under the same model, so before/after unlearning each model is measured in its
own space. The groups must not move between the two, hence the neighbour classes are an argument
(taken once from the original model, `original_neighbours`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ppp.data.base import carries_any
from ppp.methods.prototypes import prototype_geometry, system_features, system_prototypes

GROUPS = ("forget", "neighbour", "other")


@torch.no_grad()
def prototype_distances(system, ctx, neighbours: Sequence[int], data, modality: str = "mean") -> dict[str, np.ndarray]:
    """Euclidean distance of each sample of `data` (the evaluated samples) to the nearest forget-class
    prototype, by group.

    `forget`: samples carrying a forget class; `neighbour`: samples carrying one of `neighbours` and no
    forget class; `other`: the rest. Each group keeps the evaluation set's order.
    """
    bench = ctx.bench
    prototypes = system_prototypes(system, bench.train, ctx.device, bench.num_classes, modality)[ctx.forget_idx]
    features = system_features(system, data, ctx.device, modality)
    distance = torch.cdist(features.float(), prototypes.float()).min(dim=1).values
    is_forget = carries_any(data.labels, ctx.forget_idx)
    is_neighbour = carries_any(data.labels, list(neighbours)) & ~is_forget
    masks = {"forget": is_forget, "neighbour": is_neighbour, "other": ~(is_forget | is_neighbour)}
    return {group: distance[masks[group]].numpy() for group in GROUPS}


def original_neighbours(original, ctx, k: int = 2, modality: str = "mean") -> list[int]:
    """The forget classes' k nearest retained classes by prototype distance under the original model
    (its cached prior-prototypes), as PPP picks D_n."""
    return prototype_geometry(ctx.prototypes(original, modality), ctx.forget_idx, k).neighbours
