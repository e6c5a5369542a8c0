"""Hamming-ranking mean average precision, computed from per-distance counts.

A Hamming distance between b-bit codes takes only b + 1 values, so a ranking is a sequence of tied
groups. `ties` says how items tied at one distance are ordered:
- `stable`: by database index (a stable sort). On the CPU the order comes from NumPy's radix sort of
  the small integer distances, a counting sort by distance bucket, about 20x cheaper than sorting
  floats; the values equal those of a stable argsort.
- `average`: the tie-aware AP of McSherry & Najork (ECIR 2008), the exact mean of AP over every order
  of the tied items, in closed form from the number of items and of relevant items at each distance.
  No sort at all, and the value no longer depends on the order of the database.
"""

from __future__ import annotations

import numpy as np
import torch

from ppp.errors import ConfigError

TIES = ("stable", "average")
BLOCK_ENTRIES = 2**23  # query x database pairs per block: bounds memory (a few hundred MB) at any database size
EXACT_KEYS = 2**22  # keys (and so every partial sum, a multiple of 1/2) stay below 2^23: exact in float32


def binarise(codes: torch.Tensor) -> torch.Tensor:
    """{-1, +1} codes as float32 (real inputs by sign, 0 -> +1)."""
    return torch.where(codes >= 0, 1.0, -1.0).float()


def hamming_distance(query_codes: torch.Tensor, db_codes: torch.Tensor) -> torch.Tensor:
    """Hamming distances between {-1, +1} codes (real inputs are binarised by sign, 0 -> +1)."""
    return sign_distance(binarise(query_codes), binarise(db_codes))


