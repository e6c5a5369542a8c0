"""Measure the class geometry of a trained model: prototype distance ratios and gamma (Eq. 3).

python scripts/prototype_geometry.py [hydra overrides...]   e.g. dataset.topic_prob=0.5 bits=32
Prints, for every class taken as the forget class, its k nearest neighbours, the ratio
mu_rest / mu_n of mean prototype distances and gamma = ratio**2.
"""

import sys

from ppp.config import compose_config
from ppp.experiment import build_context
from ppp.methods.prototypes import prototype_geometry, retrieval_prototypes


def main(overrides: list[str]) -> None:
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


if __name__ == "__main__":
    main(sys.argv[1:])
