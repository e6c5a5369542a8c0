"""Relearning (issue 21, "Beyond membership"): how fast does an unlearned model get its forget quality
back when fine-tuned, and how far do its weights sit from the Original's?

A method that only hides a class (its head row zeroed, the body untouched) gets it back in a few steps
on a handful of forget examples; a model that never learned the class needs many more, or does not get
there within the budget. `relearn` fine-tunes a copy of the model on the given data (retained data
only, or `k_shot` forget examples) with the shared loop's optimisers (`ppp.train._optimizers` over the
system's `param_groups(recipe)`), a constant learning rate and a fixed step budget, and scores the copy
every `eval_every` steps.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ppp.data.base import LabelledDataset
from ppp.models.base import System, TrainRecipe, batch_to
from ppp.schema import read
from ppp.train import _optimizers, drops_last, make_loader


@dataclass(frozen=True)
class RelearnResult:
    """`steps`: the first evaluated step at which forget quality came back (`reached`), None when it did
    not within the budget; `curve`: (step, quality) at step 0, every `eval_every` steps and at the last
    step; `distance_start` / `distance_end`: L2 distance of the weights before and after fine-tuning to
    the reference (None without one)."""

    steps: int | None
    curve: list[tuple[int, float]]
    distance_start: float | None
    distance_end: float | None


def weight_distance(a: nn.Module, b: nn.Module) -> float:
    """L2 norm of the difference of the parameters that `a` and `b` share (same name and shape)."""
    pb = dict(b.named_parameters())
    total = 0.0
    for name, p in a.named_parameters():
        q = pb.get(name)
        if q is not None and q.shape == p.shape:
            total += float((p.detach().double().cpu() - q.detach().double().cpu()).pow(2).sum())
    return math.sqrt(total)


def k_shot(forget_data: LabelledDataset, k: int, seed: int) -> LabelledDataset:
    """`k` forget examples drawn without replacement with `seed` (in dataset order)."""
    if not 0 < k <= len(forget_data):
        raise ValueError(f"k must be in 1..{len(forget_data)} (the forget examples); got {k}")
    return forget_data.sample(k, seed)


def reached(quality: float, start: float, target: float, margin: float) -> bool:
    """Forget quality is back: within `margin` of `target`, or past it, seen from the side it started on
    (a relearned model may overshoot the Original's quality; that counts as back)."""
    return quality >= target - margin if start <= target else quality <= target + margin


def _batches(data, system: System, batch_size: int, seed: int) -> Iterator[dict]:
    """Seeded shuffled batches, epoch after epoch (the shared loop's drop-last rule)."""
    loader = make_loader(data, system, batch_size, shuffle=True, seed=seed, drop_last=drops_last(len(data), batch_size))
    while True:
        yield from loader


def relearn(
    system: System,
    data: LabelledDataset,
    recipe,
    quality: Callable[[System], float],
    target: float,
    margin: float,
    steps: int,
    eval_every: int,
    seed: int,
    device: torch.device,
    reference: nn.Module | None = None,
    stop_when_reached: bool = False,
) -> RelearnResult:
    """Fine-tune a copy of `system` on `data` for at most `steps` optimiser steps and report when its
    forget `quality` comes back within `margin` of `target` (the Original's forget quality).

    `recipe`: the training recipe (`batch_size`, `lr`, `weight_decay`, the optimiser keys the system's
    `param_groups` reads, optional `grad_clip`); its `epochs` and `warmup` are not used: the learning rate
    is constant and the budget is `steps`. `quality(model)` is called on the copy in eval mode at step 0,
    every `eval_every` steps and after the last step, so `steps` is a multiple of `eval_every` or the
    last step itself. Deterministic given `seed` (data order and any dropout). `system` is not changed.
    `stop_when_reached` ends the run at the first evaluation that is back (the curve stops there).
    """
    if steps < 0 or eval_every < 1:
        raise ValueError(f"steps must be >= 0 and eval_every >= 1; got {steps}, {eval_every}")
    recipe = recipe if isinstance(recipe, DictConfig) else OmegaConf.create(dict(recipe))
    model = copy.deepcopy(system).to(device)
    torch.manual_seed(seed)
    optimizers = _optimizers(model.param_groups(recipe))
    grad_clip = read(TrainRecipe, recipe).grad_clip
    distance_start = weight_distance(model, reference) if reference is not None else None

    def score() -> float:
        model.eval()
        with torch.no_grad():
            return float(quality(model))

    start = score()
    curve = [(0, start)]
    found = 0 if reached(start, start, target, margin) else None
    batches = _batches(data, model, int(recipe.batch_size), seed)
    for step in range(1, steps + 1):
        if found is not None and stop_when_reached:
            break
        model.train()
        loss = model.loss(batch_to(next(batches), device))
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        for o in optimizers:
            o.step()
        if step % eval_every == 0 or step == steps:
            q = score()
            curve.append((step, q))
            if found is None and reached(q, start, target, margin):
                found = step
    distance_end = weight_distance(model, reference) if reference is not None else None
    return RelearnResult(found, curve, distance_start, distance_end)
