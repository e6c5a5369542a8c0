"""One run: config -> benchmark -> original model -> unlearning method -> metrics.json."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ppp.cache import Cache
from ppp.data import build_benchmark
from ppp.errors import ConfigError
from ppp.evaluation import EVALUATORS
from ppp.evaluation.delta import deltas
from ppp.evaluation.mia import check_modes
from ppp.memory import PeakMemory
from ppp.unlearn import METHODS, UnlearnContext
from ppp.utils import resolve_device, seed_everything

REFERENCE_METHODS = ("original", "retrain", "bad")  # rows of every table; shown beside the other methods


def check_fits(cfg: DictConfig, bench) -> None:
    """Before any training: the evaluator and the backbone must serve the benchmark's task."""
    if cfg.evaluator.name != bench.task:
        raise ConfigError(f"evaluator={cfg.evaluator.name} does not fit dataset '{bench.name}', a {bench.task} "
                          f"benchmark; use evaluator={bench.task}")
    if cfg.backbone.task != bench.task:
        raise ConfigError(f"backbone={cfg.backbone.name} serves {cfg.backbone.task} data, but dataset "
                          f"'{bench.name}' is a {bench.task} benchmark")


def reference_metrics(ctx: UnlearnContext, evaluate, names: list[str]) -> dict[str, dict]:
    """Metrics of the reference models (Original, Retrain, Bad) under the same evaluator, for |delta|."""
    out = {}
    original = ctx.trained()[0]  # a fresh copy: the method may have changed the run's one in place;
    for name in names:           # reference methods return it untouched or build their own model
        model, _ = METHODS.get(name)(original, ctx, OmegaConf.create({"name": name}))
        out[name] = evaluate(model, ctx, ctx.cfg.evaluator)
    return out


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


def split_arrays(result: dict) -> dict:
    """Move the non-scalar metrics (per-query vectors) out of the JSON result, keyed by where they were."""
    rows = {"": result["metrics"], **{f"references/{n}/": m for n, m in result.get("references", {}).items()}}
    return {prefix + key: row.pop(key).numpy() for prefix, row in rows.items()
            for key in [k for k, v in row.items() if getattr(v, "ndim", 0)]}


def run_experiment(cfg: DictConfig) -> dict:
    validate(cfg)
    device = resolve_device(cfg.device)
    seed_everything(int(cfg.seed))
    bench = build_benchmark(cfg.dataset)
    check_fits(cfg, bench)
    forget_idx = bench.class_indices(list(cfg.forget))
    ctx = UnlearnContext(cfg=cfg, bench=bench, forget_idx=forget_idx, device=device, cache=Cache(cfg.cache_dir))

    original, train_s = ctx.trained()
    method = METHODS.get(cfg.method.name)
    seed_everything(int(cfg.sample_seed))
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        model, diagnostics = method(original, ctx, cfg.method)
    unlearn_s = time.perf_counter() - start

    evaluate = EVALUATORS.get(cfg.evaluator.name)
    metrics = evaluate(model, ctx, cfg.evaluator)
    metrics.update(diagnostics)
    if "bad_images" in bench.info:
        metrics["data/bad_images"] = bench.info["bad_images"].count
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
    names = [] if cfg.method.name in REFERENCE_METHODS else list(cfg.get("references") or [])
    if names:
        result["references"] = reference_metrics(ctx, evaluate, names)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    arrays = split_arrays(result)
    if arrays:
        np.savez(out / "arrays.npz", **arrays)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    references = result.get("references", {})
    print(format_table({**references, cfg.method.name: metrics}))
    for label, value in deltas(metrics, references, bench.task, cfg.delta).items():
        print(f"{label}: {100 * value:.2f}")
    print(f"metrics written to {out / 'metrics.json'}")
    return result
