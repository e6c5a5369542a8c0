"""Diagonal empirical Fisher information of the training loss, one implementation for every method.

Two modes:
- `per_sample`: E_x[(dL(x)/dtheta)^2] (PPP's Eq. 4), in chunks. Where every parameterised layer has a
  rule (`ppp/per_sample_grads.py`: Linear, Conv2d, BatchNorm in eval mode, LayerNorm, Embedding) and
  the system names its network inputs (`net_inputs`), from one batched forward and backward per chunk
  with layer hooks; otherwise per-sample gradients from torch.func (`functional_call` + `vmap(grad)`),
  the same numbers within float rounding. On that path, large embedding tables (the CLIP token embedding)
  are not differentiated directly: the gradient flows into a zero offset added to the embedding's
  output, and each sample's squared row gradients are scattered into the Fisher, so no dense
  per-sample copy of the table is ever built.
  Each sample's loss sees one fixed `context` (for DSPH: the codes of a seeded batch drawn from the
  whole training set), so a sample contributes the same whichever set (D_f, D_n, D_r) and chunk it
  is measured in.
- `batch`: sum over mini-batches of (d mean-batch-loss / dtheta)^2, divided by the number of batches,
  as SSD's official code does (its scale depends on the batch size, and on which samples share a
  batch: `batch_order`).
Both modes differentiate one objective: `system.sample_loss` per sample, `system.fisher_loss` per batch
(for CLIP hashing the DSPH loss alone, never the contrastive term of `backbone.loss.contrastive_weight`).
`predictive_fisher` is the true Fisher (classes drawn from the model's own softmax) that Golatkar et al.'s
Fisher forgetting uses, on the per-sample path.
Only `system.net` is covered (what serves queries); the loss's own state (DSPH proxies) is constant.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from ppp.models.base import System, batch_to
from ppp.per_sample_grads import Unsupported, scatter_squared_rows, squared_gradient_sums, supports
from ppp.schema import integer, number, one_of, read, schema, setting
from ppp.train import make_loader

log = logging.getLogger(__name__)

MODES = ("per_sample", "batch")
BATCH_ORDERS = ("auto", "official", "dataset")
REFERENCES = ("full", "retain")


@schema
class FisherEstimate:
    """How a method estimates its diagonal Fisher (`method/fisher_estimate/default.yaml`, mounted into ssd,
    fisher and ppp); a key the YAML may omit has its default here."""

    fisher_mode: str = setting(one_of(*MODES))
    fisher_batch_size: int = setting(integer(1))
    batch_order: str = setting(one_of(*BATCH_ORDERS), default="auto")
    fisher_chunk: int = setting(integer(1))
    fisher_memory_mb: float | None = setting(number(0, low_open=True, optional=True), default=None)
    fisher_context_size: int = setting(integer(1))


def batch_order(settings) -> str:
    """`official` or `dataset`: `auto` is SSD's own order for SSD in batch mode, dataset order otherwise."""
    order = read(FisherEstimate, settings).batch_order
    if order != "auto":
        return order
    name = settings["name"] if "name" in settings else None
    return "official" if name == "ssd" and settings["fisher_mode"] == "batch" else "dataset"


def official_order(labels: torch.Tensor, is_forget: torch.Tensor) -> torch.Tensor:
    """The permutation into SSD's loader order: samples outside the forget set first, then those in it
    (`is_forget`; D = D_r then D_f), each block in class order. Class order = by first label (the lowest class
    index a sample carries; single-label data: its label), ties kept in dataset order."""
    if labels.dim() == 1:
        first = labels.long()
    else:
        carried = labels > 0  # argmax of a row picks its first maximum: the first label; unlabelled rows go last
        first = torch.where(carried.any(1), carried.int().argmax(1), labels.shape[1])
    block = int(first.max()) + 1 if len(first) else 1
    return torch.sort(is_forget.long() * block + first, stable=True).indices


def uses_context(system) -> bool:
    """Whether the system's per-sample loss reads a context (its `loss_context` is its own, not System's)."""
    return type(system).loss_context is not System.loss_context


@torch.no_grad()
def loss_context(system, data, device) -> dict[str, torch.Tensor]:
    """The per-sample loss's context, computed once from all of `data` as one batch (eval mode)."""
    system.to(device).eval()
    batch = next(iter(make_loader(data, system, len(data))))
    return system.loss_context(batch_to(batch, device))


