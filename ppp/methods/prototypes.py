"""PPP's prior-prototypes (Eq. 2), neighbour classes and the correction factor gamma (Eq. 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ppp.errors import ConfigError
from ppp.train import collect

MODALITIES = ("image", "text", "mean")


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean feature of each class (multi-label samples count towards each of their classes). (C, D)."""
    onehot = labels.float() if labels.dim() == 2 else torch.nn.functional.one_hot(labels, num_classes).float()
    counts = onehot.sum(0).clamp_min(1)
    return (onehot.T @ features.float()) / counts[:, None]


@torch.no_grad()
def retrieval_features(system, data, device, modality: str = "mean", batch_size: int = 256) -> torch.Tensor:
    """The real-valued (tanh) codes of every item of `data`: image, text, or their mean."""
    if modality not in MODALITIES:
        raise ConfigError(f"method.prototype_modality must be one of {', '.join(MODALITIES)}, got '{modality}'")
    img, txt = collect(system, data, device, system.codes, batch_size)
    return {"image": img, "text": txt, "mean": (img + txt) / 2}[modality]


def retrieval_prototypes(system, data, device, modality: str = "mean", batch_size: int = 256) -> torch.Tensor:
    """Prototypes from the real-valued (tanh) codes of `data`: image, text, or their mean."""
    features = retrieval_features(system, data, device, modality, batch_size)
    return class_prototypes(features, data.labels, data.labels.shape[1])


@torch.no_grad()
def system_features(system, data, device, modality: str = "mean") -> torch.Tensor:
    """The features prototypes average: hash codes for retrieval, penultimate features for classifiers."""
    if system.task == "retrieval":
        return retrieval_features(system, data, device, modality)
    (features,) = collect(system, data, device, system.features)
    return features


def system_prototypes(system, data, device, num_classes: int, modality: str = "mean") -> torch.Tensor:
    """Prior-prototypes of any system: hash codes for retrieval, penultimate features for classifiers."""
    return class_prototypes(system_features(system, data, device, modality), data.labels, num_classes)


@dataclass
class Geometry:
    neighbours: list[int]  # retained classes nearest to the forget classes (union over forget classes)
    mu_n: float  # mean distance forget prototype -> its k neighbours
    mu_rest: float  # mean distance forget prototype -> the other retained classes
    gamma: float  # (mu_rest / mu_n) ** 2, optionally capped

    @property
    def ratio(self) -> float:
        return self.mu_rest / self.mu_n


def prototype_geometry(protos: torch.Tensor, forget_idx: list[int], k: int, gamma_max: float | None = None) -> Geometry:
    """Neighbours of the forget classes by Euclidean prototype distance, and gamma (Eq. 3).

    With several forget classes, each contributes its own k neighbours; mu_n averages the distances
    to each one's own neighbours, mu_rest the distances to retained classes outside the neighbour set.
    """
    num_classes = protos.shape[0]
    retained = [c for c in range(num_classes) if c not in forget_idx]
    k = min(k, len(retained) - 1) if len(retained) > 1 else len(retained)
    dist = torch.cdist(protos.float(), protos.float())
    own = {f: sorted(retained, key=lambda c: (float(dist[f, c]), c))[:k] for f in forget_idx}
    neighbours = sorted({c for cs in own.values() for c in cs})
    rest = [c for c in retained if c not in neighbours]
    mu_n = float(torch.stack([dist[f, own[f]].mean() for f in forget_idx]).mean())
    mu_rest = float(torch.stack([dist[f, rest].mean() for f in forget_idx]).mean()) if rest else mu_n
    gamma = (mu_rest / max(mu_n, 1e-12)) ** 2
    if gamma_max is not None:
        gamma = min(gamma, float(gamma_max))
    return Geometry(neighbours, mu_n, mu_rest, gamma)


def random_neighbours(num_classes: int, forget_idx: list[int], count: int, seed: int) -> list[int]:
    """`count` retained classes drawn uniformly with `seed`: the ablation of the prototype-guided choice
    (`method.neighbours=random`), as many classes as the prototypes picked."""
    retained = [c for c in range(num_classes) if c not in forget_idx]
    order = torch.randperm(len(retained), generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(retained[i] for i in order[:count])
