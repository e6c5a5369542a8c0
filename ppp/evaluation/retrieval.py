"""Forget / retain retrieval mAP in both directions (image -> text, text -> image), and on request the
residual-knowledge metrics of `ppp/evaluation/residual.py` on the same codes."""

from __future__ import annotations

import torch

from ppp.data.base import Benchmark, LabelledDataset, carries_any
from ppp.evaluation.map import average_precisions, chance_aps
from ppp.evaluation.residual import UNIMODAL, probe_aucs
from ppp.train import collect

CROSS = (("i2t", 0, 1), ("t2i", 1, 0))  # (direction, query modality, database modality); 0 image, 1 text


class Encoder:
    """`encode` under one model within one evaluation, each dataset encoded once: the mAP, the item ranks, the
    served index and the example statistics of one evaluator call all ask for the database. Keyed by the
    dataset object, which the encoder holds, so a key is never reused by another dataset while it lives; the
    model must not change while the encoder is in use."""

    def __init__(self, system, device, batch_size: int = 256, num_workers: int = 0):
        self.system, self.device, self.batch_size, self.num_workers = system, device, batch_size, num_workers
        self._outputs: dict[int, tuple[object, tuple[torch.Tensor, torch.Tensor]]] = {}

    def __call__(self, data, binary: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of every image and text in `data`, in order: sign() of the tanh outputs, or the outputs."""
        if id(data) not in self._outputs:
            outputs = collect(self.system, data, self.device, self.system.codes, self.batch_size, self.num_workers)
            self._outputs[id(data)] = (data, outputs)
        image, text = self._outputs[id(data)][1]
        return (torch.sign(image), torch.sign(text)) if binary else (image, text)


def encode(
    system, data, device, batch_size: int = 256, num_workers: int = 0, binary: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes of every image and text in `data`, in order: sign() of the tanh outputs, or the outputs."""
    return Encoder(system, device, batch_size, num_workers)(data, binary)


def forget_split_labels(
    query_labels: torch.Tensor, db_labels: torch.Tensor, forget_idx: list[int], relevance: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels that define relevance for forget queries.

    'forget_classes': an item is relevant when it carries a forget class the query carries;
    'any_label': any shared label counts (as for retain queries).
    """
    if relevance == "forget_classes":
        return query_labels[:, forget_idx], db_labels[:, forget_idx]
    if relevance == "any_label":
        return query_labels, db_labels
    raise ValueError(f"unknown forget relevance '{relevance}'")


def evaluate_retrieval(
    system,
    bench: Benchmark,
    forget_idx: list[int],
    device,
    forget_relevance: str = "forget_classes",
    topk: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    queries: LabelledDataset | None = None,
    ties: str = "average",
    residual: bool = False,
    encoder: Encoder | None = None,
) -> dict:
    """Mean AP of `queries` (default: the test queries) against the database per split and direction
    (floats), and each query's AP under `per_query/...` (tensors); `forget/chance_map`, the forget queries'
    mAP under a random ranking (from the labels: the chance level `objective/oracle_free` aims at). `residual` adds the unimodal
    directions (i2i, t2t) and the linear probes of `ppp/evaluation/residual.py`. `encoder`: one shared with the
    evaluator call's other measures (default: a fresh one)."""
    queries = bench.query if queries is None else queries
    encoder = encoder or Encoder(system, device, batch_size, num_workers)
    q_codes, d_codes = encoder(queries), encoder(bench.database)
    q_lab, d_lab = queries.labels, bench.database.labels
    is_forget = carries_any(q_lab, forget_idx)
    out = {}
    splits = (("forget", is_forget), ("retain", ~is_forget)) if forget_idx else (("retain", ~is_forget),)
    for split, mask in splits:  # no forget classes (an item forget set): every query is a retain query
        if split == "forget":
            ql, dl = forget_split_labels(q_lab[mask], d_lab, forget_idx, forget_relevance)
            out["forget/chance_map"] = float(chance_aps(ql, dl).mean())
        else:
            ql, dl = q_lab[mask], d_lab
        for direction, q, d in CROSS + (UNIMODAL if residual else ()):
            ap = average_precisions(q_codes[q][mask], d_codes[d], ql, dl, topk, ties)
            out[f"{split}/{direction}_map"] = float(ap.mean())
            out[f"per_query/{split}/{direction}_map"] = ap
    if residual:
        out.update(probe_aucs(q_codes, d_codes, is_forget, carries_any(d_lab, forget_idx)))
    if forget_idx:
        out["count/forget_queries"] = int(is_forget.sum())
    out["count/retain_queries"] = int((~is_forget).sum())
    return out
