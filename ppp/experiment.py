"""One run: config -> benchmark -> original model -> unlearning method -> metrics.json.

`execute` composes four stages, each returning what it made: `prepare` (config, run hash, context),
`unlearn` (the method's model), `evaluate` (metrics, references, deltas) and `record` (the files)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ppp import identity
from ppp.cache import Cache, atomic_write, config_identity, content_key, source_digest, storable
from ppp.config import hydra_choices
from ppp.data import build_benchmark
from ppp.data.base import Benchmark
from ppp.errors import ConfigError
from ppp.evaluation import EVALUATORS
from ppp.evaluation.changes import parameter_changes
from ppp.evaluation.delta import deltas
from ppp.evaluation.queries import Queries, check_query_settings
from ppp.evaluation.relearn import check_relearning
from ppp.forget_set import forget_set
from ppp.memory import PeakMemory
from ppp.methods import METHODS, UnlearnContext
from ppp.models import System
from ppp.runs import finished, point_to_finished, provenance, resolved, run_hash, save_model, split_arrays, write_result
from ppp.schema import read
from ppp.stream import deletion_record, lineage, request_sets
from ppp.utils import make_deterministic, resolve_device, seed_everything
from ppp.validation import check_against_benchmark, check_clip_method_backbone, check_combinations, check_sections

log = logging.getLogger(__name__)

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
        "train.py",
        "index.py",
    )
)  # zero-shot draws its images at evaluation; relearning fine-tunes with the training loop's optimisers;
# index.py: the served index's report (`evaluator.index`) is a reference row's metric too


def check_fits(cfg: DictConfig, bench) -> None:
    """Before any training: the evaluator and the backbone must serve the benchmark's task (what each
    serves: its schema's `serves`, its `task`)."""
    if read(EVALUATORS.schema(cfg.evaluator.name), cfg.evaluator).serves != bench.task:
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
    draws forget queries, the sample seed that draws them. The validation split's `forget_samples` draw,
    disjoint from the test draw since issue 20, is named in the key, so that no row cached with the earlier
    draw (the test draw's samples) is reused; relearning (issue 21) draws its k forget examples and data order
    with the sample seed, so it is keyed when `evaluator.relearn` is on; every other key is as before."""
    evaluator = ctx.cfg.evaluator
    queries = read(Queries, evaluator)
    disjoint = (
        {"val_forget_draw": "disjoint"} if (queries.split, queries.forget_queries) == ("val", "forget_samples") else {}
    )
    return content_key(
        {
            "version": identity.REFERENCE_METRICS_VERSION,
            "code": source_digest(*EVALUATION_SOURCES),
            "reference": name,
            "models": ctx.model_key(exclude_forget=False),
            "forget": list(ctx.cfg.forget) if ctx.forget_set.by_class else ctx.forget_set.identity,
            "evaluator": config_identity(evaluator, "evaluator"),
            "query_draw": ctx.sample_seed if queries.forget_queries != "all" else None,
            **disjoint,
            **({"relearn_draw": ctx.sample_seed} if evaluator.get("relearn") else {}),
            **({} if ctx.forget_set.by_class else {"held_out_draw": ctx.sample_seed}),
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
    """Fail early, with one line, on values that would only break deep inside the run: the one check entry
    point. Every section is parsed through its typed schema (unknown and missing keys are errors), then the
    checks across sections run; the benchmark-dependent ones (`check_fits`, `check_against_benchmark`,
    `check_query_settings`) follow once the benchmark is built."""
    check_clip_method_backbone(cfg)
    check_sections(cfg, complete=True)
    check_combinations(cfg)


def output_dir(cfg: DictConfig) -> Path:
    """The Hydra run directory when running under Hydra, else `out_dir` (or the working directory)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.get("out_dir") or os.getcwd())


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A small text table: one row per model; mAP, accuracy, recall, MIA rates and AUCs in percent (an item
    forget set's expected ranks are in metrics.json)."""
    groups = ("forget/", "deleted/", "retain/", "heldout/", "mia/", "probe/")
    cols = sorted(
        {k for r in rows.values() for k in r if k.startswith(groups) and not k.endswith("_rank")},
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


# ---------------------------------------------------------------- benchmarks and the context

BenchmarkProvider = Callable[[DictConfig, "str | os.PathLike | None"], Benchmark]
"""Gives the benchmark of a dataset config (and the cache folder): `build_benchmark` builds it afresh."""


class MemoisedBenchmarks:
    """A benchmark provider that builds each dataset once (keyed by its config's content hash): runs in
    one process that differ in the method only share it; runs never modify a benchmark."""

    def __init__(self, build: BenchmarkProvider = build_benchmark):
        self.build = build
        self.built: dict[str, Benchmark] = {}

    def __call__(self, dataset_cfg: DictConfig, cache_dir=None) -> Benchmark:
        key = content_key(dataset_cfg)
        if key not in self.built:
            self.built[key] = self.build(dataset_cfg, cache_dir)
        return self.built[key]


def build_context(
    cfg: DictConfig,
    benchmarks: BenchmarkProvider | None = None,
    cache: Cache | None = None,
    system_factory=None,
    device: torch.device | None = None,
    checks: bool = True,
) -> UnlearnContext:
    """The one place a config becomes an `UnlearnContext` (runner, scripts, tests, `ppp.api`).

    `checks` runs the benchmark-dependent checks (evaluator/backbone fit, forget classes, query
    settings); a partial config (a test's, the API's) skips them. `system_factory` has
    `ppp.models.build_system`'s signature and replaces it, so a network need not be registered."""
    device = resolve_device(cfg.device) if device is None else device
    bench = (benchmarks or build_benchmark)(cfg.dataset, cfg.get("cache_dir"))
    if checks:
        check_fits(cfg, bench)
    forgotten = forget_set(cfg, bench)
    if checks:
        check_against_benchmark(cfg, bench.num_classes, forgotten.classes)
        check_query_settings(cfg.evaluator, bench, forgotten.classes if forgotten.by_class else None)
        check_relearning(cfg, bench, forgotten.classes)
    return UnlearnContext(
        cfg=cfg,
        bench=bench,
        forget_set=forgotten,
        device=device,
        cache=Cache(cfg.cache_dir) if cache is None else cache,
        system_factory=system_factory,
    )


# ---------------------------------------------------------------- the run's stages


@dataclass
class Prepared:
    cfg: DictConfig  # read-only, resolved
    run_hash: str
    ctx: UnlearnContext | None  # None when the run had finished before
    finished: dict | None = None  # that earlier run's metrics.json content
    choices: dict = field(default_factory=dict)  # the config groups' options `cfg` was composed from


@dataclass
class Unlearned:
    model: System
    diagnostics: dict
    train_s: float  # the original model's training (when it was first built)
    unlearn_s: float
    peak_mb: float


@dataclass
class Evaluated:
    model: System
    metrics: dict
    arrays: dict  # per-query/per-sample arrays, `method/...` and `<reference>/...`
    references: dict[str, dict]
    before: System  # the model the method started from, pristine (a stream's: the previous request's)


def prepare(
    cfg: DictConfig,
    benchmarks: BenchmarkProvider | None = None,
    cache: Cache | None = None,
    system_factory=None,
    choices: dict | None = None,
) -> Prepared:
    """Everything before the method: config checks, run hash, skip when finished, determinism, context.

    The run's settings are made read-only here: nothing downstream can change them, so several runs in
    one process give the numbers of separate processes. `benchmarks` lets a caller (a search) reuse
    benchmarks across runs without the runner knowing; `system_factory` builds the network instead of
    the backbone registry (`build_context`). `choices`: the config groups' options the caller composed `cfg`
    from (default: Hydra's job's, else none), recorded in metrics.json beside the config, not hashed."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # hydra's node is not ours to freeze
    OmegaConf.set_readonly(cfg, True)
    validate(cfg)
    key = run_hash(cfg)
    done = finished(cfg, key) if cfg.skip_finished else None
    if done is not None:
        log.info(
            "[skip] run %s already finished (%s, objective %s=%s); results in %s; skip_finished=false runs it again",
            key,
            done["method"],
            cfg.optimized_metric,
            done["metrics"].get(cfg.optimized_metric),
            Path(done["run_dir"]),
        )
        point_to_finished(output_dir(cfg), done)
        return Prepared(cfg, key, None, done)

    device = resolve_device(cfg.device)
    make_deterministic(device)
    seed_everything(int(cfg.seed))
    if cache is None:
        made_by = {"run_hash": key, "method": cfg.method.name, "dataset": cfg.dataset.name}
        cache = Cache(cfg.cache_dir, made_by={**made_by, "bits": int(cfg.bits), "seed": int(cfg.seed)})
    context = build_context(cfg, benchmarks, cache, system_factory, device=device)
    return Prepared(cfg, key, context, choices=hydra_choices() if choices is None else choices)


def unlearn(prepared: Prepared) -> Unlearned:
    """The method on the original model, timed and memory-measured apart from training and evaluation."""
    ctx, cfg = prepared.ctx, prepared.cfg
    original, train_s = ctx.trained()
    method = METHODS.get(cfg.method.name)
    seed_everything(int(cfg.sample_seed))
    start = time.perf_counter()
    with PeakMemory(ctx.device) as memory:
        model, diagnostics = method(original, ctx, cfg.method)
    return Unlearned(model, diagnostics, train_s, time.perf_counter() - start, memory.mb)


def evaluate(prepared: Prepared, unlearned: Unlearned, evaluator=None) -> Evaluated:
    """The unlearned model's metrics, its parameter changes, the reference rows and the deltas to them.

    `evaluator` (the config's by default) is what scores every model, references included."""
    ctx, cfg, model = prepared.ctx, prepared.cfg, unlearned.model
    score = EVALUATORS.get(cfg.evaluator.name) if evaluator is None else evaluator
    start = time.perf_counter()
    metrics, arrays = split_arrays(score(model, ctx, cfg.evaluator))
    metrics["time/evaluate_s"] = time.perf_counter() - start
    arrays = {f"method/{k}": v for k, v in arrays.items()}
    metrics.update(unlearned.diagnostics)
    pristine = ctx.trained()[0]  # a fresh original: the method may have changed `original` in place
    metrics.update(parameter_changes(model, pristine))
    if "bad_images" in ctx.bench.info:
        metrics["data/bad_images"] = ctx.bench.info["bad_images"].count
    metrics.setdefault("time/train_s", unlearned.train_s)
    if cfg.method.name != "original":
        metrics["time/unlearn_s"] = unlearned.unlearn_s
    metrics["mem/peak_mb"] = unlearned.peak_mb
    names = [] if cfg.method.name in identity.REFERENCE_METHODS else list(cfg.get("references") or [])
    references = {}
    # a stream's later request is compared with the Original, not with the model it started from
    first = ctx if ctx.after is None else replace(ctx, after=None)
    original = pristine if first is ctx else first.trained()[0]
    for name, values in reference_metrics(first, score, names, original).items():
        references[name], ref_arrays = split_arrays(values)
        arrays.update({f"{name}/{k}": v for k, v in ref_arrays.items()})
    metrics.update(deltas(metrics, references, ctx.bench.task, cfg.delta, items=not ctx.forget_set.by_class))
    return Evaluated(model, metrics, arrays, references, pristine)


def record(prepared: Prepared, evaluated: Evaluated, requests: list[dict] | None = None) -> dict:
    """metrics.json, arrays, the run index entry (and the model when asked); returns metrics.json's content.

    The table goes to stdout with print: it is the run's result, what a user pipes or reads, not a log
    message (Hydra's logging would prefix every line of it)."""
    cfg, ctx, metrics, references = prepared.cfg, prepared.ctx, evaluated.metrics, evaluated.references
    out = output_dir(cfg)
    result = {
        "run_hash": prepared.run_hash,
        "run_dir": str(out.resolve()),
        "method": cfg.method.name,
        "dataset": cfg.dataset.name,
        "task": ctx.bench.task,
        "backbone": cfg.backbone.name,
        "bits": int(cfg.bits),
        "seed": int(cfg.seed),
        "sample_seed": int(cfg.sample_seed),
        "forget": list(cfg.forget),
        "config": resolved(cfg),
        "choices": prepared.choices,
        "metrics": metrics,
        "provenance": {**provenance(ctx.device), "cache": ctx.cache.used},
    }
    if requests:  # which items were deleted, and each request's deletion record (also a file of its own)
        result["forget_set"] = {"kind": ctx.forget_set.kind, "positions": ctx.forget_set.positions.tolist()}
        result["requests"] = requests
        for entry in requests:
            path = out / "requests" / f"request_{entry['request']}.json"
            atomic_write(path, json.dumps(entry, indent=2).encode())
    if references:
        result["references"] = references
    if cfg.save_model:
        log.info("unlearned model saved to %s", save_model(out, evaluated.model))
    path = write_result(cfg, out, result, evaluated.arrays)
    lines = [format_table({**references, cfg.method.name: metrics})]
    lines += [f"{k}: {100 * v:.2f}" for k, v in metrics.items() if k.startswith(("delta/", "objective/"))]
    print("\n".join(lines))
    log.info("metrics written to %s", path)
    return result


def execute(
    cfg: DictConfig,
    benchmarks: BenchmarkProvider | None = None,
    evaluator=None,
    cache: Cache | None = None,
    system_factory=None,
    choices: dict | None = None,
) -> dict:
    """Validate, build, unlearn, evaluate and write the run's files; returns metrics.json's content. An item
    forget set is deleted in its successive requests (`ppp.stream`; one unless `forget_set.requests` > 1), each
    on the model the previous one left, each with its deletion record; metrics.json holds the last request's."""
    prepared = prepare(cfg, benchmarks, cache, system_factory, choices)
    if prepared.finished is not None:
        return prepared.finished
    if prepared.ctx.forget_set.by_class:
        return record(prepared, evaluate(prepared, unlearn(prepared), evaluator))
    parts, records, after = request_sets(prepared.ctx), [], None
    for number, part in enumerate(parts, 1):
        step = replace(prepared, ctx=replace(prepared.ctx, forget_set=part, after=after))
        unlearned = unlearn(step)
        evaluated = evaluate(step, unlearned, evaluator)
        records.append(deletion_record(number, len(parts), part, prepared.cfg, unlearned, evaluated))
        after = (evaluated.model, lineage(prepared.run_hash, number))
    return record(prepared, evaluated, records)
