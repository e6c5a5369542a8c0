"""Hamming-ranking mean average precision."""
from __future__ import annotations

import torch


def hamming_distance(query_codes: torch.Tensor, db_codes: torch.Tensor) -> torch.Tensor:
    """Hamming distances between {-1, +1} codes (real inputs are binarised by sign, 0 -> +1)."""
    q = torch.where(query_codes >= 0, 1.0, -1.0)
    d = torch.where(db_codes >= 0, 1.0, -1.0)
    return 0.5 * (q.shape[1] - q @ d.T)


def mean_average_precision(query_codes: torch.Tensor, db_codes: torch.Tensor, query_labels: torch.Tensor,
                           db_labels: torch.Tensor, topk: int | None = None, chunk: int = 256) -> float:
    """mAP of Hamming ranking; an item is relevant when it shares at least one label with the query.

    Ties are broken by database index (stable sort), so the value is deterministic. With `topk`, AP
    is averaged over the relevant items among the first `topk` (the DCMH convention). Queries with no
    relevant item contribute 0 and still count in the mean.
    """
    n_query = query_codes.shape[0]
    if n_query == 0:
        return float("nan")
    db_labels = db_labels.float()
    k = db_codes.shape[0] if topk is None else min(topk, db_codes.shape[0])
    total = 0.0
    for start in range(0, n_query, chunk):
        stop = min(start + chunk, n_query)
        dist = hamming_distance(query_codes[start:stop].float(), db_codes.float())
        order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
        relevant = (query_labels[start:stop].float() @ db_labels.T > 0).float()
        ranked = torch.gather(relevant, 1, order)
        hits = ranked.cumsum(dim=1)
        ranks = torch.arange(1, k + 1, dtype=torch.float32)
        n_rel = ranked.sum(dim=1)
        ap = (ranked * hits / ranks).sum(dim=1) / n_rel.clamp_min(1)
        total += float(ap.sum())
    return total / n_query
