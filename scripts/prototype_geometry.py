"""Measure the class geometry of a trained model: prototype distance ratios and gamma (Eq. 3).

python scripts/prototype_geometry.py [hydra overrides...]   e.g. dataset.topic_prob=0.5 bits=32
Prints, for every class taken as the forget class, its k nearest neighbours, the ratio
mu_rest / mu_n of mean prototype distances and gamma = ratio**2.

python scripts/prototype_geometry.py --farthest K [--start six] [hydra overrides...]
also prints the K classes chosen by greedy farthest-point selection from the start class (default: the
config's first forget class): each next class is the one whose minimum Euclidean prototype distance to
the classes already chosen is largest, ties by lower class index (Figure 3's rule, docs/decisions.md).
"""

import sys

import torch

from ppp.config import compose_config
from ppp.experiment import build_context
from ppp.methods.prototypes import prototype_geometry, retrieval_prototypes


def farthest_point(dist: torch.Tensor, start: int, count: int) -> list[tuple[int, float]]:
    """Greedy farthest-point order from `start`: [(class, its min distance to the earlier ones)]."""
    chosen = [(start, 0.0)]
    while len(chosen) < min(count, dist.shape[0]):
        picked = [c for c, _ in chosen]
        best = max(
            (c for c in range(dist.shape[0]) if c not in picked),
            key=lambda c: (float(dist[c, picked].min()), -c),
        )
        chosen.append((best, float(dist[best, picked].min())))
    return chosen


def parse(argv: list[str]) -> tuple[int | None, str | None, list[str]]:
    farthest, start, rest = None, None, []
    it = iter(argv)
    for a in it:
        if a == "--farthest":
            farthest = int(next(it))
        elif a == "--start":
            start = next(it)
        else:
            rest.append(a)
    return farthest, start, rest


def main(argv: list[str]) -> None:
    farthest, start, overrides = parse(argv)
    cfg = compose_config(overrides)
    ctx = build_context(cfg)
    bench = ctx.bench
    system, _ = ctx.trained()
    k = int(cfg.method.get("k", 2))
    protos = retrieval_prototypes(system, bench.train, ctx.device, cfg.method.get("prototype_modality", "mean"))
    ratios = []
    print(f"{'class':<8}{'neighbours':<22}{'ratio':>8}{'gamma':>10}")
    for c, name in enumerate(bench.class_names):
        g = prototype_geometry(protos, [c], k)
        ratios.append(g.ratio)
        print(f"{name:<8}{','.join(bench.class_names[n] for n in g.neighbours):<22}{g.ratio:>8.2f}{g.gamma:>10.2f}")
    print(f"mean ratio {sum(ratios) / len(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}")
    if farthest is not None:
        names = list(bench.class_names)
        first = start if start is not None else str(list(cfg.forget)[0])
        dist = torch.cdist(protos.float(), protos.float())
        print("\nprototype distances (Euclidean)")
        print(" " * 8 + "".join(f"{n:>7}" for n in names))
        for i, n in enumerate(names):
            print(f"{n:<8}" + "".join(f"{float(dist[i, j]):>7.2f}" for j in range(len(names))))
        order = farthest_point(dist, names.index(first), farthest)
        print(f"\ngreedy farthest-point from {first}, {farthest} classes:")
        for c, d in order:
            print(f"  {names[c]:<8} min distance to the earlier ones {d:.3f}")
        print("forget=[" + ",".join(names[c] for c, _ in order) + "]")


if __name__ == "__main__":
    main(sys.argv[1:])
