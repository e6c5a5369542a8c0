"""Distance to Retrain (issue 21, "Beyond membership"): per-example distances between two models'
outputs, reported per group (the forget class, its neighbour classes, the other retained classes) beside
a floor, the same distance between two Retrains that differ only in their seed.

Classification: the Jensen-Shannon divergence of the two softmax outputs. Retrieval, per query: the JS
divergence of its similarity distributions over the database (softmax of cosine / T over the database
items) and the overlap of the two top-k lists, |top-k(A) ∩ top-k(B)| / k. `distance_to_retrain` is the
evaluators' hook (`evaluator.distance`, settings `evaluator.distance_settings` from `ppp/conf/audit/distance.yaml`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F

from ppp.data.base import LabelledDataset, carries_any
from ppp.schema import boolean, integer, number, schema, setting

GROUPS = ("forget", "neighbour", "other")


@schema
class DistanceSettings:
    """`evaluator.distance_settings` (`audit/distance.yaml`)."""

    temperature: float = setting(number(0, low_open=True))  # T of retrieval's similarity distributions
    topk: int = setting(integer(1))  # k of retrieval's top-k overlap (database items)
    binary: bool = setting(boolean())  # retrieval: sign codes (what retrieval ranks on) or the real-valued outputs
    floor_seed_offset: int = setting(integer(1))  # the floor's second Retrain: seed + this
    neighbours: int = setting(integer(1))  # neighbour classes per forget class (the Original's prototypes)


def js_divergence(p: torch.Tensor, q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Jensen-Shannon divergence in bits (base 2, in [0, 1]) of distributions along `dim`:
    JS = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½ (p + q), with 0 log 0 = 0 (zeros are exact, never NaN)."""
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)

    def kl_to_m(x: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(x > 0, x / torch.where(m > 0, m, 1.0), 1.0)  # x > 0 implies m > 0
        return torch.xlogy(x, ratio).sum(dim=dim)

    js = 0.5 * (kl_to_m(p) + kl_to_m(q)) / math.log(2.0)
    return js.clamp(0.0, 1.0).float()


def cosines(query_codes: torch.Tensor, db_codes: torch.Tensor) -> torch.Tensor:
    """(queries, database) cosine similarities, in double precision."""
    return F.normalize(query_codes.double(), dim=1) @ F.normalize(db_codes.double(), dim=1).T


def similarity_distributions(query_codes: torch.Tensor, db_codes: torch.Tensor, T: float) -> torch.Tensor:
    """(queries, database) rows: softmax over the database items of cosine(query, item) / T."""
    if T <= 0:
        raise ValueError(f"temperature T must be > 0; got {T}")
    return torch.softmax(cosines(query_codes, db_codes) / T, dim=1)


def topk_sets(sim: torch.Tensor, k: int) -> torch.Tensor:
    """(queries, database) boolean mask of each row's k most similar items; ties go to the lower index."""
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(sim, dtype=torch.bool).scatter_(1, order, True)


def topk_overlap(sim_a: torch.Tensor, sim_b: torch.Tensor, k: int) -> torch.Tensor:
    """Per query row: |top-k(A) ∩ top-k(B)| / k, the two models' top-k database lists (`topk_sets`)."""
    if not 0 < k <= sim_a.shape[1]:
        raise ValueError(f"k must be in 1..{sim_a.shape[1]} (the database items); got {k}")
    return (topk_sets(sim_a, k) & topk_sets(sim_b, k)).sum(dim=1).float() / k


def grouped(values: torch.Tensor, groups: Sequence[Hashable]) -> dict[Hashable, tuple[float, int]]:
    """Mean and count of `values` per group label (one label per value), groups in order of first appearance."""
    if len(groups) != len(values):
        raise ValueError(f"{len(values)} values but {len(groups)} group labels")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return {g: (float(values[idx].double().mean()), len(idx)) for g, idx in members.items()}


def example_groups(labels: torch.Tensor, forget_idx: Sequence[int], neighbour_idx: Sequence[int]) -> list[str]:
    """Each example's group: 'forget' when it carries a forget class, else 'neighbour' when it carries a
    neighbour class, else 'other' (single-label or multi-hot labels)."""
    forget = carries_any(labels, forget_idx)
    neighbour = carries_any(labels, neighbour_idx) if len(neighbour_idx) else torch.zeros_like(forget)
    return ["forget" if f else "neighbour" if n else "other" for f, n in zip(forget.tolist(), neighbour.tolist())]


def beside_floor(
    distance: torch.Tensor, floor: torch.Tensor, groups: Sequence[Hashable]
) -> dict[Hashable, dict[str, float]]:
    """Per group: the mean `distance` (a model vs Retrain seed s), the mean `floor` (Retrain seed s vs
    Retrain seed s′ on the same examples), their difference `excess` and the count `n`."""
    if distance.shape != floor.shape:
        raise ValueError(f"distance {tuple(distance.shape)} and floor {tuple(floor.shape)} differ in shape")
    d, f = grouped(distance, groups), grouped(floor, groups)
    return {g: {"distance": d[g][0], "floor": f[g][0], "excess": d[g][0] - f[g][0], "n": d[g][1]} for g in d}


def classification_distances(a, b, data, device, batch_size: int = 256, num_workers: int = 0) -> torch.Tensor:
    """Per example of `data`: JS divergence of the two systems' softmax outputs (`predict_proba`)."""
    from ppp.evaluation.classification import predict_proba

    pa = predict_proba(a, data, device, batch_size, num_workers)
    pb = predict_proba(b, data, device, batch_size, num_workers)
    return js_divergence(pa, pb)


def retrieval_distances(
    a,
    b,
    queries,
    database,
    device,
    T: float,
    k: int,
    binary: bool = True,
    batch_size: int = 256,
    num_workers: int = 0,
) -> dict[str, torch.Tensor]:
    """Per query of `queries`, in both cross-modal directions (i2t, t2i): `<dir>/js`, the JS divergence
    of the two systems' similarity distributions over `database` (temperature `T`), and `<dir>/topk`,
    their top-`k` overlap (ranked by cosine). Codes from `encode` (`binary`: sign() codes, what retrieval ranks on)."""
    from ppp.evaluation.retrieval import CROSS, encode

    if T <= 0:
        raise ValueError(f"temperature T must be > 0; got {T}")
    codes = {}
    for name, system in (("a", a), ("b", b)):
        codes[name] = (
            encode(system, queries, device, batch_size, num_workers, binary),
            encode(system, database, device, batch_size, num_workers, binary),
        )
    out = {}
    for direction, q, d in CROSS:
        sims = [cosines(codes[n][0][q], codes[n][1][d]) for n in ("a", "b")]
        out[f"{direction}/js"] = js_divergence(*(torch.softmax(s / T, dim=1) for s in sims))
        out[f"{direction}/topk"] = topk_overlap(*sims, k)
    return out


def distance_to_retrain(system, ctx, data: LabelledDataset, settings: DistanceSettings, batch_size: int = 256) -> dict:
    """The evaluators' hook: per group of `data` (the evaluation set; groups from the Original's
    `settings.neighbours` nearest classes, `ppp.evaluation.density.original_neighbours`) the mean distance of
    `system`'s outputs to Retrain's (seed s, the run's), `dist/<group>/<metric>`, and the floor, Retrain
    seed s + `floor_seed_offset` against Retrain seed s on the same examples, `dist_floor/<group>/<metric>`
    (NaN for a group without examples). Metrics: classification `js`; retrieval `i2t_js`, `t2i_js`,
    `i2t_topk`, `t2i_topk`. The second Retrain is trained once and cached like any model."""
    from ppp.evaluation.density import original_neighbours

    start = time.perf_counter()
    retrain = ctx.trained(exclude_forget=True)[0]
    other = ctx.trained(exclude_forget=True, seed=int(ctx.cfg.seed) + settings.floor_seed_offset)[0]
    neighbours = original_neighbours(ctx.trained()[0], ctx, settings.neighbours)
    groups = example_groups(data.labels, ctx.forget_idx, neighbours)
    workers = int(ctx.cfg.num_workers)

    def per_example(a) -> dict[str, torch.Tensor]:
        if ctx.bench.task == "classification":
            return {"js": classification_distances(a, retrain, data, ctx.device, batch_size, workers)}
        found = retrieval_distances(
            a,
            retrain,
            data,
            ctx.bench.database,
            ctx.device,
            settings.temperature,
            settings.topk,
            settings.binary,
            batch_size,
            workers,
        )
        return {k.replace("/", "_"): v for k, v in found.items()}

    distance, floor = per_example(system), per_example(other)
    out = {}
    for metric in distance:
        report = beside_floor(distance[metric], floor[metric], groups)
        for group in GROUPS:
            out[f"dist/{group}/{metric}"] = report[group]["distance"] if group in report else math.nan
            out[f"dist_floor/{group}/{metric}"] = report[group]["floor"] if group in report else math.nan
    out["time/distance_s"] = time.perf_counter() - start
    return out
