"""How tightly the Original fits each class: the per-class Fisher mass (issue 21).

For every class c, D_f = the training samples that carry c; the mass per sample is the per-sample empirical
Fisher over D_f (`ctx.fisher` with PPP's Fisher settings, per_sample mode: the mean over D_f of squared
per-sample gradients) summed over every parameter, i.e. the total squared gradient norm divided by |D_f|.
A class the model fits far more tightly than the others has a far smaller mass, and a dampening method then
finds little to dampen for it; the issue asks that the largest and smallest mass lie within 10x.

python scripts/class_fisher_mass.py [dataset=digits | dataset=digit_scenes] [hydra overrides...]
(default backbones: ResNet-18 on digits, clip_tiny on digit_scenes; the Original and the diagonals are cached)
"""

import sys
import time

from omegaconf import OmegaConf

from ppp.config import compose_config
from ppp.data import carries_any
from ppp.experiment import build_context

MAX_RATIO = 10.0  # the bound on max / min mass


def class_masses(ctx, settings) -> list[tuple[str, int, float]]:
    """(class name, |D_f|, Fisher mass per sample) for every class, D_f = the training samples carrying it."""
    original, _ = ctx.trained()
    train, rows = ctx.bench.train, []
    for c, name in enumerate(ctx.bench.class_names):
        forget = train.subset(carries_any(train.labels, [c]).nonzero().flatten())
        diag, _ = ctx.fisher(original, forget, settings, label=f"fisher of class {name}")
        rows.append((name, len(forget), sum(float(v.sum()) for v in diag.values())))
    return rows


def main(argv: list[str]) -> None:
    cfg = compose_config(["method=ppp", "method.fisher_mode=per_sample", *argv])
    OmegaConf.resolve(cfg)
    start = time.perf_counter()
    ctx = build_context(cfg)
    rows = class_masses(ctx, cfg.method)
    smallest = min(mass for _, _, mass in rows)
    bits = f", {cfg.bits} bits" if ctx.bench.task == "retrieval" else ""
    print(f"{cfg.dataset.name}, backbone {cfg.backbone.name}{bits}, seed {cfg.seed}")
    print(f"{'class':<8}{'n':>6}{'mass/sample':>14}{'ratio':>12}")
    for name, n, mass in rows:
        print(f"{name:<8}{n:>6}{mass:>14.4e}{mass / smallest:>12.1f}")
    ratio = max(mass for _, _, mass in rows) / smallest
    verdict = "within" if ratio <= MAX_RATIO else "OUTSIDE"
    print(f"max/min = {ratio:.2f} ({verdict} the issue's {MAX_RATIO:g}x); {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
