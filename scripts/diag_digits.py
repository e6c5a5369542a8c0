"""Why the dampening methods do not forget `six` on `digits` (docs/results.md, Table 1):
1. how tightly the original model fits each class (a CE gradient scales with 1 - p(true class));
2. SSD's I_f / I_D per block, where the selected entries sit, and that the dampened model (parameters
   only, BN buffers untouched) is the one scored;
3. the same ratio for PPP's per-sample Fisher.

python scripts/diag_digits.py [forget=[eight]] [cache_dir=...]   (seconds once the Fisher diagonals are cached)
"""

import sys

import torch
from omegaconf import OmegaConf

from ppp.cache import Cache
from ppp.config import compose_config
from ppp.evaluation.classification import predict_proba
from ppp.experiment import build_context
from ppp.methods import UnlearnContext
from ppp.methods.dampening import DampeningRule, apply_dampening, forget_and_reference_fisher

ALPHAS = (1.0, 3.0, 10.0)


def context(method: str) -> UnlearnContext:
    cfg = compose_config(["dataset=digits", f"method={method}", *sys.argv[1:]])
    OmegaConf.resolve(cfg)
    return build_context(cfg, cache=Cache(cfg.cache_dir, made_by={"diag": True}))


def block(name):
    return name.split(".")[0] if name.startswith(("layer", "fc")) else "stem"


def block_sums(i_f, i_r) -> dict[str, list]:
    """Per block: its entries, the sum of I_f and the sum of I_r."""
    sums = {}
    for n in i_f:
        s = sums.setdefault(block(n), [0, 0.0, 0.0])
        s[0] += i_f[n].numel()
        s[1] += float(i_f[n].sum())
        s[2] += float(i_r[n].sum())
    return sums


ctx = context("ssd")
cfg, bench = ctx.cfg, ctx.bench
original, _ = ctx.trained()
val, cls = bench.val, ctx.forget_idx[0]
is_f = val.labels == cls

print("1. original model, training images per class: acc / mean (1 - p_true)")
train_probs = predict_proba(original, bench.train, ctx.device)
for c in range(bench.num_classes):
    m = bench.train.labels == c
    print(
        f"  {bench.class_names[c]:>6}: {(train_probs[m].argmax(1) == c).float().mean():.3f} "
        f"{(1 - train_probs[m, c]).mean():.2e}"
    )


def scored(system):
    probs = predict_proba(system, val, ctx.device)
    pred = probs.argmax(1)
    return (pred[is_f] == cls).float().mean().item(), (pred[~is_f] == val.labels[~is_f]).float().mean().item(), probs


print("2. SSD (batch Fisher, reference D)")
i_f, i_r, _ = forget_and_reference_fisher(original, ctx, cfg.method)
acc_f, acc_r, probs0 = scored(original)
print(f"  forget {cfg.forget}: original val forget acc {acc_f:.4f}, retain acc {acc_r:.4f}")
print(
    f"  {'block':<8}{'numel':>10}{'sum I_f':>11}{'sum I_r':>11}{'I_f/I_r':>9}"
    + "".join(f"{'sel a=' + str(a):>12}" for a in ALPHAS)
)
rules = {a: DampeningRule(alpha=a, lam=1.0) for a in ALPHAS}
selected = {}
for n in i_f:
    counts = selected.setdefault(block(n), [0] * len(ALPHAS))
    for k, a in enumerate(ALPHAS):
        counts[k] += int(rules[a].factors(i_f[n], i_r[n])[1].sum())
for b, (numel, f, r) in block_sums(i_f, i_r).items():
    print(f"{b:<8}{numel:>10}{f:>11.2e}{r:>11.2e}{f / r:>9.1e}" + "".join(f"{c:>12}" for c in selected[b]))
row_f, row_r = i_f["fc.weight"][cls], i_r["fc.weight"][cls]
print(
    f"fc row {cls}: sum I_f {row_f.sum():.2e}, sum I_r {row_r.sum():.2e}; fc.bias[{cls}] I_f {i_f['fc.bias'][cls]:.2e} "
    f"I_r {i_r['fc.bias'][cls]:.2e}"
)
for a in ALPHAS:
    system, _ = ctx.trained()
    buffers = {k: v.clone() for k, v in system.net.named_buffers()}
    params = {k: v.clone() for k, v in system.net.named_parameters()}
    counts = apply_dampening(system.net, rules[a], i_f, i_r)
    moved = sum(not torch.equal(v, params[k]) for k, v in system.net.named_parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in system.net.named_buffers()), "BN buffers changed"
    acc_f, acc_r, probs = scored(system)
    print(
        f"alpha={a}: selected {counts['n_buffer']} in {moved} tensors (buffers unchanged); val forget acc {acc_f:.4f}, "
        f"retain acc {acc_r:.4f}, mean p(forget class) on forget val {probs[is_f, cls].mean():.4f} "
        f"(original {probs0[is_f, cls].mean():.4f}); predictions changed {(probs.argmax(1) != probs0.argmax(1)).sum()}"
    )


print("3. PPP (per-sample Fisher): sum I_f / sum I_r per block")
ppp_ctx = context("ppp")
forget = ppp_ctx.forget_train.sample(ppp_ctx.cfg.method.forget_samples, ppp_ctx.sample_seed)
pf, _ = ppp_ctx.fisher(original, forget, ppp_ctx.cfg.method, "fisher_forget")
pr, _ = ppp_ctx.fisher(original, ppp_ctx.retain_train, ppp_ctx.cfg.method, "fisher_retain")
print("  " + " ".join(f"{b}: {f / r:.1e}" for b, (_, f, r) in block_sums(pf, pr).items()))
