"""Per-class training loss / confidence of the original model, and which retained val samples Original and Retrain miss."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppp.cache import Cache
from ppp.data import build_benchmark
from ppp.evaluation.classification import predict_proba
from ppp.unlearn import UnlearnContext
from ppp.utils import resolve_device

CONF = Path(__file__).resolve().parents[1] / "conf"
with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config", overrides=["dataset=digits", "method=ssd", "cache_dir=/work/main/outputs/cache", *sys.argv[1:]])
OmegaConf.resolve(cfg)
bench = build_benchmark(cfg.dataset)
ctx = UnlearnContext(cfg=cfg, bench=bench, forget_idx=bench.class_indices(["six"]), device=resolve_device(cfg.device),
                     cache=Cache(cfg.cache_dir, made_by={"diag": True}))
original, _ = ctx.trained()
retrain, _ = ctx.trained(exclude_forget=True)
for name, data in (("train", bench.train), ("val", bench.val)):
    probs = predict_proba(original, data, ctx.device)
    labels = data.labels
    nll = -torch.log(probs[torch.arange(len(labels)), labels].clamp_min(1e-30))
    print(f"{name}: per class  acc / mean CE / mean (1 - p_true)")
    for c in range(10):
        m = labels == c
        print(f"  {bench.class_names[c]:>6}: {(probs[m].argmax(1) == c).float().mean():.3f} {nll[m].mean():.2e} "
              f"{(1 - probs[m, c]).mean():.2e}")
val = bench.val
p_o = predict_proba(original, val, ctx.device).argmax(1)
p_r = predict_proba(retrain, val, ctx.device).argmax(1)
keep = val.labels != 6
wrong_o = set(torch.nonzero(keep & (p_o != val.labels)).flatten().tolist())
wrong_r = set(torch.nonzero(keep & (p_r != val.labels)).flatten().tolist())
print(f"retained val errors: original {len(wrong_o)}, retrain {len(wrong_r)}, shared {len(wrong_o & wrong_r)}, "
      f"of {int(keep.sum())}; retrain predicts six for {int((p_r[~keep] == 6).sum())} forget val images")
