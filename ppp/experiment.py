"""One run: config -> benchmark -> original model -> unlearning method -> metrics.json."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ppp import identity
from ppp.cache import Cache, config_identity, content_key, source_digest, storable
from ppp.config import hydra_choices
from ppp.data import build_benchmark
from ppp.errors import ConfigError
from ppp.evaluation import EVALUATORS
from ppp.evaluation.changes import parameter_changes
from ppp.evaluation.delta import deltas
from ppp.evaluation.queries import check_query_settings
from ppp.memory import PeakMemory
from ppp.methods import METHODS, UnlearnContext
from ppp.runs import finished, point_to_finished, provenance, resolved, run_hash, save_model, split_arrays, write_result
from ppp.utils import make_deterministic, resolve_device, seed_everything
from ppp.validation import check_against_benchmark, check_config

PACKAGE = Path(__file__).resolve().parent
EVALUATION_SOURCES = tuple(
    PACKAGE / p
    for p in (
        "evaluation",
        "models",
        "losses",
        "methods/reference.py",
        "methods/prototypes.py",
        "data/base.py",
        "data/digits.py",
    )
)  # zero-shot draws its images at evaluation


def check_fits(cfg: DictConfig, bench) -> None:
    """Before any training: the evaluator and the backbone must serve the benchmark's task."""
    if cfg.evaluator.get("task", cfg.evaluator.name) != bench.task:
        raise ConfigError(
            f"evaluator={cfg.evaluator.name} does not fit dataset '{bench.name}', a {bench.task} "
            f"benchmark; use evaluator={bench.task}"
        )
    if cfg.backbone.task != bench.task:
        raise ConfigError(
            f"backbone={cfg.backbone.name} serves {cfg.backbone.task} data, but dataset "
            f"'{bench.name}' is a {bench.task} benchmark"
        )


def reference_key(ctx: UnlearnContext, name: str) -> str:
    """What a reference row's metrics depend on: the code that evaluates (its source, and a version for
    what the source does not show), the reference, the models it comes from (dataset, backbone, bits,
    device type, seed: Retrain and Bad follow from these and the forget classes), the forget classes in
    the order given, the whole evaluator config (split, ties, MIA settings, ...) and, when the evaluator
    draws forget queries, the sample seed that draws them."""
    evaluator = ctx.cfg.evaluator
    return content_key(
        {
            "version": identity.REFERENCE_METRICS_VERSION,
            "code": source_digest(*EVALUATION_SOURCES),
            "reference": name,
            "models": ctx.model_key(exclude_forget=False),
            "forget": list(ctx.cfg.forget),
            "evaluator": config_identity(evaluator, "evaluator"),
            "query_draw": ctx.sample_seed if evaluator.get("forget_queries", "all") != "all" else None,
        }
    )


def reference_metrics(ctx: UnlearnContext, evaluate, names: list[str], original) -> dict[str, dict]:
    """Metrics of the reference models (Original, Retrain, Bad) under the same evaluator, for |delta|, and
    which of `original`'s parameters each one changed, cached (`reference_metrics` entries, arrays
    included). `original` must be a copy the method did not touch; reference methods return it untouched
    or build their own model."""
    out = {}
    for name in names:

        def build(name=name):
            model, _ = METHODS.get(name)(original, ctx, OmegaConf.create({"name": name}))
            return storable({**evaluate(model, ctx, ctx.cfg.evaluator), **parameter_changes(model, original)})

        out[name], _ = ctx.cache.get_or_build("reference_metrics", reference_key(ctx, name), build, f"{name} metrics")
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
    check_config(cfg)


def output_dir(cfg: DictConfig) -> Path:
    """The Hydra run directory when running under Hydra, else `out_dir` (or the working directory)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.get("out_dir") or os.getcwd())


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A small text table: one row per model; mAP, accuracy, MIA rates and AUCs in percent."""
    groups = ("forget/", "retain/", "mia/", "probe/")
    cols = sorted(
        {k for r in rows.values() for k in r if k.startswith(groups)},
        key=lambda k: (groups.index(k[: k.index("/") + 1]), "/mia" in k, k),
    )  # MIA after mAP / accuracy
    width = max([16] + [len(c) + 2 for c in cols])
    head = f"{'model':<12}" + "".join(f"{c:>{width}}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(
            f"{name:<12}" + "".join(f"{100 * r[c]:>{width}.2f}" if c in r else f"{'-':>{width}}" for c in cols)
        )
    return "\n".join(lines)


def run_experiment(cfg: DictConfig) -> float:
    """One run; returns the metric named by `optimized_metric` (what a sweeper or a search optimises)."""
    return objective_value(cfg, execute(cfg))


