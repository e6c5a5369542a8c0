"""|Δ|: how far a method lands from the references, on the task's quality metrics only.

Forget-set metrics are compared with Retrain, retain-set metrics with Original. Only the metrics
named in `QUALITY` count (mAP in both directions, or accuracy), so MIA rates, counts and any metric
added later never leak into |Δ| or into a search objective built on it.

Two definitions over the settings (directions, and bits when the report pools runs):
- `abs_mean`: |mean of signed gaps|, which matches the paper's printed Table 2 values
  (Flickr SSD forget 10.82 -> printed 10.8; PPP 6.38 -> 6.37);
- `mean_abs`: mean of |gaps| (10.88 and 6.42 there), which cannot hide gaps of opposite sign.

`objective/gap` needs Retrain, which a real deletion request does not have. `objective/oracle_free` puts
the forget side's target at chance instead: the evaluator's `forget/chance_map` (the forget queries' mAP
under a random ranking, from the labels) or `forget/chance_acc` (1 / classes); its retain side is the same
|Δ| to Original. It needs `references` to hold only `original`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ppp.errors import choose

QUALITY = {"retrieval": ("i2t_map", "t2i_map"), "classification": ("acc",)}
# An item forget set's forget side (issue 22, `ppp/evaluation/items.py`): its pairs' partner R@10, or the
# accuracy on its images; the retain side stays as above.
ITEM_QUALITY = {"retrieval": ("i2t_r10", "t2i_r10"), "classification": ("acc",)}
DEFINITIONS = ("abs_mean", "mean_abs")
SIDES = (("forget", "retrain"), ("retain", "original"))  # (metric split, the reference it is compared with)
CHANCE = {"retrieval": "forget/chance_map", "classification": "forget/chance_acc"}  # the forget side's chance level
ITEM_CHANCE = {"retrieval": "forget/chance_r10", "classification": "forget/chance_acc"}


def gap(values: Sequence[float], references: Sequence[float], definition: str) -> float:
    """|Δ| of paired values (one per setting) against their references."""
    choose("delta definition", definition, DEFINITIONS)
    diffs = [v - r for v, r in zip(values, references, strict=True)]
    if definition == "abs_mean":
        return abs(sum(diffs) / len(diffs))
    return sum(abs(d) for d in diffs) / len(diffs)


def quality_keys(task: str, split: str, items: bool = False) -> list[str]:
    """The metric keys |Δ| reads on one split, e.g. ['forget/i2t_map', 'forget/t2i_map'] (`items`: of an item
    forget set)."""
    names = ITEM_QUALITY[task] if items and split == "forget" else QUALITY[task]
    return [f"{split}/{name}" for name in names]


def deltas(
    metrics: dict, references: dict[str, dict], task: str, definition: str, items: bool = False
) -> dict[str, float]:
    """`delta/forget` (vs Retrain), `delta/retain` (vs Original) and their sum `objective/gap`, for
    whichever references are present (none for an evaluator without the quality metrics, e.g. zero-shot alone);
    `delta/forget_chance` (vs the chance level the evaluator reports) and `objective/oracle_free` =
    `delta/forget_chance` + `delta/retain`, which need no Retrain. `items`: an item forget set's keys."""
    out = {}
    for split, reference in SIDES:
        keys = quality_keys(task, split, items)
        if reference in references and all(k in metrics for k in keys):
            out[f"delta/{split}"] = gap(
                [metrics[k] for k in keys], [references[reference][k] for k in keys], definition
            )
    if "delta/forget" in out and "delta/retain" in out:
        out["objective/gap"] = out["delta/forget"] + out["delta/retain"]
    forget, chance = quality_keys(task, "forget", items), (ITEM_CHANCE if items else CHANCE).get(task)
    if chance in metrics and all(k in metrics for k in forget):
        out["delta/forget_chance"] = gap([metrics[k] for k in forget], [metrics[chance]] * len(forget), definition)
        if "delta/retain" in out:
            out["objective/oracle_free"] = out["delta/forget_chance"] + out["delta/retain"]
    return out
