"""Unlearning a model of one's own: `ppp.unlearn(model, forget, retain, method="ppp", **method_keys)`.

The model is a trained torchvision-style classifier (an `nn.Module` from images to logits), or a
`ppp.models.System` (e.g. `ClipHashingSystem`: open_clip with this project's hash heads). Forget and
retain data are datasets or DataLoaders of `(image, label)` items, `(image, text, labels)` for a CLIP
system, images as the model takes them. The run's context comes from `ppp.experiment.build_context`,
the method from `ppp.methods`: the same code as `ppp-run`, on the user's model and data.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from ppp.errors import ConfigError


def _items(data) -> list[tuple]:
    """Every item of a dataset, or of a DataLoader's batches, as a tuple of single items."""
    if isinstance(data, DataLoader):
        out = []
        for batch in data:
            out += list(zip(*batch))
        return out
    return [tuple(data[i]) for i in range(len(data))]


def _dataset(items: list[tuple], retrieval: bool):
    from ppp.data.base import InMemoryImages, InMemoryPairs

    if retrieval:
        if any(len(item) != 3 for item in items):
            raise ValueError("a CLIP system's data items are (image, text, multi-hot labels)")
        images, texts, labels = zip(*items)
        return InMemoryPairs(torch.stack(list(images)), list(texts), torch.stack([torch.as_tensor(v) for v in labels]))
    if any(len(item) != 2 for item in items):
        raise ValueError("a classifier's data items are (image, label)")
    images, labels = zip(*items)
    return InMemoryImages(torch.stack(list(images)), torch.as_tensor([int(v) for v in labels], dtype=torch.long))


def _system(model: nn.Module):
    """The model as a `System`: one already is; a classifier is wrapped (its own module, not a copy)."""
    from ppp.models import System
    from ppp.models.resnet import ClassifierSystem

    if isinstance(model, System):
        return model, False
    if hasattr(model, "encode_image") and hasattr(model, "encode_text"):
        raise ValueError(
            "an open_clip model needs hash heads to be unlearned and scored here: wrap it in "
            "ppp.models.clip_hashing.ClipHashingSystem (a System) and pass that"
        )

    class TorchClassifier(ClassifierSystem):
        """ClassifierSystem's loss, per-sample loss and optimiser groups around the user's network."""

        def __init__(self, net: nn.Module):
            System.__init__(self)
            self.net = net

        def transform(self, image):
            return image  # the user's data is already what the network takes

        def logits(self, batch):
            return self.net(batch["image"])

    return TorchClassifier(model), True


