"""One run: config -> benchmark -> original model -> unlearning method -> metrics.json."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ppp.cache import Cache
from ppp.data import build_benchmark
from ppp.errors import ConfigError
from ppp.evaluation import evaluate_retrieval
from ppp.evaluation.classification import evaluate_classification
from ppp.evaluation.mia import check_modes, membership_inference
from ppp.memory import PeakMemory
from ppp.registry import Registry
from ppp.unlearn import METHODS, UnlearnContext
from ppp.utils import resolve_device, seed_everything

EVALUATORS: Registry = Registry("evaluator")  # registered under the benchmark task they evaluate


@EVALUATORS.register("retrieval")
def _retrieval(system, ctx: UnlearnContext, cfg: DictConfig) -> dict:
    metrics = evaluate_retrieval(system, ctx.bench, ctx.forget_idx, ctx.device, cfg.forget_relevance,
                                 cfg.get("topk"), cfg.batch_size, int(ctx.cfg.num_workers))
    return {**metrics, **_membership(system, ctx, cfg)}


@EVALUATORS.register("classification")
def _classification(system, ctx: UnlearnContext, cfg: DictConfig) -> dict:
    metrics = evaluate_classification(system, ctx.bench, ctx.forget_idx, ctx.device, cfg.batch_size,
                                      int(ctx.cfg.num_workers))
    return {**metrics, **_membership(system, ctx, cfg)}


def _membership(system, ctx: UnlearnContext, cfg: DictConfig) -> dict:
    """The evaluator's membership-inference attacks (`cfg.mia`; none when absent or empty)."""
    modes = list(cfg.get("mia") or [])
    return membership_inference(system, ctx, modes, cfg.mia_settings, cfg.batch_size) if modes else {}


def check_evaluator_fits(evaluator: str, bench) -> None:
    """Before any training: each evaluator is named after the benchmark task it evaluates."""
    if evaluator != bench.task:
        raise ConfigError(f"evaluator={evaluator} does not fit dataset '{bench.name}', a {bench.task} benchmark; "
                          f"use evaluator={bench.task}")


def validate(cfg: DictConfig) -> None:
    """Fail early, with one line, on values that would only break deep inside the run."""
    try:
        bits = int(cfg.bits)
    except (TypeError, ValueError):
        raise ConfigError(f"bits must be a positive integer, got '{cfg.bits}'") from None
    if bits <= 0 or bits != cfg.bits:
        raise ConfigError(f"bits must be a positive integer, got '{cfg.bits}'")
    if not OmegaConf.is_list(cfg.forget):
        raise ConfigError(f"forget must be a list of class names, e.g. forget=[six]; got '{cfg.forget}'")
    METHODS.get(cfg.method.name)
    EVALUATORS.get(cfg.evaluator.name)
    check_modes(cfg.evaluator.get("mia") or [])


def output_dir(cfg: DictConfig) -> Path:
    """The Hydra run directory when running under Hydra, else `out_dir` (or the working directory)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.get("out_dir") or os.getcwd())


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A small text table: one row per model; mAP, accuracy, MIA rates and AUC in percent."""
    groups = ("forget/", "retain/", "mia/")
    cols = sorted({k for r in rows.values() for k in r if k.startswith(groups)},
                  key=lambda k: (groups.index(k[:k.index("/") + 1]), "/mia" in k, k))  # MIA after mAP / accuracy
    width = max([16] + [len(c) + 2 for c in cols])
    head = f"{'model':<12}" + "".join(f"{c:>{width}}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<12}" + "".join(f"{100 * r[c]:>{width}.2f}" if c in r else f"{'-':>{width}}" for c in cols))
    return "\n".join(lines)


def run_experiment(cfg: DictConfig) -> dict:
    validate(cfg)
    device = resolve_device(cfg.device)
    seed_everything(int(cfg.seed))
    bench = build_benchmark(cfg.dataset, cfg.get("data_root"))
    check_evaluator_fits(cfg.evaluator.name, bench)
    forget_idx = bench.class_indices(list(cfg.forget))
    ctx = UnlearnContext(cfg=cfg, bench=bench, forget_idx=forget_idx, device=device, cache=Cache(cfg.cache_dir))

    original, train_s = ctx.trained()
    method = METHODS.get(cfg.method.name)
    seed_everything(int(cfg.seed))
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        model = method(original, ctx, cfg.method)
    unlearn_s = time.perf_counter() - start

    metrics = EVALUATORS.get(cfg.evaluator.name)(model, ctx, cfg.evaluator)
    metrics.update(ctx.metrics)
    metrics.setdefault("time/train_s", train_s)
    if cfg.method.name not in ("original",):
        metrics["time/unlearn_s"] = unlearn_s
    metrics["mem/peak_mb"] = memory.mb
    result = {
        "method": cfg.method.name,
        "dataset": cfg.dataset.name,
        "backbone": cfg.backbone.name,
        "bits": int(cfg.bits),
        "seed": int(cfg.seed),
        "forget": list(cfg.forget),
        "metrics": metrics,
    }
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    print(format_table({cfg.method.name: metrics}))
    print(f"metrics written to {out / 'metrics.json'}")
    return result
