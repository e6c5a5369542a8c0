"""The served retrieval index (issue 22): a deletion must leave the search results, not only the model.

An `Index` holds the database's binary codes per modality and their item ids (root indices). After unlearning,
the served index drops the forgotten ids and is re-encoded with the unlearned model: in full, or incrementally,
re-encoding only the modalities whose tower the method changed (`changed_towers`: any parameter or buffer of the
tower differs at all) and keeping the other codes as they were. Both give the same index: a tower that did not
change encodes every item as before. Searching is by Hamming distance, ties in database order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ppp import identity
from ppp.cache import content_key, index_digest
from ppp.data.base import LabelledDataset, root_indices

MODALITIES = ("image", "text")


@dataclass(frozen=True)
class Index:
    ids: torch.Tensor  # (N,) root indices of the indexed items, in index order
    codes: dict[str, torch.Tensor]  # modality -> (N, bits) codes in {-1, +1}

    @classmethod
    def encode(
        cls, system, items: LabelledDataset, device, batch_size: int = 256, modalities=MODALITIES, num_workers: int = 0
    ) -> Index:
        """The codes of `items` under `system`, for the given modalities (the others empty)."""
        from ppp.evaluation.retrieval import encode  # ppp.evaluation's evaluators import this module

        encoded = dict(zip(MODALITIES, encode(system, items, device, batch_size, num_workers)))
        return cls(root_indices(items), {m: encoded[m] for m in modalities})

    def without(self, forgotten: torch.Tensor) -> Index:
        """This index without the items whose ids are in `forgotten`."""
        keep = ~torch.isin(self.ids, forgotten)
        return Index(self.ids[keep], {m: c[keep] for m, c in self.codes.items()})

    def search(self, queries: torch.Tensor, modality: str, k: int) -> torch.Tensor:
        """The ids of the `k` items of `modality` nearest each query code (Hamming distance, stable ties)."""
        distance = -(queries.float() @ self.codes[modality].float().T)
        order = torch.sort(distance, dim=1, stable=True).indices[:, :k]
        return self.ids[order]


@torch.no_grad()
def changed_towers(system, original) -> set[str]:
    """The towers (`System.parameter_group`) in which any parameter or buffer of `system` differs from `original`'s."""
    before = original.net.state_dict()
    return {
        system.parameter_group(name)[0]
        for name, value in system.net.state_dict().items()
        if not torch.equal(value.cpu(), before[name].cpu())
    }


def served_index(
    system,
    original_index: Index,
    database: LabelledDataset,
    forgotten: torch.Tensor,
    towers: set[str],
    device,
    batch_size: int = 256,
) -> tuple[Index, float]:
    """The index a deletion serves, re-encoding only the modalities of changed `towers` (`MODALITIES` names them
    as `parameter_group` does): the unchanged modalities' codes are the original index's minus `forgotten`; and
    the seconds the re-encoding took."""
    kept = original_index.without(forgotten)
    items = database.subset(torch.nonzero(~torch.isin(root_indices(database), forgotten)).flatten())
    start = time.perf_counter()
    changed = [m for m in MODALITIES if m in towers]
    fresh = Index.encode(system, items, device, batch_size, changed) if changed else None
    seconds = time.perf_counter() - start
    codes = {m: fresh.codes[m] if m in changed else kept.codes[m] for m in MODALITIES}
    return Index(kept.ids, codes), seconds


def index_drift(
    before: Index, before_queries: dict[str, torch.Tensor], after: Index, after_queries: dict[str, torch.Tensor], k: int
) -> dict[str, float]:
    """How far the kept items' codes moved (the share of bits that flipped, per modality) and the share of each
    query's top-k ids that changed, each side searching with its own model's query codes (image queries search
    texts and the reverse); `before` may hold items `after` dropped."""
    same = before.without(before.ids[~torch.isin(before.ids, after.ids)])
    out = {f"index/code_drift_{m}": float((same.codes[m] != after.codes[m]).float().mean()) for m in MODALITIES}
    for direction, query, gallery in (("i2t", "image", "text"), ("t2i", "text", "image")):
        old = same.search(before_queries[query], gallery, k)
        new = after.search(after_queries[query], gallery, k)
        overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) for a, b in zip(old, new)], dtype=torch.float)
        out[f"index/{direction}_top{k}_changed"] = float(1 - (overlap / k).mean())
    return out


def original_index(ctx, original, items: LabelledDataset, device, batch_size: int = 256) -> Index:
    """The context's Original's codes of `items`, cached by the model's key and the items: every method's run
    over one Original (or one stream's earlier model) encodes the database and the queries once, not once a run."""
    key = content_key(
        {"version": identity.INDEX_VERSION, "model": ctx.original_key, "items": index_digest(root_indices(items))}
    )

    def build():
        index = Index.encode(original, items, device, batch_size)
        return {"ids": index.ids, **{f"codes_{m}": index.codes[m] for m in MODALITIES}}

    payload, _ = ctx.cache.get_or_build("indexes", key, build, f"original index ({len(items)} items)")
    return Index(payload["ids"], {m: payload[f"codes_{m}"] for m in MODALITIES})


def index_report(encoder, ctx, queries: LabelledDataset, k: int) -> dict[str, float]:
    """The served index after the deletion of the model `encoder` encodes with (D_f's items dropped, changed
    modalities re-encoded, timed apart from `encoder`'s memo) against the Original's: drift, changed top-k,
    re-encoding time in full and incrementally, how many modalities the incremental pass re-encoded, and how many
    forgotten items the served index still holds (0 by construction)."""
    system, device, batch_size = encoder.system, encoder.device, encoder.batch_size
    original = ctx.trained()[0]
    database, forgotten = ctx.bench.database, root_indices(ctx.forget_train)
    before = original_index(ctx, original, database, device, batch_size)
    towers = changed_towers(system, original)
    served, incremental_s = served_index(system, before, database, forgotten, towers, device, batch_size)
    _, full_s = served_index(system, before, database, forgotten, set(MODALITIES), device, batch_size)
    original_queries = original_index(ctx, original, queries, device, batch_size).codes
    return {
        **index_drift(before, original_queries, served, dict(zip(MODALITIES, encoder(queries))), k),
        "index/reencode_s": full_s,
        "index/incremental_s": incremental_s,
        "index/reencoded_modalities": sum(m in towers for m in MODALITIES),
        "index/forgotten_served": int(torch.isin(served.ids, forgotten).sum()),
        "index/items": len(served.ids),
    }