def objective_value(cfg: DictConfig, result: dict) -> float:
    """`optimized_metric` of a run's metrics; NaN when the run has none (e.g. a reference method)."""
    return float(result["metrics"].get(cfg.optimized_metric, math.nan))


def execute(cfg: DictConfig, choices: dict | None = None) -> dict:
    """Validate, build, unlearn, evaluate and write the run's files; returns metrics.json's content.

    The run's settings are read-only: nothing downstream can change them, so several runs in one
    process give the numbers of separate processes. `choices`: the config groups' options the caller composed
    `cfg` from (default: Hydra's job's, else none), recorded in metrics.json beside the config, not hashed.
    """
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # hydra's node is not ours to freeze
    OmegaConf.set_readonly(cfg, True)
    validate(cfg)
    key = run_hash(cfg)
    done = finished(cfg, key) if cfg.skip_finished else None
    if done is not None:
        print(
            f"[skip] run {key} already finished ({done['method']}, objective {cfg.optimized_metric}="
            f"{done['metrics'].get(cfg.optimized_metric)}); results in {Path(done['run_dir'])}; "
            f"skip_finished=false runs it again"
        )
        point_to_finished(output_dir(cfg), done)
        return done

    device = resolve_device(cfg.device)
    make_deterministic(device)
    seed_everything(int(cfg.seed))
    bench = build_benchmark(cfg.dataset, cfg.cache_dir)
    check_fits(cfg, bench)
    forget_idx = bench.class_indices(list(cfg.forget))
    check_against_benchmark(cfg, bench.num_classes, forget_idx)
    check_query_settings(cfg.evaluator, bench)
    ctx = UnlearnContext(
        cfg=cfg,
        bench=bench,
        forget_idx=forget_idx,
        device=device,
        cache=Cache(
            cfg.cache_dir,
            made_by={
                "run_hash": key,
                "method": cfg.method.name,
                "dataset": cfg.dataset.name,
                "bits": int(cfg.bits),
                "seed": int(cfg.seed),
            },
        ),
    )

    original, train_s = ctx.trained()
    method = METHODS.get(cfg.method.name)
    seed_everything(int(cfg.sample_seed))
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        model, diagnostics = method(original, ctx, cfg.method)
    unlearn_s = time.perf_counter() - start

    evaluate = EVALUATORS.get(cfg.evaluator.name)
    start = time.perf_counter()
    metrics, arrays = split_arrays(evaluate(model, ctx, cfg.evaluator))
    metrics["time/evaluate_s"] = time.perf_counter() - start
    arrays = {f"method/{k}": v for k, v in arrays.items()}
    metrics.update(diagnostics)
    pristine = ctx.trained()[0]  # a fresh original: the method may have changed `original` in place
    metrics.update(parameter_changes(model, pristine))
    if "bad_images" in bench.info:
        metrics["data/bad_images"] = bench.info["bad_images"].count
    metrics.setdefault("time/train_s", train_s)
    if cfg.method.name != "original":
        metrics["time/unlearn_s"] = unlearn_s
    metrics["mem/peak_mb"] = memory.mb
    names = [] if cfg.method.name in identity.REFERENCE_METHODS else list(cfg.get("references") or [])
    references = {}
    for name, values in reference_metrics(ctx, evaluate, names, pristine).items():
        references[name], ref_arrays = split_arrays(values)
        arrays.update({f"{name}/{k}": v for k, v in ref_arrays.items()})
    metrics.update(deltas(metrics, references, bench.task, cfg.delta))

    out = output_dir(cfg)
    result = {
        "run_hash": key,
        "run_dir": str(out.resolve()),
        "method": cfg.method.name,
        "dataset": cfg.dataset.name,
        "task": bench.task,
        "backbone": cfg.backbone.name,
        "bits": int(cfg.bits),
        "seed": int(cfg.seed),
        "sample_seed": int(cfg.sample_seed),
        "forget": list(cfg.forget),
        "config": resolved(cfg),
        "choices": hydra_choices() if choices is None else choices,
        "metrics": metrics,
        "provenance": {**provenance(device), "cache": ctx.cache.used},
    }
    if references:
        result["references"] = references
    if cfg.save_model:
        print(f"unlearned model saved to {save_model(out, model)}")
    path = write_result(cfg, out, result, arrays)
    print(format_table({**references, cfg.method.name: metrics}))
    for label, value in metrics.items():
        if label.startswith(("delta/", "objective/")):
            print(f"{label}: {100 * value:.2f}")
    print(f"metrics written to {path}")
    return result
