"""The evaluator registry: `evaluator.name` -> `evaluate(system, ctx, cfg) -> dict[str, float]`.

Each evaluator serves one benchmark task (retrieval or classification), scores the samples that
`cfg.split` and `cfg.forget_queries` name (`ppp/evaluation/queries.py`) and adds the legacy membership
attack named in `cfg.mia` (`ppp/evaluation/mia.py`) and the membership audit's `cfg.audit.attacks`
(`ppp/evaluation/audit_membership.py`, none by default); retrieval adds the per-tower residual metrics with
`cfg.residual` (`ppp/evaluation/residual.py`) and zero-shot accuracy in CLIP's own space with `cfg.zeroshot`
(`ppp/evaluation/zeroshot.py`), which `zeroshot` reports alone (on retrieval benchmarks: `cfg.task`).
Both scoring evaluators add relearning (`cfg.relearn`, `ppp/evaluation/relearn.py`) and the distance to
Retrain (`cfg.distance`, `ppp/evaluation/distance.py`), issue 21's "beyond membership".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch
from omegaconf import DictConfig

from ppp import identity
from ppp.evaluation.audit_membership import AuditSettings, check_task, membership_audit
from ppp.evaluation.classification import evaluate_classification
from ppp.evaluation.density import original_neighbours, prototype_distances
from ppp.evaluation.distance import DistanceSettings, distance_to_retrain
from ppp.evaluation.example_statistics import classification_statistics, retrieval_statistics
from ppp.evaluation.items import classification_items, retrieval_items
from ppp.evaluation.map import TIES, check_map_settings
from ppp.evaluation.mia import MiaSettings, check_modes, membership_inference
from ppp.evaluation.queries import SPLITS, Queries, evaluation_set
from ppp.evaluation.relearn import RelearnSettings, relearning
from ppp.evaluation.retrieval import Encoder, evaluate_retrieval
from ppp.evaluation.zeroshot import ZeroshotSettings, evaluate_zeroshot
from ppp.index import index_report
from ppp.registry import Registry
from ppp.schema import block, boolean, choice, integer, one_of, parse, read, schema, setting

EVALUATORS: Registry = Registry("evaluator")  # registered under the benchmark task they evaluate
# The blocks a section without them means: the shipped ones, as identity.NEUTRAL_DEFAULTS holds them.
ZEROSHOT_DEFAULT = parse(ZeroshotSettings, identity.NEUTRAL_DEFAULTS["evaluator.zeroshot_settings"], "zeroshot")
RELEARN_DEFAULT = parse(RelearnSettings, identity.NEUTRAL_DEFAULTS["evaluator.relearn_settings"], "relearn")
DISTANCE_DEFAULT = parse(DistanceSettings, identity.NEUTRAL_DEFAULTS["evaluator.distance_settings"], "distance")
AUDIT_DEFAULT = parse(AuditSettings, identity.NEUTRAL_DEFAULTS["evaluator.audit"], "audit")


@schema
class EvaluatorSettings:
    """Every evaluator's section: its name and batch size."""

    name: str = setting()
    batch_size: int = setting(integer(1))

    @property
    def serves(self) -> str:
        """The benchmark task it evaluates (evaluators are registered under it unless they say otherwise)."""
        return self.name


@schema
class Scored(EvaluatorSettings, Queries):
    """An evaluator that scores a split's samples (`Queries`) and adds membership attacks and densities."""

    mia: list[str] = setting(check_modes, default=[])
    mia_settings: MiaSettings = block(MiaSettings)
    audit: AuditSettings = block(AuditSettings, default=AUDIT_DEFAULT)
    density: bool = setting(boolean(), default=False)
    # The per-tower residual metrics of retrieval; a classification section may hold it too (ignored), as
    # experiment=mechanism_variants sets it on every setting.
    residual: bool = setting(boolean(), default=False)
    # issue 21: relearning and the distance to Retrain (ppp/conf/audit/relearn.yaml, distance.yaml)
    relearn: bool = setting(boolean(), default=False)
    relearn_settings: RelearnSettings = block(RelearnSettings, default=RELEARN_DEFAULT)
    distance: bool = setting(boolean(), default=False)
    distance_settings: DistanceSettings = block(DistanceSettings, default=DISTANCE_DEFAULT)
    # issue 23: the per-forget-example statistic and retained quality the report compares over N model seeds
    example_statistics: bool = setting(boolean(), default=False)

    def check(self, path: str) -> None:
        Queries.check(self, path)
        check_task(self.audit, self.serves, f"{path}.audit")


@schema
class RetrievalSettings(Scored):
    forget_relevance: str = setting(one_of("forget_classes", "any_label"))
    topk: int | None = setting(integer(1, optional=True), default=None)
    ties: str = setting(one_of(*TIES))
    zeroshot: bool = setting(boolean(), default=False)
    zeroshot_settings: ZeroshotSettings = block(ZeroshotSettings, default=ZEROSHOT_DEFAULT)
    # issue 22: the served index after the deletion (ppp/index.py)
    index: bool = setting(boolean(), default=False)
    index_topk: int = setting(integer(1), default=10)

    def check(self, path: str) -> None:
        Scored.check(self, path)
        check_map_settings(self.ties, self.topk)


