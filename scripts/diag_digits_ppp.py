"""PPP's per-sample Fisher on `digits`: I_f / I_r per block for the forget class (default six)."""
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppp.cache import Cache
from ppp.data import build_benchmark
from ppp.evaluation import EVALUATORS  # noqa: F401  (ppp.unlearn imported first is a circular import)
from ppp.unlearn import UnlearnContext
from ppp.utils import resolve_device

CONF = Path(__file__).resolve().parents[1] / "conf"
with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config", overrides=["dataset=digits", "method=ppp", "cache_dir=/work/main/outputs/cache", *sys.argv[1:]])
OmegaConf.resolve(cfg)
bench = build_benchmark(cfg.dataset)
ctx = UnlearnContext(cfg=cfg, bench=bench, forget_idx=bench.class_indices(list(cfg.forget)),
                     device=resolve_device(cfg.device), cache=Cache(cfg.cache_dir, made_by={"diag": True}))
original, _ = ctx.trained()
forget = ctx.forget_train.sample(cfg.method.forget_samples, ctx.sample_seed)
i_f, _ = ctx.fisher(original, forget, cfg.method, "fisher_forget")
i_r, _ = ctx.fisher(original, ctx.retain_train, cfg.method, "fisher_retain")
blocks = {}
for n in i_f:
    b = n.split(".")[0] if n.startswith(("layer", "fc")) else "stem"
    s = blocks.setdefault(b, [0.0, 0.0])
    s[0] += float(i_f[n].sum()); s[1] += float(i_r[n].sum())
print(" ".join(f"{b}: {f / r:.1e}" for b, (f, r) in blocks.items()), "(sum I_f / sum I_r, per-sample Fisher)")
