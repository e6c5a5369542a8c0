"""The evaluator registry: `evaluator.name` -> `evaluate(system, ctx, cfg) -> dict[str, float]`.

Each evaluator serves one benchmark task (retrieval or classification), scores the samples that
`cfg.split` and `cfg.forget_queries` name (`ppp/evaluation/queries.py`) and adds the membership
attacks named in `cfg.mia`; retrieval adds the per-tower residual metrics with `cfg.residual`
(`ppp/evaluation/residual.py`) and zero-shot accuracy in CLIP's own space with `cfg.zeroshot`
(`ppp/evaluation/zeroshot.py`), which `zeroshot` reports alone (on retrieval benchmarks: `cfg.task`).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ppp.evaluation.classification import evaluate_classification
from ppp.evaluation.density import original_neighbours, prototype_distances
from ppp.evaluation.mia import membership_inference
from ppp.evaluation.queries import evaluation_set
from ppp.evaluation.retrieval import evaluate_retrieval
from ppp.evaluation.zeroshot import evaluate_zeroshot
from ppp.registry import Registry

EVALUATORS: Registry = Registry("evaluator")  # registered under the benchmark task they evaluate


@EVALUATORS.register("retrieval")
def retrieval(system, ctx, cfg: DictConfig) -> dict:
    data = evaluation_set(ctx, cfg)
    metrics = evaluate_retrieval(
        system,
        ctx.bench,
        ctx.forget_idx,
        ctx.device,
        cfg.forget_relevance,
        cfg.get("topk"),
        cfg.batch_size,
        int(ctx.cfg.num_workers),
        data,
        cfg.ties,
        bool(cfg.get("residual", False)),
    )
    return {
        **metrics,
        **membership(system, ctx, cfg),
        **density(system, ctx, cfg, data),
        **(zeroshot(system, ctx, cfg) if cfg.get("zeroshot") else {}),
    }


@EVALUATORS.register("zeroshot")
def zeroshot(system, ctx, cfg: DictConfig) -> dict:
    return evaluate_zeroshot(system, ctx, cfg.zeroshot_settings, cfg.get("split", "test"), cfg.batch_size)


@EVALUATORS.register("classification")
def classification(system, ctx, cfg: DictConfig) -> dict:
    data = evaluation_set(ctx, cfg)
    metrics = evaluate_classification(
        system, ctx.bench, ctx.forget_idx, ctx.device, cfg.batch_size, int(ctx.cfg.num_workers), data
    )
    return {**metrics, **membership(system, ctx, cfg), **density(system, ctx, cfg, data)}


def density(system, ctx, cfg: DictConfig, data) -> dict:
    """Figure 1's distances to the forget prototype (`cfg.density`), grouped by the original model's
    neighbours so that every model of the run is measured on the same groups."""
    if not cfg.get("density"):
        return {}
    neighbours = original_neighbours(ctx.trained()[0], ctx)
    return {
        f"density/{group}": torch.as_tensor(d)
        for group, d in prototype_distances(system, ctx, neighbours, data).items()
    }


def membership(system, ctx, cfg: DictConfig) -> dict:
    """The evaluator's membership-inference attacks (`cfg.mia`; none when absent or empty)."""
    modes = list(cfg.get("mia") or [])
    return membership_inference(system, ctx, modes, cfg.mia_settings, cfg.batch_size) if modes else {}