def trainable_parameters(net: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in net.named_parameters() if p.requires_grad}


def sparse_embeddings(net: nn.Module, min_rows: int) -> dict[str, nn.Embedding]:
    """Embedding tables with at least `min_rows` rows, handled row-sparsely in per_sample mode."""
    return {
        name: m
        for name, m in net.named_modules()
        if isinstance(m, nn.Embedding) and m.num_embeddings >= min_rows and m.weight.requires_grad
    }


def batch_fisher(system, data, device, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """SSD's importance: squared gradients of batch-mean losses, averaged over batches. The loss is
    `system.fisher_loss`, the objective `sample_loss` measures per sample (for CLIP hashing: DSPH alone,
    without the contrastive term of `backbone.loss.contrastive_weight`)."""
    net = system.net
    params = trainable_parameters(net)
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    system.to(device).eval()
    loader = make_loader(data, system, batch_size)
    for batch in tqdm(loader, desc="fisher (batch)", leave=False, disable=None):
        net.zero_grad(set_to_none=True)
        system.fisher_loss(batch_to(batch, device)).backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    net.zero_grad(set_to_none=True)
    return {n: f.div_(max(1, len(loader))).cpu() for n, f in fisher.items()}


@contextmanager
def _output_offsets(modules: dict[str, nn.Module], offsets: dict[str, torch.Tensor]):
    """While active, each module's output has offsets[name] added whenever one is set."""

    def add_offset(name, out):
        return out + offsets[name][None] if name in offsets else out

    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: add_offset(name, out)) for name, m in modules.items()
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def per_sample_fisher(
    system,
    data,
    device,
    context: dict[str, torch.Tensor],
    chunk: int = 32,
    sparse_min_rows: int = 10000,
    memory_mb: float | None = None,
    sample_loss=None,
) -> dict[str, torch.Tensor]:
    """Mean over samples of squared per-sample gradients, in chunks of at most `chunk` samples and of
    at most what `memory_mb` holds (`budget_chunk`); every sample's loss sees the same `context` (from
    `loss_context`), so chunks do not change it. Layer hooks where they cover the network, torch.func
    otherwise. `sample_loss(net_forward, sample, context)` replaces `system.sample_loss` when given."""
    system.to(device).eval()
    loss = sample_loss or system.sample_loss
    if uses_hooks(system):
        try:
            size = budget_chunk(system, data, device, context, chunk, memory_mb, gradient_bytes=0, sample_loss=loss)
            return hooked_fisher(system, data, device, context, size, sample_loss=loss)
        except Unsupported:  # a layer runs twice, or a parameter is used outside its layer's forward
            pass
    tables = {f"{name}.weight" for name in sparse_embeddings(system.net, sparse_min_rows)}
    dense = sum(p.numel() * p.element_size() for n, p in trainable_parameters(system.net).items() if n not in tables)
    size = budget_chunk(system, data, device, context, chunk, memory_mb, gradient_bytes=dense, sample_loss=loss)
    return functorch_fisher(system, data, device, context, size, sparse_min_rows, sample_loss=loss)


MEMORY_FRACTION = 0.5  # of the device's free memory: the default budget of a per-sample Fisher chunk
GRADIENT_COPIES = 2  # torch.func path: a chunk's per-sample gradients, and one parameter's squares beside them
ACTIVATION_COPIES = 3  # a sample's saved activations, their gradients, and the hooks' copies (inputs, patches)


def free_memory_mb(device: torch.device | str) -> float | None:
    """Memory the device can still give: CUDA's free memory, or the host's MemAvailable (Linux); None elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    try:
        with open("/proc/meminfo") as fh:
            fields = dict(line.split(":", 1) for line in fh)
        return int(fields["MemAvailable"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


def activation_bytes(
    system, sample: dict[str, torch.Tensor], context: dict[str, torch.Tensor], sample_loss=None
) -> int:
    """Bytes autograd saves for one sample's loss (parameters excluded): what every sample of a chunk adds."""
    params = {p.untyped_storage().data_ptr() for p in system.net.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), sdpa_kernel(SDPBackend.MATH):
        (sample_loss or system.sample_loss)(system.net, sample, context)
    return sum(saved.values())


