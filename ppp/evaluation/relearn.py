"""Relearning (issue 21, "Beyond membership"): how fast does an unlearned model get its forget quality
back when fine-tuned, and how far do its weights sit from the Original's?

A method that only hides a class (its head row zeroed, the body untouched) gets it back in a few steps
on a handful of forget examples; a model that never learned the class needs many more, or does not get
there within the budget. `relearn` fine-tunes a copy of the model on the given data (retained data
only, or `k_shot` forget examples) with the shared loop's optimisers (`ppp.train.recipe_optimizers`), a
constant learning rate and a fixed step budget, and scores the copy every `eval_every` steps. `relearning`
is the evaluators' hook (`evaluator.relearn`, settings `evaluator.relearn_settings` from
`ppp/conf/audit/relearn.yaml`): every condition on the run's backbone recipe, the forget quality of the
evaluation split (`forget_quality`), the Original's as the target.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ppp.data.base import Benchmark, Concatenated, LabelledDataset, Transformed, carries_any
from ppp.errors import ConfigError
from ppp.models.base import System, TrainRecipe, batch_to
from ppp.schema import boolean, distinct_integers, integer, number, read, schema, setting
from ppp.train import drops_last, make_loader, recipe_optimizers


@schema
class RelearnSettings:
    """`evaluator.relearn_settings` (`audit/relearn.yaml`): the conditions, the budget and the margin, set
    before any result was seen; `max_queries` / `max_database` / `subsample_seed` thin retrieval's forget mAP."""

    retain: bool = setting(boolean())
    k: list[int] = setting(distinct_integers(1))
    steps: int = setting(integer(1))
    eval_every: int = setting(integer(1))
    margin: float = setting(number(0, 1))
    mix_retained: bool = setting(boolean())
    max_queries: int | None = setting(integer(1, optional=True))
    max_database: int | None = setting(integer(1, optional=True))
    subsample_seed: int = setting(integer(0))


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


def mixed_batches(data, alongside, system: System, batch_size: int, seed: int) -> Iterator[dict]:
    """Every item of `data` in every batch, the rest of the batch from `alongside`, shuffled with `seed`,
    epoch after epoch (an incomplete remainder is dropped)."""
    fill = batch_size - len(data)
    if fill < 1:
        raise ValueError(f"mixed batches need fewer than batch_size={batch_size} items to repeat; got {len(data)}")
    both = Transformed(Concatenated(data, alongside), system.transform)
    own = list(range(len(data)))
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(alongside), generator=generator) + len(data)
        for start in range(0, len(order) - fill + 1, fill):
            yield system.collate([both[i] for i in own + order[start : start + fill].tolist()])


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
    alongside: LabelledDataset | None = None,
) -> RelearnResult:
    """Fine-tune a copy of `system` on `data` for at most `steps` optimiser steps and report when its
    forget `quality` comes back within `margin` of `target` (the Original's forget quality).

    `recipe`: the training recipe (`batch_size`, `lr`, `weight_decay`, the optimiser keys the system's
    `param_groups` reads, optional `grad_clip`); its `epochs` and `warmup` are not used: the learning rate
    is constant and the budget is `steps`. `quality(model)` is called on the copy in eval mode at step 0,
    every `eval_every` steps and after the last step, so `steps` is a multiple of `eval_every` or the
    last step itself. Deterministic given `seed` (data order and any dropout). `system` is not changed.
    `stop_when_reached` ends the run at the first evaluation that is back (the curve stops there).
    BatchNorm layers keep their running statistics (eval mode) while the rest trains: a batch of one
    forget example cannot be normalised in train mode, and a few examples' statistics would move the
    model's scores by themselves, not through what it relearns. `alongside`: every batch holds all of
    `data` (fewer items than the batch size) and is filled up from `alongside` (e.g. k forget examples among
    retained samples, so that predicting the forget class everywhere does not fit the batch).
    """
    if steps < 0 or eval_every < 1:
        raise ValueError(f"steps must be >= 0 and eval_every >= 1; got {steps}, {eval_every}")
    recipe = recipe if isinstance(recipe, DictConfig) else OmegaConf.create(dict(recipe))
    model = copy.deepcopy(system).to(device)
    torch.manual_seed(seed)
    optimizers = recipe_optimizers(model, recipe)
    grad_clip = read(TrainRecipe, recipe).grad_clip
    distance_start = weight_distance(model, reference) if reference is not None else None

    def score() -> float:
        model.eval()
        with torch.no_grad():
            return float(quality(model))

    start = score()
    curve = [(0, start)]
    found = 0 if reached(start, start, target, margin) else None
    batches = (
        _batches(data, model, int(recipe.batch_size), seed)
        if alongside is None
        else mixed_batches(data, alongside, model, int(recipe.batch_size), seed)
    )
    for step in range(1, steps + 1):
        if found is not None and stop_when_reached:
            break
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
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


# ---------------------------------------------------------------- the evaluators' hook


def conditions(settings: RelearnSettings) -> list[str]:
    """The conditions in order: `retain` (retained data only), then `k<k>` (k forget examples)."""
    return (["retain"] if settings.retain else []) + [f"k{k}" for k in settings.k]


