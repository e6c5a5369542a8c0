"""An item forget set's own measures (issue 22): does a forgotten item still do what a training item does?

Retrieval: each forgotten pair queries a gallery that holds its partner (image -> its caption, caption -> its
image), and the partner's rank is read as R@1, R@10 and the expected rank; the same for as many held-out pairs
of the evaluated split (`heldout/...`), the level a model that never saw them reaches. Retrain is the level to
reach for the forgotten pairs. The gallery is the database without the set's own items, then the set's items, so
both sets are ranked against the same others. Hamming distances tie often: a tie is broken at random, and the
rank and the recall are their expectations over that draw (docs/decisions.md, "Issue 22").

Classification: accuracy on the forgotten items (training images) and on as many held-out test images.
"""

from __future__ import annotations

import torch

from ppp.data.base import LabelledDataset, root_indices
from ppp.evaluation.classification import predict_proba
from ppp.evaluation.retrieval import CROSS, Encoder

RECALL_AT = (1, 10)


def partner_ranks(queries: torch.Tensor, gallery: torch.Tensor, partner: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For binary (+-1) codes: per query, how many gallery items lie strictly closer than its partner (gallery row
    `partner[i]`) and how many others tie with it, by Hamming distance."""
    distance = -(queries.float() @ gallery.float().T)  # Hamming distance up to a constant, per query
    own = distance.gather(1, partner[:, None])
    closer = (distance < own).sum(1)
    tied = (distance == own).sum(1) - 1
    return closer, tied


def expected_rank(closer: torch.Tensor, tied: torch.Tensor) -> torch.Tensor:
    """The partner's rank (1 = first) expected when ties are broken at random."""
    return 1 + closer.float() + tied.float() / 2


def recall_at(closer: torch.Tensor, tied: torch.Tensor, k: int) -> torch.Tensor:
    """The probability that the partner is among the first `k`, ties broken at random."""
    return ((k - closer.float()) / (tied.float() + 1)).clamp(0, 1)


def item_sets(ctx, split: str) -> list[tuple[str, LabelledDataset]]:
    """The sets measured: the request's forgotten items (`forget`), in a stream's later request everything deleted
    so far (`deleted`: do earlier requests come back?), and as many held-out items of the evaluated split as the
    request forgets (`heldout`), drawn with the sample seed."""
    forget, train = ctx.forget_train, ctx.bench.train
    sets = [("forget", forget)]
    if ctx.forget_set.earlier is not None:
        sets.append(("deleted", train.subset(torch.nonzero(ctx.forget_set.deleted.of(train)).flatten())))
    return [*sets, ("heldout", ctx.bench.evaluation_split(split).sample(len(forget), ctx.sample_seed))]


def retrieval_items(encoder: Encoder, ctx, split: str) -> dict:
    """R@1, R@10 and the expected partner rank, per direction, of each of `item_sets` (`forget/`, `deleted/`,
    `heldout/`), encoded by `encoder` (the evaluated model's); per-item ranks under `per_item/`;
    `forget/chance_r10`, R@10 of a random ranking."""
    database = ctx.bench.database
    db_codes = encoder(database)
    db_roots = root_indices(database)
    out = {}
    for name, items in item_sets(ctx, split):
        keep = ~torch.isin(db_roots, root_indices(items))
        own = encoder(items)
        gallery = [torch.cat([codes[keep], mine]) for codes, mine in zip(db_codes, own)]
        partner = int(keep.sum()) + torch.arange(len(items))
        for direction, q, g in CROSS:
            closer, tied = partner_ranks(own[q], gallery[g], partner)
            rank = expected_rank(closer, tied)
            for k in RECALL_AT:
                out[f"{name}/{direction}_r{k}"] = float(recall_at(closer, tied, k).mean())
            out[f"{name}/{direction}_rank"] = float(rank.mean())
            out[f"per_item/{name}/{direction}_rank"] = rank
        out[f"count/{name}_items"] = len(items)
        if name == "forget":
            out["forget/chance_r10"] = min(1.0, 10 / len(gallery[0]))
    return out


def classification_items(system, ctx, split: str, batch_size: int, num_workers: int = 0) -> dict:
    """Accuracy on each of `item_sets`: the forgotten training images (`forget/acc`), in a stream everything deleted
    so far (`deleted/acc`), and as many held-out images (`heldout/acc`)."""
    out = {}
    for name, items in item_sets(ctx, split):
        predicted = predict_proba(system, items, ctx.device, batch_size, num_workers).argmax(dim=1)
        out[f"{name}/acc"] = float((predicted == items.labels).float().mean())
        out[f"count/{name}_items"] = len(items)
    return out