@schema
class ZeroshotEvaluatorSettings(EvaluatorSettings):
    """`evaluator=zeroshot`: no `split` in its file (finished runs' hashes), so the test split by default."""

    task: str = setting(one_of("retrieval", "classification"))
    split: str = setting(choice(*SPLITS), default="test")
    zeroshot_settings: ZeroshotSettings = block(ZeroshotSettings)

    @property
    def serves(self) -> str:
        return self.task


@EVALUATORS.register("retrieval", schema=RetrievalSettings)
def retrieval(system, ctx, cfg: DictConfig) -> dict:
    settings = read(RetrievalSettings, cfg)
    data = evaluation_set(ctx, cfg)
    encoder = Encoder(system, ctx.device, cfg.batch_size, int(ctx.cfg.num_workers))  # the database, encoded once
    metrics = evaluate_retrieval(
        system,
        ctx.bench,
        ctx.forget_idx,
        ctx.device,
        cfg.forget_relevance,
        settings.topk,
        queries=data,
        ties=cfg.ties,
        residual=bool(settings.residual),
        encoder=encoder,
    )
    if not ctx.forget_set.by_class:
        metrics.update(retrieval_items(encoder, ctx, settings.split))
    if settings.index:
        metrics.update(index_report(encoder, ctx, data, settings.index_topk))
    if settings.example_statistics:
        metrics.update(timed("example_statistics", partial(retrieval_statistics, encoder, ctx)))
    return {
        **metrics,
        **membership(system, ctx, cfg),
        **density(system, ctx, cfg, data),
        **(zeroshot(system, ctx, cfg) if settings.zeroshot else {}),
        **beyond_membership(system, ctx, cfg, data),
    }


@EVALUATORS.register("zeroshot", schema=ZeroshotEvaluatorSettings)
def zeroshot(system, ctx, cfg: DictConfig) -> dict:
    split = read(ZeroshotEvaluatorSettings, cfg).split
    return evaluate_zeroshot(system, ctx, cfg.zeroshot_settings, split, cfg.batch_size)


@EVALUATORS.register("classification", schema=Scored)
def classification(system, ctx, cfg: DictConfig) -> dict:
    data = evaluation_set(ctx, cfg)
    metrics = evaluate_classification(
        system, ctx.bench, ctx.forget_idx, ctx.device, cfg.batch_size, int(ctx.cfg.num_workers), data
    )
    settings = read(Scored, cfg)
    if not ctx.forget_set.by_class:
        metrics.update(classification_items(system, ctx, settings.split, cfg.batch_size, int(ctx.cfg.num_workers)))
    if settings.example_statistics:
        statistics = partial(classification_statistics, system, ctx, cfg.batch_size, int(ctx.cfg.num_workers))
        metrics.update(timed("example_statistics", statistics))
    return {
        **metrics,
        **membership(system, ctx, cfg),
        **density(system, ctx, cfg, data),
        **beyond_membership(system, ctx, cfg, data),
    }


def timed(name: str, measure: Callable[[], dict]) -> dict:
    """A measure's metrics and the seconds it took (`time/<name>_s`): what issue 23's bench section reads."""
    start = time.perf_counter()
    out = measure()
    return {**out, f"time/{name}_s": time.perf_counter() - start}


def density(system, ctx, cfg: DictConfig, data) -> dict:
    """Figure 1's distances to the forget prototype (`cfg.density`), grouped by the original model's
    neighbours so that every model of the run is measured on the same groups."""
    if not read(Scored, cfg).density:
        return {}
    neighbours = original_neighbours(ctx.trained()[0], ctx)
    return {
        f"density/{group}": torch.as_tensor(d)
        for group, d in prototype_distances(system, ctx, neighbours, data).items()
    }


def membership(system, ctx, cfg: DictConfig) -> dict:
    """The evaluator's membership attacks: the legacy `cfg.mia` (its AUC interval from the audit's bootstrap
    settings) and the audit's `cfg.audit.attacks` (none when absent or empty)."""
    settings = read(Scored, cfg)
    audit, modes = settings.audit, list(settings.mia or [])
    legacy = {}
    if modes:
        boot = int(audit.n_boot), int(audit.bootstrap_seed)
        legacy = membership_inference(system, ctx, modes, cfg.mia_settings, cfg.batch_size, *boot)
    return {**legacy, **membership_audit(system, ctx, audit, cfg.batch_size)}


def beyond_membership(system, ctx, cfg: DictConfig, data) -> dict:
    """Issue 21's relearning (`cfg.relearn`) and distance to Retrain (`cfg.distance`) on the evaluation set
    `data`; none when both are off."""
    settings = read(Scored, cfg)
    out = {}
    if settings.distance:
        out.update(distance_to_retrain(system, ctx, data, settings.distance_settings, int(cfg.batch_size)))
    if settings.relearn:
        out.update(relearning(system, ctx, cfg, data, settings.relearn_settings))
    return out
