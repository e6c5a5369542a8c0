"""Grid-sweep an unlearning method's hyperparameters in one process (Fisher and models cached).

python scripts/sweep_method.py method=ppp bits=16 --grid method.alpha=3,10,30 method.tau=0.5,1,2
Prints, per setting, mean forget / retain mAP over both directions beside Original and Retrain,
and whether the setting meets the targets: forget moves >= half-way from Original to Retrain and
retain stays within 3 points of Original in both directions.
"""
import argparse
import copy
import itertools
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppp.cache import Cache  # noqa: E402
from ppp.data import build_benchmark  # noqa: E402
from ppp.experiment import EVALUATORS  # noqa: E402
from ppp.unlearn import METHODS, UnlearnContext  # noqa: E402
from ppp.utils import resolve_device, seed_everything  # noqa: E402


def quality_keys(m, split):
    """The task's quality metrics on a split: mAP in both directions, or accuracy."""
    return [k for k in sorted(m) if k.startswith(f"{split}/") and (k.endswith("_map") or k.endswith("/acc"))]


def means(m):
    return tuple(sum(m[k] for k in quality_keys(m, s)) / len(quality_keys(m, s)) for s in ("forget", "retain"))


def meets_targets(m, orig, retr, retain_tol):
    f, _ = means(m)
    fo, _ = means(orig)
    fr, _ = means(retr)
    forgets = (fo - f) >= 0.5 * (fo - fr)
    keeps = all(orig[k] - m[k] <= retain_tol for k in quality_keys(m, "retain"))
    return forgets, keeps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--grid", nargs="*", default=[], help="key=v1,v2,... (Hydra override paths)")
    parser.add_argument("--retain-tol", type=float, default=0.03, help="allowed retain drop (fraction)")
    args = parser.parse_args()
    conf = Path(__file__).resolve().parents[1] / "conf"
    grid = [(kv.split("=", 1)[0], kv.split("=", 1)[1].split(",")) for kv in args.grid]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        base = compose("config", overrides=args.overrides)
        bench = build_benchmark(base.dataset)
        ctx = UnlearnContext(cfg=base, bench=bench, forget_idx=bench.class_indices(list(base.forget)),
                             device=resolve_device(base.device), cache=Cache(base.cache_dir))
        evaluate = EVALUATORS.get(base.evaluator.name)
        original, _ = ctx.trained()
        retrain, _ = ctx.trained(exclude_forget=True)
        orig_m, retr_m = evaluate(original, ctx, base.evaluator), evaluate(retrain, ctx, base.evaluator)
        print(f"original: forget {means(orig_m)[0]:.4f} retain {means(orig_m)[1]:.4f}  "
              f"retrain: forget {means(retr_m)[0]:.4f} retain {means(retr_m)[1]:.4f}")
        keys = [k for k, _ in grid]
        for values in itertools.product(*[v for _, v in grid]):
            cfg = compose("config", overrides=args.overrides + [f"{k}={v}" for k, v in zip(keys, values)])
            ctx.cfg, ctx.metrics = cfg, {}
            seed_everything(int(cfg.seed))
            model = METHODS.get(cfg.method.name)(copy.deepcopy(original), ctx, cfg.method)
            m = evaluate(model, ctx, cfg.evaluator)
            forgets, keeps = meets_targets(m, orig_m, retr_m, args.retain_tol)
            setting = " ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values))
            detail = lambda split: "/".join(f"{m[k]:.4f}" for k in quality_keys(m, split))  # noqa: E731
            print(f"{setting:<50} forget {means(m)[0]:.4f} ({detail('forget')}) retain {detail('retain')} "
                  f"{'FORGETS' if forgets else '-'} {'KEEPS' if keeps else '-'}", flush=True)


if __name__ == "__main__":
    main()