def check_relearning(cfg: DictConfig, bench: Benchmark, forget_idx: list[int]) -> None:
    """Before any training: each k of k-shot relearning within D_f's size and, with `mix_retained`, below
    the backbone's batch size (every batch holds the k examples and retained samples)."""
    if not cfg.evaluator.get("relearn"):
        return
    settings = read(RelearnSettings, cfg.evaluator.relearn_settings)
    available = int(carries_any(bench.train.labels, forget_idx).sum())
    if max(settings.k) > available:
        raise ConfigError(
            f"evaluator.relearn_settings.k={list(settings.k)}: k-shot relearning draws up to {max(settings.k)} "
            f"forget examples, D_f has {available}"
        )
    batch_size = int(cfg.backbone.train.batch_size)
    if settings.mix_retained and max(settings.k) >= batch_size:
        raise ConfigError(
            f"evaluator.relearn_settings.mix_retained=true puts the k forget examples in every batch beside retained "
            f"samples: k={max(settings.k)} must be below backbone.train.batch_size={batch_size}"
        )


def forget_quality(ctx, evaluator: DictConfig, data: LabelledDataset, settings: RelearnSettings):
    """The forget quality relearning measures, on the forget samples of `data` (the evaluation set):
    classification, their accuracy; retrieval, the mean of their i2t and t2i mAP against the database (the
    evaluator's relevance, ties and top-k), on `max_queries` of them and `max_database` database items drawn
    with `subsample_seed` (all when null)."""
    batch_size, workers = int(evaluator.batch_size), int(ctx.cfg.num_workers)
    forget = data.subset(torch.nonzero(carries_any(data.labels, ctx.forget_idx)).flatten())
    if ctx.bench.task == "classification":
        from ppp.evaluation.classification import predict_proba

        def accuracy(model) -> float:
            predicted = predict_proba(model, forget, ctx.device, batch_size, workers).argmax(dim=1)
            return float((predicted == forget.labels).float().mean())

        return accuracy
    from ppp.evaluation.map import average_precisions
    from ppp.evaluation.retrieval import CROSS, encode, forget_split_labels

    queries = forget.sample(settings.max_queries, settings.subsample_seed)
    database = ctx.bench.database.sample(settings.max_database, settings.subsample_seed)
    labels = forget_split_labels(queries.labels, database.labels, ctx.forget_idx, evaluator.forget_relevance)
    topk = evaluator.get("topk")

    def mean_map(model) -> float:
        q, d = (
            encode(model, queries, ctx.device, batch_size, workers),
            encode(model, database, ctx.device, batch_size, workers),
        )
        maps = [float(average_precisions(q[a], d[b], *labels, topk, evaluator.ties).mean()) for _, a, b in CROSS]
        return sum(maps) / len(maps)

    return mean_map


def relearning(system: System, ctx, evaluator: DictConfig, data: LabelledDataset, settings: RelearnSettings) -> dict:
    """Relearning metrics of `system` (the evaluators' hook): per condition `relearn/<cond>/steps` (NaN when
    not back within the budget), `/back` (0/1), `/final_quality` and `/curve` ((step, quality) rows, to
    arrays.npz); `relearn/start_quality`, `relearn/target_quality` (the Original's) and
    `relearn/weight_distance` (L2 to the Original's weights). Every condition fine-tunes with the backbone's
    recipe (batch size capped at the data's size) and the run's sample seed (k-shot draw, data order); with
    `mix_retained` each k-shot batch holds the k examples and retained samples up to the recipe's batch size."""
    start = time.perf_counter()
    original = ctx.trained()[0]
    quality = forget_quality(ctx, evaluator, data, settings)
    with torch.no_grad():
        target = quality(original.eval())
    recipe = OmegaConf.to_container(ctx.cfg.backbone.train, resolve=True)
    out = {"relearn/target_quality": target, "relearn/weight_distance": weight_distance(system, original)}
    seed = ctx.sample_seed
    for name in conditions(settings):
        train_data = ctx.retain_train if name == "retain" else k_shot(ctx.forget_train, int(name[1:]), seed)
        mixed = settings.mix_retained and name != "retain"
        capped = {**recipe, "batch_size": min(int(recipe["batch_size"]), len(train_data))}
        result = relearn(
            system,
            train_data,
            recipe if mixed else capped,
            quality,
            target,
            settings.margin,
            settings.steps,
            settings.eval_every,
            seed,
            ctx.device,
            alongside=ctx.retain_train if mixed else None,
        )
        out["relearn/start_quality"] = result.curve[0][1]
        out[f"relearn/{name}/steps"] = math.nan if result.steps is None else float(result.steps)
        out[f"relearn/{name}/back"] = int(result.steps is not None)
        out[f"relearn/{name}/final_quality"] = result.curve[-1][1]
        out[f"relearn/{name}/curve"] = torch.tensor(result.curve, dtype=torch.float64)
    out["time/relearn_s"] = time.perf_counter() - start
    return out