def _num_classes(system, items: list[tuple]) -> int:
    fc = getattr(system.net, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.out_features
    labels = [item[-1] for item in items]
    return (
        int(torch.stack([torch.as_tensor(v) for v in labels]).max()) + 1
        if system.task == "classification"
        else (len(labels[0]))
    )


def _setup(model, forget, retain, class_names, forget_classes, device, method, method_keys, seed):
    """The config, context (on a throwaway cache) and system of one call."""
    from ppp.cache import Cache
    from ppp.config import compose_config
    from ppp.data.base import Benchmark, Concatenated, carries_any
    from ppp.experiment import build_context
    from ppp.methods import METHODS
    from ppp.methods.registry import CLASS_HEAD, CLIP_SPACE, OWN_MODEL, PER_SAMPLE_LOSS
    from ppp.models import System

    needs = METHODS.schema(method).needs  # unknown: ConfigError naming the valid ones
    system, wrapped = _system(model)
    task = system.task
    if OWN_MODEL in needs:
        raise ConfigError(
            f"method {method} cannot start from a given model: it builds a model of its own from a backbone config"
        )
    if CLIP_SPACE in needs and task != "retrieval":
        raise ConfigError(f"method {method} edits a CLIP model's towers; a classifier has none")
    if CLASS_HEAD in needs and task != "classification":
        raise ConfigError(f"method {method} needs a classifier's class head; {type(system).__name__} has none")
    if PER_SAMPLE_LOSS in needs and type(system).sample_loss is System.sample_loss:
        raise ConfigError(f"method {method} needs a per-sample loss: {type(system).__name__} has no sample_loss")
    forget_items, retain_items = _items(forget), _items(retain)
    retrieval = task == "retrieval"
    forget_data, retain_data = _dataset(forget_items, retrieval), _dataset(retain_items, retrieval)
    num_classes = len(class_names) if class_names is not None else _num_classes(system, forget_items + retain_items)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if forget_classes is None:  # the classes the forget data carries
        labels = forget_data.labels
        present = labels.unique() if labels.dim() == 1 else torch.nonzero(labels.sum(0) > 0).flatten()
        forget_classes = [names[int(c)] for c in present]
    forget_names = [names[c] if isinstance(c, int) else str(c) for c in forget_classes]
    unknown = [c for c in forget_names if c not in names]
    if unknown:
        raise ValueError(f"forget classes {unknown} are not among the class names {names}")
    forget_idx = [names.index(c) for c in forget_names]
    if carries_any(retain_data.labels, forget_idx).any():
        raise ValueError(f"the retain data holds samples of the forget classes {forget_names}: methods forget classes")

    cfg = compose_config(["dataset=digits" if not retrieval else "dataset=digit_scenes", f"method={method}"])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    unknown_keys = sorted(set(method_keys) - set(cfg.method))
    if unknown_keys:
        raise ValueError(f"method {method} has no keys {unknown_keys}; its keys: {', '.join(k for k in cfg.method)}")
    cfg.method = OmegaConf.merge(cfg.method, method_keys)
    cfg.forget, cfg.seed, cfg.sample_seed, cfg.num_workers = forget_names, seed, seed, 0
    cfg.dataset = {"name": "user"}
    if retrieval:
        cfg.bits = int(system.net.image_head[-1].out_features) if hasattr(system.net, "image_head") else cfg.bits
    everything = Concatenated(forget_data, retain_data)
    bench = Benchmark("user", names, task, train=everything, query=everything, database=everything, test=everything)
    device = torch.device(device)
    cache_dir = tempfile.mkdtemp(prefix="ppp-api-")  # Fisher diagonals etc. of this model only
    cfg.cache_dir = cache_dir
    OmegaConf.set_readonly(cfg, True)
    ctx = build_context(cfg, benchmarks=lambda *_: bench, cache=Cache(cache_dir), device=device, checks=False)
    ctx.original = system.to(device)
    return cfg, ctx, wrapped


def unlearn(
    model: nn.Module,
    forget,
    retain,
    method: str = "ppp",
    *,
    class_names: Sequence[str] | None = None,
    forget_classes: Sequence[str | int] | None = None,
    device: str = "cpu",
    seed: int = 0,
    **method_keys,
) -> tuple[nn.Module, dict]:
    """`method` applied to a copy of `model` (left unchanged); returns the unlearned model (of the type
    given) and the method's diagnostics (with `time/unlearn_s`, `mem/peak_mb`). `forget_classes` (names
    or indices; default: the classes of `forget`) are forgotten; `method_keys` override the method's
    shipped config (`ppp/conf/method/<method>.yaml`)."""
    from ppp.experiment import Prepared
    from ppp.experiment import unlearn as unlearn_stage

    cfg, ctx, wrapped = _setup(model, forget, retain, class_names, forget_classes, device, method, method_keys, seed)
    try:
        done = unlearn_stage(Prepared(cfg, "", ctx))
    finally:
        shutil.rmtree(cfg.cache_dir, ignore_errors=True)
    diagnostics = {**done.diagnostics, "time/unlearn_s": done.unlearn_s, "mem/peak_mb": done.peak_mb}
    return (done.model.net if wrapped else done.model), diagnostics


def evaluate(
    model: nn.Module,
    forget,
    retain,
    *,
    class_names: Sequence[str] | None = None,
    forget_classes: Sequence[str | int] | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """The task's metrics on forget and retain data: `forget/acc`, `retain/acc` for a classifier; mAP of
    each direction (`forget/i2t_map`, ...) with forget+retain as queries and database for a CLIP system."""
    from ppp.evaluation.classification import evaluate_classification
    from ppp.evaluation.retrieval import evaluate_retrieval

    cfg, ctx, _ = _setup(model, forget, retain, class_names, forget_classes, device, "original", {}, 0)
    shutil.rmtree(cfg.cache_dir, ignore_errors=True)
    system = ctx.original.eval()
    if system.task == "classification":
        return evaluate_classification(system, ctx.bench, ctx.forget_idx, ctx.device, images=ctx.bench.train)
    out = evaluate_retrieval(system, ctx.bench, ctx.forget_idx, ctx.device, queries=ctx.bench.train)
    return {k: v for k, v in out.items() if not k.startswith("per_query/")}
