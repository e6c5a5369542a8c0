"""Fisher forgetting (Golatkar et al., CVPR 2020), as SSD's official repository carries it.

SSD's `FisherForgetting` (src/forget_*_strategies.py: `hessian`, `get_mean_var`, `fisher`) is Golatkar's
notebook (AdityaGolatkar/SelectiveForgetting:Forgetting.ipynb). For every parameter tensor p with Fisher
diagonal F (the true Fisher on the retain set, `ppp.fisher.predictive_fisher`), in the reference's order:

    inv = min(1 / (F + eps), max_inverse)
    inv = min(inv, max_inverse_head)                  if p is a head tensor
    var = alpha * inv
    var = mean of var over dim 1, broadcast back      if p.ndim > 1
    mu  = theta0;  mu[c] = 0, var[c] = forget_row_variance   for each forget class c, if p is a head tensor
    var = noise_scale_head_1d * var                   if p is a head tensor or p.ndim == 1
    theta = mu + sqrt(var) * N(0, 1)

A head tensor is one whose first dimension is the number of classes (the reference's `p.size(0) ==
num_classes`: the class head's weight and bias on every shipped classifier). The forget rows' variance is
set before the x10, as in the reference (so their noise variance is 10 x forget_row_variance). The
reference's condition `num_to_forget is None` (full-class forgetting) always holds here: methods forget
classes. Parameters the Fisher does not cover (requires_grad False) stay as they are (the reference would
noise them at the clamp). The noise is drawn on the CPU from a generator seeded with `sample_seed`, tensor
by tensor in `named_parameters` order, so it is the same on every device.
"""

from __future__ import annotations

import torch

from ppp.errors import ConfigError
from ppp.fisher import trainable_parameters
from ppp.methods.registry import CLASS_HEAD, FORGET_CLASSES, METHODS, MethodSettings
from ppp.schema import integer, number, read, schema, setting

NEEDS_CLASS_HEAD = (
    "method=fisher (Golatkar's Fisher forgetting) needs a classifier's class head; "
    "on retrieval use fisher_zero, ssd or ppp"
)


@schema
class FisherForgettingSettings(MethodSettings):
    """Golatkar et al.'s Fisher forgetting (`method=fisher`); the constants are the reference's."""

    needs = frozenset({CLASS_HEAD, FORGET_CLASSES})  # it re-draws the forget classes' head rows

    alpha: float = setting(number(0, low_open=True))
    eps: float = setting(number(0, low_open=True))
    max_inverse: float = setting(number(0, low_open=True))
    max_inverse_head: float = setting(number(0, low_open=True))
    forget_row_variance: float = setting(number(0))
    noise_scale_head_1d: float = setting(number(0))
    retain_samples: int | None = setting(integer(1, optional=True), default=None)
    fisher_chunk: int = setting(integer(1))
    fisher_memory_mb: float | None = setting(number(0, low_open=True, optional=True), default=None)


def is_head(p: torch.Tensor, num_classes: int) -> bool:
    """The reference's test for the class head: the first dimension is the number of classes."""
    return p.dim() > 0 and p.shape[0] == num_classes


def noise_variance(
    fisher: torch.Tensor, p: torch.Tensor, num_classes: int, forget_idx, settings: FisherForgettingSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance) of one parameter tensor's posterior draw, exactly the reference's `get_mean_var`."""
    head = is_head(p, num_classes)
    inverse = (1.0 / (fisher + settings.eps)).clamp(max=settings.max_inverse)
    if head:
        inverse = inverse.clamp(max=settings.max_inverse_head)
    var = settings.alpha * inverse
    if p.dim() > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
    mu = p.detach().clone()
    if head:
        rows = torch.as_tensor(list(forget_idx), dtype=torch.long)
        mu[rows] = 0.0
        var[rows] = settings.forget_row_variance
    if head or p.dim() == 1:
        var = var * settings.noise_scale_head_1d
    return mu, var


def check_classifier(system) -> None:
    if system.task != "classification":
        raise ConfigError(NEEDS_CLASS_HEAD)


@METHODS.register("fisher", schema=FisherForgettingSettings)
def fisher_forgetting(system, ctx, cfg):
    """theta = mu + sqrt(var) * N(0, 1) with (mu, var) from the retain set's true Fisher (module docstring)."""
    check_classifier(system)
    settings = read(FisherForgettingSettings, cfg)
    retain = ctx.retain_train.sample(settings.retain_samples, ctx.sample_seed)
    fisher, fisher_s = ctx.predictive_fisher(system, retain, cfg, "fisher_retain")
    num_classes = ctx.bench.num_classes
    generator = torch.Generator().manual_seed(ctx.sample_seed)
    stds = []
    with torch.no_grad():
        for name, p in trainable_parameters(system.net).items():
            mu, var = noise_variance(fisher[name].to(p.device), p, num_classes, ctx.forget_idx, settings)
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
            p.copy_(mu + var.sqrt() * noise)
            stds.append(var.sqrt().flatten().double().cpu())
    std = torch.cat(stds)
    return system, {
        "time/fisher_retain_s": fisher_s,
        "fisher/n_retain_samples": len(retain),
        "fisher/noise_std_q50": float(std.median()),
        "fisher/noise_std_max": float(std.max()),
    }
