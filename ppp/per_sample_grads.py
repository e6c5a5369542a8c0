"""Sums of squared per-sample gradients from one batched forward and backward pass, layer by layer.

`vmap` over a network (the torch.func path in `ppp/fisher.py`) runs convolutions as a slow loop; the
per-sample gradients of the common layers follow instead from what a batched pass already has: each
layer's input activations (forward hook) and the gradient at its output (a tensor hook, which also
sees the value before any in-place op such as ReLU(inplace=True)). As in Opacus's GradSampleModule and
BackPACK's SumGradSquared, with one rule per layer type:
- Linear: sum over positions of g ⊗ x; Conv2d: the same on the unfolded input patches (any stride,
  padding, dilation, groups);
- BatchNorm in eval mode (a per-channel affine map of the running statistics; Opacus rejects it) and
  LayerNorm: sum over positions of g · x̂, and of g for the bias;
- Embedding: each sample's row gradients summed per row and scattered squared (row-sparse, so the CLIP
  token table never gets a dense per-sample copy).
This holds only when samples do not interact inside the network (eval mode) and each layer runs once
per forward; `supports` and the hooks refuse anything else, and the caller falls back to torch.func.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge


class Unsupported(Exception):
    """The network holds something the hook rules cannot handle exactly."""


OUTER_TRICK_MAX_POSITIONS = 4  # measured: the L^2 product wins up to 4 positions, ties at 8 (docs/benchmarks.md)
BLOCK_ELEMENTS = 1 << 22  # per-sample weight gradients are formed this many numbers at a time


def outer_squares(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum over samples b of (sum over positions l of g[b, :, l] ⊗ x[b, :, l])^2, for g (B, O, L), x (B, I, L).

    Few positions: expand the square, sum_{l,l'} (g_l g_l') ⊗ (x_l x_l'), one matrix product without any
    per-sample gradient (BackPACK's trick; L = 1 is a linear layer's sum of g^2 ⊗ x^2). Otherwise form the
    per-sample gradients a block of samples at a time and square them in place (memory bounded)."""
    n, rows, positions = g.shape
    cols = x.shape[1]
    if positions <= OUTER_TRICK_MAX_POSITIONS:
        gg = (g[:, :, :, None] * g[:, :, None, :]).transpose(0, 1).reshape(rows, -1)
        xx = (x[:, :, :, None] * x[:, :, None, :]).transpose(0, 1).reshape(cols, -1)
        return gg @ xx.T
    total = g.new_zeros(rows, cols)
    step = max(1, BLOCK_ELEMENTS // (rows * cols))
    for start in range(0, n, step):
        total += torch.bmm(g[start : start + step], x[start : start + step].transpose(1, 2)).square_().sum(0)
    return total


def _squares(per_sample: torch.Tensor) -> torch.Tensor:
    return per_sample.square().sum(0)


def _linear(m: nn.Linear, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    n = len(x)
    x, g = x.reshape(n, -1, x.shape[-1]), g.reshape(n, -1, g.shape[-1])  # (B, positions, features)
    squares = {"weight": outer_squares(g.transpose(1, 2), x.transpose(1, 2))}
    if m.bias is not None:
        squares["bias"] = _squares(g.sum(1))
    return squares


def _conv2d(m: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    n, groups = len(x), m.groups
    cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    cols = cols.reshape(n, groups, -1, cols.shape[-1])  # unfold's rows: (channel, kh, kw), channel outermost
    g = g.reshape(n, groups, -1, cols.shape[-1])
    weight = torch.stack([outer_squares(g[:, k], cols[:, k]) for k in range(groups)])
    squares = {"weight": weight.reshape(m.weight.shape)}
    if m.bias is not None:
        squares["bias"] = _squares(g.sum(-1).reshape(n, -1))
    return squares


def _affine(
    normalised: torch.Tensor, g: torch.Tensor, m: nn.Module, shape: tuple[int, ...], positions_dim: int
) -> dict[str, torch.Tensor]:
    """Squared per-sample gradients of y = x̂ * weight + bias, each summed over the positions in `positions_dim`."""
    n = len(g)
    squares = {"weight": _squares((g * normalised).reshape(n, *shape).sum(positions_dim))}
    if m.bias is not None:
        squares["bias"] = _squares(g.reshape(n, *shape).sum(positions_dim))
    return squares


def _batch_norm(m: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    stats = (1, -1) + (1,) * (x.dim() - 2)
    normalised = (x - m.running_mean.view(stats)) * torch.rsqrt(m.running_var.view(stats) + m.eps)
    return _affine(normalised, g, m, (x.shape[1], -1), -1)


def _layer_norm(m: nn.LayerNorm, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    normalised = F.layer_norm(x.float(), m.normalized_shape, eps=m.eps).to(g.dtype)
    return _affine(normalised, g, m, (-1, *m.normalized_shape), 1)


def _conv_ok(m: nn.Conv2d) -> bool:
    return m.padding_mode == "zeros" and not isinstance(m.padding, str)


def _batch_norm_ok(m) -> bool:
    """Eval mode with running statistics: a per-channel affine map, so samples do not interact."""
    return not m.training and m.running_mean is not None and m.affine


def _embedding_ok(m: nn.Embedding) -> bool:
    return m.max_norm is None and not m.scale_grad_by_freq


# type -> (accepts this instance, squared per-sample gradients of its parameters summed over samples);
# Embedding is scattered instead.
RULES: dict[type, tuple[Callable, Callable | None]] = {
    nn.Linear: (lambda m: True, _linear),
    nn.Conv2d: (_conv_ok, _conv2d),
    nn.modules.batchnorm._BatchNorm: (_batch_norm_ok, _batch_norm),
    nn.LayerNorm: (lambda m: m.elementwise_affine, _layer_norm),
    nn.Embedding: (_embedding_ok, None),
}


def _rule(module: nn.Module) -> tuple[Callable, Callable | None] | None:
    """The rule of the module's type; a subclass with its own forward (a weight-standardised conv, a
    LayerNorm that casts) computes something else and has none."""
    return next(
        (rule for kind, rule in RULES.items() if isinstance(module, kind) and type(module).forward is kind.forward),
        None,
    )


def parameter_owners(net: nn.Module) -> dict[str, nn.Module]:
    """Modules that own trainable parameters, by name; Unsupported when a rule does not cover one."""
    owners = {}
    for name, module in net.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        rule = _rule(module)
        if rule is None or not rule[0](module):
            raise Unsupported(f"{name or 'the network'} ({type(module).__name__})")
        owners[name] = module
    return owners


def supports(net: nn.Module) -> bool:
    try:
        parameter_owners(net)
        return True
    except Unsupported:
        return False


def scatter_squared_rows(target: torch.Tensor, ids: torch.Tensor, grads: torch.Tensor) -> None:
    """target[row] += (sum of the sample's gradients at positions holding that row)^2, per sample."""
    for sample_ids, sample_grads in zip(ids, grads):
        rows, inverse = torch.unique(sample_ids, return_inverse=True)
        summed = torch.zeros(len(rows), sample_grads.shape[-1], device=grads.device, dtype=grads.dtype).index_add_(
            0, inverse, sample_grads
        )
        target.index_add_(0, rows, summed**2)


@contextmanager
def squared_gradient_sums(net: nn.Module, fisher: dict[str, torch.Tensor]):
    """While active, each forward of `net` records its layers' inputs; `backward(outputs, grad_outputs)`
    of the yielded recorder adds each sample's squared parameter gradients into `fisher` (by parameter
    name). Raises Unsupported for a layer without a rule or one that runs twice in a forward."""
    owners = parameter_owners(net)
    recorder = _Recorder(owners, fisher)
    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: recorder.record(name, mod, inp[0], out))
        for name, m in owners.items()
    ]
    try:
        yield recorder
    finally:
        for h in handles:
            h.remove()


class _Recorder:
    def __init__(self, owners: dict[str, nn.Module], fisher: dict[str, torch.Tensor]):
        self.owners, self.fisher = owners, fisher
        self.outputs: dict[str, GradientEdge] = {}

    def record(self, name: str, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
        if name in self.outputs:
            raise Unsupported(f"{name} runs more than once per forward; its per-sample gradient is a sum")
        x = x.detach()
        out.register_hook(lambda g: self._accumulate(name, module, x, g))
        self.outputs[name] = get_gradient_edge(out)  # this value, even if an in-place op later replaces it

    def _accumulate(self, name: str, module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Embedding):
            if module.padding_idx is not None:  # that row receives no gradient
                g = g * (x != module.padding_idx)[..., None]
            scatter_squared_rows(
                self.fisher[prefix + "weight"], x.reshape(len(x), -1), g.reshape(len(x), -1, g.shape[-1])
            )
            return
        for param, squares in _rule(module)[1](module, x, g.detach()).items():
            if prefix + param in self.fisher:  # frozen parameters are not in it
                self.fisher[prefix + param] += squares

    def backward(self, outputs: tuple[torch.Tensor, ...], grad_outputs: tuple[torch.Tensor, ...]) -> None:
        """Back-propagate to every recorded layer output (no parameter gradients are formed); the hooks
        fire on the way. Every layer with parameters must have run: one that did not may have had its
        parameters used by another module's code (as MultiheadAttention uses its out_proj), out of reach."""
        silent = set(self.owners) - set(self.outputs)
        if silent:
            raise Unsupported(f"{sorted(silent)[0]} did not run its forward")
        recorded = list(self.outputs.values())
        self.outputs = {}
        torch.autograd.grad(outputs, recorded, grad_outputs, allow_unused=True)
