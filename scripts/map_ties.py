"""How much the order of tied items moves mAP on a trained model (evaluator.ties, docs/decisions.md).

python scripts/map_ties.py [hydra overrides...]   e.g. bits=32
For the trained original model, prints mAP@all of each split and direction under: `stable` (ties by
database index), `average` (tie-aware), the unstable sorts of common hashing code (torch.argsort as in
DSPH, NumPy's default quicksort as in DCMH), and stable on randomly permuted databases (a random order
of the tied items: its mean, standard deviation and range); and how many ties there are.
"""

import sys

import numpy as np
import torch

from ppp.config import compose_config
from ppp.data.base import carries_any
from ppp.evaluation.map import average_precisions, hamming_distance, precision_at_hits
from ppp.evaluation.retrieval import encode, forget_split_labels
from ppp.experiment import build_context

PERMUTATIONS = 50


def unstable_map(q, d, ql, dl, sort) -> float:
    """mAP with the ranking of `sort`, an unstable argsort of each row of the distances."""
    order = sort(hamming_distance(q, d))
    return float(precision_at_hits(torch.gather(ql @ dl.T > 0, 1, order)).mean())


SORTS = {
    "torch.argsort": lambda dist: torch.argsort(dist, dim=1),
    "np.argsort": lambda dist: torch.from_numpy(np.argsort(dist.numpy(), axis=1)),
}


def main(overrides: list[str]) -> None:
    cfg = compose_config(overrides)
    ctx = build_context(cfg)
    bench, forget_idx = ctx.bench, ctx.forget_idx
    system, _ = ctx.trained()
    q_img, q_txt = encode(system, bench.query, ctx.device)
    d_img, d_txt = encode(system, bench.database, ctx.device)
    q_lab, d_lab = bench.query.labels, bench.database.labels
    is_forget = carries_any(q_lab, forget_idx)
    g = torch.Generator().manual_seed(0)
    print(f"bits {cfg.bits}; mAP@all x 100; random: stable on {PERMUTATIONS} random database orders")
    print(
        f"{'split':<18}{'stable':>8}{'average':>9}{'torch.argsort':>15}{'np.argsort':>12}"
        f"{'random mean':>13}{'sd':>7}{'min':>8}{'max':>8}{'items/dist':>12}"
    )
    for split, mask in (("forget", is_forget), ("retain", ~is_forget)):
        ql, dl = (
            forget_split_labels(q_lab[mask], d_lab, forget_idx, cfg.evaluator.forget_relevance)
            if split == "forget"
            else (q_lab[mask], d_lab)
        )
        ql, dl = ql.float(), dl.float()
        for direction, q, d in (("i2t", q_img[mask], d_txt), ("t2i", q_txt[mask], d_img)):
            stable = float(average_precisions(q, d, ql, dl, ties="stable").mean())
            average = float(average_precisions(q, d, ql, dl, ties="average").mean())
            unstable = [unstable_map(q, d, ql, dl, sort) for sort in SORTS.values()]
            perms = [torch.randperm(d.shape[0], generator=g) for _ in range(PERMUTATIONS)]
            rand = torch.tensor([float(average_precisions(q, d[p], ql, dl[p], ties="stable").mean()) for p in perms])
            dist = hamming_distance(q, d)
            per_value = d.shape[0] / torch.tensor([row.unique().numel() for row in dist]).float().mean()
            print(
                f"{split + '/' + direction:<18}{100 * stable:>8.2f}{100 * average:>9.2f}"
                f"{100 * unstable[0]:>15.2f}{100 * unstable[1]:>12.2f}{100 * rand.mean():>13.2f}"
                f"{100 * rand.std():>7.2f}{100 * rand.min():>8.2f}{100 * rand.max():>8.2f}{per_value:>12.0f}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
