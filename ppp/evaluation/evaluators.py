"""The evaluator registry: `evaluator.name` -> `evaluate(system, ctx, cfg) -> dict[str, float]`.

Each evaluator serves one benchmark task (retrieval or classification) and adds the membership
attacks named in `cfg.mia`.
"""
from __future__ import annotations

from omegaconf import DictConfig

from ppp.evaluation.classification import evaluate_classification
from ppp.evaluation.mia import membership_inference
from ppp.evaluation.retrieval import evaluate_retrieval
from ppp.registry import Registry

EVALUATORS: Registry = Registry("evaluator")  # registered under the benchmark task they evaluate


@EVALUATORS.register("retrieval")
def retrieval(system, ctx, cfg: DictConfig) -> dict:
    metrics = evaluate_retrieval(system, ctx.bench, ctx.forget_idx, ctx.device, cfg.forget_relevance,
                                 cfg.get("topk"), cfg.batch_size, int(ctx.cfg.num_workers), cfg.ties)
    return {**metrics, **membership(system, ctx, cfg)}


@EVALUATORS.register("classification")
def classification(system, ctx, cfg: DictConfig) -> dict:
    metrics = evaluate_classification(system, ctx.bench, ctx.forget_idx, ctx.device, cfg.batch_size,
                                      int(ctx.cfg.num_workers))
    return {**metrics, **membership(system, ctx, cfg)}


def membership(system, ctx, cfg: DictConfig) -> dict:
    """The evaluator's membership-inference attacks (`cfg.mia`; none when absent or empty)."""
    modes = list(cfg.get("mia") or [])
    return membership_inference(system, ctx, modes, cfg.mia_settings, cfg.batch_size) if modes else {}
