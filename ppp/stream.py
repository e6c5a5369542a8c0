"""A stream of deletion requests (issue 22): what each request is, and the record a privacy engineer files for it.

`forget_set.requests = k > 1` deletes an item forget set in k successive requests (`ppp.forget_set.requests`), each
unlearning on the model the previous one left (`UnlearnContext.after`) with D_r = the training items not deleted
so far; the runner (`ppp.experiment.execute`) evaluates after every request against the Retrain of everything
deleted so far and against the Original (the erosion of what is kept accumulates over the requests); which
parameters a request changed is measured against the model before it.

What stays valid across requests: the dataset, the Original (request 1's model), and every Retrain (keyed by the
deleted items, so request j's Retrain is the Retrain of one request for the same items). What does not: the
Fisher diagonals and prototypes of the model being unlearned, which is a new model after every request; they are
cached under the request's own key (`after`'s digest), never the Original's.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from ppp.cache import content_key
from ppp.data.base import root_indices
from ppp.forget_set import ForgetSet, ForgetSetSettings, requests
from ppp.index import changed_towers
from ppp.schema import read

# What a record's figures hold: quality on the deleted and kept data, the item measures, |delta| and the index.
RECORD_PREFIXES = ("forget/", "deleted/", "heldout/", "retain/", "delta/", "objective/", "index/")


def request_sets(ctx) -> list[ForgetSet]:
    """The run's forget set as its successive requests (one request unless `forget_set.requests` > 1)."""
    if "forget_set" not in ctx.cfg or ctx.forget_set.by_class:
        return [ctx.forget_set]
    settings = read(ForgetSetSettings, ctx.cfg.forget_set)
    owner = None
    if settings.kind == "contributor":
        owner = torch.as_tensor(ctx.bench.info["contributors"])[root_indices(ctx.bench.train)]
    return requests(ctx.forget_set, settings.requests, settings.share_seed, list(settings.contributors), owner)


def lineage(run_hash: str, done: int) -> str:
    """The identity of the model a run's first `done` requests left: what its cached Fisher and prototypes key."""
    return content_key({"run": run_hash, "requests_done": done})


def deletion_record(number: int, total: int, part: ForgetSet, cfg, unlearned, evaluated) -> dict:
    """One request's record: what was asked, which items, which towers and parameters changed (against the model
    before the request), the figures of the model beside the Original's and Retrain's (of everything deleted so
    far), and the times."""

    def figures(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if k.startswith(RECORD_PREFIXES) and isinstance(v, (int, float))}

    metrics, references = evaluated.metrics, evaluated.references
    return {
        "request": number,
        "of": total,
        "method": cfg.method.name,
        "asked": OmegaConf.to_container(cfg.forget_set),
        "items": {"positions": part.positions.tolist(), "root_ids": part.root.tolist(), "count": len(part.root)},
        "deleted_so_far": len(part.deleted.root),
        "changed_towers": sorted(changed_towers(evaluated.model, evaluated.before)),
        "changed": {k: v for k, v in metrics.items() if k.startswith("changed/") and k.endswith("_count")},
        "figures": {"model": figures(metrics), **{name: figures(values) for name, values in references.items()}},
        "time": {"unlearn_s": unlearned.unlearn_s, "evaluate_s": metrics.get("time/evaluate_s")},
    }
