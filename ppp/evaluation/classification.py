"""Forget / retain accuracy on the test (or validation) samples of the forget and retained classes."""

from __future__ import annotations

import torch

from ppp.data.base import Benchmark, LabelledDataset, carries_any
from ppp.models.scores import class_scores
from ppp.train import collect


def predict_proba(system, data, device, batch_size: int = 256, num_workers: int = 0) -> torch.Tensor:
    """Softmax of the class scores (image modality for hashing systems) of every item of `data`, in order."""
    (probs,) = collect(
        system,
        data,
        device,
        lambda batch: torch.softmax(class_scores(system, batch)[0].float(), dim=1),
        batch_size,
        num_workers,
    )
    return probs


def evaluate_classification(
    system,
    bench: Benchmark,
    forget_idx: list[int],
    device,
    batch_size: int = 256,
    num_workers: int = 0,
    images: LabelledDataset | None = None,
) -> dict[str, float]:
    """Accuracy on `images` (default: the test split), split into forget and retain samples (all retain without
    forget classes), and
    `forget/chance_acc` = 1 / classes (the chance level `objective/oracle_free` aims at)."""
    images = bench.test if images is None else images
    predicted = predict_proba(system, images, device, batch_size, num_workers).argmax(dim=1)
    labels = images.labels
    correct = (predicted == labels).float()
    is_forget = carries_any(labels, forget_idx)
    out = {
        "retain/acc": float(correct[~is_forget].mean()),
        "forget/chance_acc": 1.0 / bench.num_classes,
        "count/retain_images": int((~is_forget).sum()),
    }
    if forget_idx:  # none for an item forget set: every image is a retain image
        out.update({"forget/acc": float(correct[is_forget].mean()), "count/forget_images": int(is_forget.sum())})
    return out