def budget_chunk(
    system,
    data,
    device,
    context: dict[str, torch.Tensor],
    most: int,
    memory_mb: float | None,
    gradient_bytes: int,
    sample_loss=None,
) -> int:
    """Samples per chunk: at most `most`, and as many as `memory_mb` holds (None: MEMORY_FRACTION of the
    device's free memory) beside the Fisher's running sums, at `gradient_bytes` (a sample's dense
    per-sample gradient; 0 on the hook path) times GRADIENT_COPIES plus one sample's measured activations
    times ACTIVATION_COPIES each; at least 1."""
    budget = memory_mb if memory_mb is not None else (free_memory_mb(device) or math.inf) * MEMORY_FRACTION
    if len(data) == 0 or math.isinf(budget):
        return most
    sums = sum(p.numel() * p.element_size() for p in trainable_parameters(system.net).values())
    one = batch_to(next(iter(make_loader(data, system, 1))), device)
    per_sample = GRADIENT_COPIES * gradient_bytes + ACTIVATION_COPIES * activation_bytes(
        system, {k: v[0] for k, v in one.items()}, context, sample_loss
    )
    chunk = max(1, min(most, int((budget * 2**20 - sums) // per_sample)))
    log.info(
        "[fisher] %d samples per chunk: %.0f MB each and %.0f MB of sums within %.0f MB",
        chunk,
        per_sample / 2**20,
        sums / 2**20,
        budget,
    )
    return chunk


def uses_hooks(system) -> bool:
    """Whether the hook rules cover the system: it names its network inputs and every layer has a rule."""
    return type(system).net_inputs is not System.net_inputs and supports(system.net)


def hooked_fisher(
    system, data, device, context: dict[str, torch.Tensor], chunk: int, sample_loss=None
) -> dict[str, torch.Tensor]:
    """Per-sample Fisher from one batched forward and backward per chunk: the per-sample losses (each
    `system.sample_loss` on its own outputs, so exactly the torch.func path's loss) give the gradient at
    the network's outputs; the layer hooks turn it into squared per-sample parameter gradients."""
    net = system.net
    fisher = {n: torch.zeros_like(p) for n, p in trainable_parameters(net).items()}
    n_seen = 0
    with squared_gradient_sums(net, fisher) as recorder:
        for batch in tqdm(make_loader(data, system, chunk), desc="fisher (per-sample)", leave=False, disable=None):
            batch = batch_to(batch, device)
            outputs = net(*system.net_inputs(batch))
            as_tuple = isinstance(outputs, tuple)
            outputs = outputs if as_tuple else (outputs,)
            recorder.backward(outputs, _output_gradients(system, outputs, as_tuple, batch, context, sample_loss))
            n_seen += len(outputs[0])
    return {n: f.div_(max(1, n_seen)).cpu() for n, f in fisher.items()}


def _output_gradients(
    system,
    outputs: tuple[torch.Tensor, ...],
    as_tuple: bool,
    batch: dict[str, torch.Tensor],
    context: dict[str, torch.Tensor],
    sample_loss=None,
) -> tuple[torch.Tensor, ...]:
    """d(sum of per-sample losses)/d(network outputs): row i is sample i's own loss gradient, since the
    samples do not interact inside the network (eval mode)."""
    leaves = tuple(o.detach().requires_grad_() for o in outputs)

    def loss_of_one(sample_outputs, sample):
        def net_forward(*inputs):  # the network already ran: hand back this sample's outputs
            shaped = tuple(o[None] for o in sample_outputs)
            return shaped if as_tuple else shaped[0]

        return (sample_loss or system.sample_loss)(net_forward, sample, context)

    losses = vmap(loss_of_one)(leaves, batch)
    return torch.autograd.grad(losses.sum(), leaves)


def functorch_fisher(
    system,
    data,
    device,
    context: dict[str, torch.Tensor],
    chunk: int = 32,
    sparse_min_rows: int = 10000,
    sample_loss=None,
) -> dict[str, torch.Tensor]:
    """Per-sample Fisher with torch.func (`vmap(grad)` over the whole network) in chunks."""
    net = system.net
    params = trainable_parameters(net)
    embeddings = sparse_embeddings(net, sparse_min_rows)
    table_names = {f"{name}.weight": name for name in embeddings}
    dense = {n: p.detach() for n, p in params.items() if n not in table_names}
    buffers = dict(net.named_buffers())
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    offsets: dict[str, torch.Tensor] = {}

    def loss_of_one(dense_params, sample_offsets, sample, context):
        offsets.update(sample_offsets)

        def net_forward(*inputs):
            return functional_call(net, (dense_params, buffers), inputs)  # tables: the module's own, constant

        return (sample_loss or system.sample_loss)(net_forward, sample, context)

    per_sample_grads = vmap(grad(loss_of_one, argnums=(0, 1)), in_dims=(None, 0, 0, None))
    n_seen = 0
    loader = make_loader(data, system, chunk)
    # The math attention kernel is made of ops vmap can batch; fused kernels fall back to a slow loop.
    with _output_offsets(embeddings, offsets), sdpa_kernel(SDPBackend.MATH):
        for batch in tqdm(loader, desc="fisher (per-sample)", leave=False, disable=None):
            batch = batch_to(batch, device)
            size = len(next(iter(batch.values())))
            token_ids = {name: batch["text"] for name in embeddings}  # the tables index text tokens
            zero_offsets = {
                name: torch.zeros(size, *token_ids[name].shape[1:], m.embedding_dim, device=device)
                for name, m in embeddings.items()
            }
            # Outer no_grad: the loss's own parameters (DSPH proxies) would otherwise make every
            # per-sample gradient part of a regular autograd graph, kept alive by the running sums.
            with torch.no_grad():
                dense_grads, offset_grads = per_sample_grads(dense, zero_offsets, batch, context)
            offsets.clear()
            for n, g in dense_grads.items():
                fisher[n] += (g**2).sum(0)
            for name, g in offset_grads.items():
                scatter_squared_rows(fisher[f"{name}.weight"], token_ids[name], g)
            n_seen += size
    return {n: f.div_(max(1, n_seen)).cpu() for n, f in fisher.items()}


def fisher_diagonal(
    system,
    data,
    device,
    mode: str = "per_sample",
    batch_size: int = 64,
    chunk: int = 32,
    context_data=None,
    memory_mb: float | None = None,
) -> dict[str, torch.Tensor]:
    """The diagonal Fisher of `system` on `data`; per_sample mode takes its loss context from `context_data`
    and bounds a chunk's memory by `memory_mb` (None: a share of the device's free memory)."""
    if mode == "per_sample":
        context = loss_context(system, context_data, device) if context_data is not None else {}
        return per_sample_fisher(system, data, device, context, chunk, memory_mb=memory_mb)
    if mode == "batch":
        return batch_fisher(system, data, device, batch_size)
    raise ValueError(f"unknown Fisher mode '{mode}'; valid: {', '.join(MODES)}")


def class_weighted_loss(system, y: int):
    """The per-sample loss sqrt(p_y) * CE(out, y), p_y = softmax(out)_y held constant: its squared gradient
    is p_y * (dCE(out, y)/dtheta)^2, class y's term of the true Fisher (`predictive_fisher`)."""

    def loss(net_forward, sample, context):
        logits = net_forward(*(x[None] for x in system.net_inputs(sample)))[0]
        log_p = torch.log_softmax(logits, dim=-1)[y]
        return log_p.detach().exp().sqrt() * -log_p

    return loss


def predictive_fisher(
    system, data, device, num_classes: int, chunk: int = 32, memory_mb: float | None = None
) -> dict[str, torch.Tensor]:
    """The true Fisher of a classifier under its own predictive distribution, as Golatkar et al.'s
    Fisher forgetting (and SSD's `FisherForgetting`) compute it at batch size 1:
        F = 1/N sum_x sum_y softmax(out(x))_y * (dCE(out(x), y)/dtheta)^2,
    here from the per-sample path, one pass over `data` per class y with `class_weighted_loss(y)`."""
    total: dict[str, torch.Tensor] | None = None
    for y in range(num_classes):
        part = per_sample_fisher(
            system, data, device, {}, chunk, memory_mb=memory_mb, sample_loss=class_weighted_loss(system, y)
        )
        total = part if total is None else {n: total[n] + f for n, f in part.items()}
    return total or {}