def sign_distance(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Hamming distances between codes already in {-1, +1}: (bits - q.d) / 2 in one pass."""
    return torch.addmm(q.new_full((1, 1), q.shape[1] / 2), q, d.T, alpha=-0.5)


def check_map_settings(ties: str, topk: int | None) -> None:
    """One-line errors for the mAP settings, so a run can check them before any training."""
    if ties not in TIES:
        raise ConfigError(f"evaluator.ties must be one of {', '.join(TIES)}; got '{ties}'")
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk <= 0):
        raise ConfigError(f"evaluator.topk must be a positive integer or null (mAP@all); got '{topk}'")
    if topk is not None and ties == "average":
        raise ConfigError("evaluator.ties=average is defined for mAP@all only: set evaluator.topk=null or ties=stable")


def average_precisions(
    query_codes: torch.Tensor,
    db_codes: torch.Tensor,
    query_labels: torch.Tensor,
    db_labels: torch.Tensor,
    topk: int | None = None,
    ties: str = "average",
    chunk: int | None = None,
) -> torch.Tensor:
    """AP of every query's Hamming ranking (float64, shape (n_query,)).

    An item is relevant when it shares at least one label with the query. With `topk` (stable ties
    only), AP is averaged over the relevant items among the first `topk` (the DCMH convention). A query
    with no relevant item has AP 0. `chunk` queries are ranked at a time (default: as many as fit in
    BLOCK_ENTRIES query-item pairs), so memory is bounded whatever the database size.
    """
    check_map_settings(ties, topk)
    q, d = binarise(query_codes), binarise(db_codes)
    query_labels, db_labels = query_labels.float(), db_labels.float()
    rows = chunk or max(1, BLOCK_ENTRIES // max(d.shape[0], 1))
    if ties == "average":
        return tie_averaged_aps(q, d, query_labels, db_labels, rows)
    return stable_aps(q, d, query_labels, db_labels, d.shape[0] if topk is None else min(topk, d.shape[0]), rows)


def mean_average_precision(
    query_codes: torch.Tensor,
    db_codes: torch.Tensor,
    query_labels: torch.Tensor,
    db_labels: torch.Tensor,
    topk: int | None = None,
    ties: str = "average",
    chunk: int | None = None,
) -> float:
    """The mean of `average_precisions` (queries without a relevant item count as 0; NaN for no query)."""
    return float(average_precisions(query_codes, db_codes, query_labels, db_labels, topk, ties, chunk).mean())


def chance_aps(query_labels: torch.Tensor, db_labels: torch.Tensor) -> torch.Tensor:
    """Each query's expected AP under a uniformly random ranking of the database (every item tied at one
    distance), from the labels alone: what ranking at random scores, the chance level of mAP. With R of N
    items relevant it is (R - 1)/(N - 1) + H(N)/N * (N - R)/(N - 1), close to the share R/N (0 when R = 0)."""
    rows = max(1, BLOCK_ENTRIES // max(db_labels.shape[0], 1))
    db = (db_labels > 0).float()
    relevant = torch.cat(
        [((query_labels[s : s + rows] > 0).float() @ db.T > 0).sum(1) for s in range(0, query_labels.shape[0], rows)]
        or [torch.zeros(0, dtype=torch.int64)]
    )
    items = torch.full_like(relevant, db_labels.shape[0])
    return tie_averaged_ap(items[:, None], relevant[:, None])


def stable_aps(
    q: torch.Tensor, d: torch.Tensor, query_labels: torch.Tensor, db_labels: torch.Tensor, k: int, rows: int
) -> torch.Tensor:
    """AP over the first k of each ranking, ties broken by database index; `rows` queries at a time."""
    aps = []
    for s in range(0, q.shape[0], rows):
        order = stable_order(sign_distance(q[s : s + rows], d), bits=q.shape[1])[:, :k]
        aps.append(precision_at_hits(torch.gather(query_labels[s : s + rows] @ db_labels.T > 0, 1, order)))
    return torch.cat(aps) if aps else torch.zeros(0, dtype=torch.float64, device=q.device)


def stable_order(dist: torch.Tensor, bits: int) -> torch.Tensor:
    """Row-wise stable argsort of integer-valued distances in [0, bits].

    NumPy sorts integers of 16 bits or less with a radix (counting) sort; torch's CPU sort is a
    comparison sort of (value, index) pairs. On other devices torch's own stable sort is used.
    """
    if dist.device.type != "cpu" or bits >= 2**16:
        return torch.sort(dist, dim=1, stable=True).indices
    small = dist.to(torch.uint8 if bits < 2**8 else torch.int16).numpy()
    return torch.from_numpy(np.argsort(small, axis=1, kind="stable"))


def precision_at_hits(ranked: torch.Tensor) -> torch.Tensor:
    """AP of each row of a ranked relevance matrix: the mean, over its relevant positions p_1 < p_2 < ...,
    of the precision m / p_m (0 for a row without any)."""
    rows, pos = ranked.nonzero(as_tuple=True)
    hits = torch.bincount(rows, minlength=ranked.shape[0])
    first = hits.cumsum(0) - hits
    m = torch.arange(1, rows.numel() + 1, device=rows.device) - first[rows]
    total = torch.zeros(ranked.shape[0], dtype=torch.float64, device=ranked.device)
    return total.index_add_(0, rows, m.double() / (pos + 1).double()) / hits.clamp_min(1)


def tie_averaged_aps(
    q: torch.Tensor, d: torch.Tensor, query_labels: torch.Tensor, db_labels: torch.Tensor, rows: int
) -> torch.Tensor:
    """Tie-averaged AP from a histogram of (query, shared labels, distance); `rows` queries at a time.

    One matrix product gives, for every query-item pair, the integer key
    distance + (bits + 1) * shared_labels + (bits + 1) * (S + 1) * (query's row in its block), S the most
    labels a query carries: the query side is [-q / 2, (bits + 1) * labels, bits / 2 + row offset], the
    item side [codes, labels, 1]. One bincount then counts, per query, the items and the relevant items
    (shared_labels > 0) at each distance; no sort at all. Every partial sum is a multiple of 1/2 below
    2^23, so float32 gets each key exactly whatever order the product sums in. Reduced-precision float32
    matmuls (TF32, bf16) would round the large offsets, so there they are added after the product.
    """
    bits, n_query, query_labels = q.shape[1], q.shape[0], query_labels > 0
    shared = int(query_labels.sum(1).max()) + 1 if n_query else 1  # 0 ... S labels in common
    bins = (bits + 1) * shared
    rows = min(rows, max(1, EXACT_KEYS // bins))
    offsets = bits / 2 + bins * (torch.arange(n_query, dtype=q.dtype, device=q.device) % rows)[:, None]
    folded = torch.get_float32_matmul_precision() == "highest"
    queries = torch.cat([-0.5 * q, (bits + 1) * query_labels, offsets if folded else offsets[:, :0]], 1)
    items = torch.cat([d, db_labels > 0, d.new_ones(d.shape[0], int(folded))], 1)  # codes ±1, labels 0/1, 1
    counts = torch.zeros(n_query * bins, dtype=torch.int64, device=q.device)
    for s in range(0, n_query, rows):
        n = min(rows, n_query - s)
        key = queries[s : s + n] @ items.T
        if not folded:
            key += offsets[s : s + n]
        counts[s * bins : (s + n) * bins] = torch.bincount(key.int().view(-1), minlength=n * bins)
    counts = counts.view(n_query, shared, bits + 1)
    per_distance = counts.sum(1)
    return tie_averaged_ap(per_distance, per_distance - counts[:, 0])


def tie_averaged_ap(items: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """McSherry & Najork's tie-aware AP from the counts per distance, (n_query, bits + 1) each.

    Within a group of n tied items, r of them relevant, after N items and R relevant ones, the item at
    position j is relevant with probability r/n, and then the j - 1 before it hold (j - 1)(r - 1)/(n - 1)
    relevant items on average. Summing precision over j gives
        r/n * [(R + 1 - (N + 1) s) (H(N + n) - H(N)) + n s],   s = (r - 1)/(n - 1) (0 when n = 1),
    with H the harmonic numbers (H(a) - H(b) = digamma(a + 1) - digamma(b + 1)). AP is the sum over
    groups divided by the number of relevant items (0 when there is none).
    """
    n, r = items.double(), relevant.double()
    before_n, before_r = n.cumsum(1) - n, r.cumsum(1) - r
    slope = torch.where(n > 1, (r - 1) / (n - 1).clamp_min(1), torch.zeros_like(n))
    harmonic = torch.special.digamma(before_n + n + 1) - torch.special.digamma(before_n + 1)
    per_group = r / n.clamp_min(1) * ((before_r + 1 - (before_n + 1) * slope) * harmonic + n * slope)
    return per_group.sum(1) / r.sum(1).clamp_min(1)
