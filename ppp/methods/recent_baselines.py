"""The training baselines the field now expects: NegGrad+, SCRUB and SalUn.

Each reuses the machinery of `ppp/methods/baselines.py`: the method's recipe (`recipe`: the backbone's
`train` settings with `method.train.<task>` overrides), the shared loop `ppp.train.train` where one data
stream suffices, the class scores `ppp.models.scores.class_scores` for distillation, and Amnesiac's
relabelling. The sample seed fixes every draw (data orders, random labels).

- neggrad_plus (Kurmanji et al. 2023): every step takes one D_r batch (the shared loop over D_r) and the
  next batch of an endless, reshuffled D_f stream; loss = beta * L(D_r batch) - (1 - beta) * L(D_f batch),
  L the system's own loss: cross-entropy on logits for classifiers; for hashing systems the DSAP / DSPH
  loss (`system.loss(batch)`), so the forget term ascends the very hashing loss the model was trained
  with, on the samples' true labels. A term whose weight is 0 is not computed (beta = 1 is finetuning).
- scrub (Kurmanji et al., NeurIPS 2023): the student starts as the original, the teacher is a frozen copy
  of it. Each of `epochs` epochs runs, for the first `msteps` epochs, a max-pass over D_f minimising
  -KL(teacher || student), then a min-pass over D_r minimising gamma * L + alpha * KL(teacher || student);
  one optimiser carries over between passes. The KL is the official DistillKL: softmax / log-softmax of
  the scores over `temperature`, summed over classes, averaged over the batch, times temperature^2. The
  scores are logits for classifiers; for hashing systems (as Bad Teacher) the cosines of the real-valued
  image and text codes to the model's own DSPH proxies, with the two modalities' KL terms summed; L is
  the system's own loss (DSPH). The learning rate follows the shared warm-up + cosine schedule over all
  steps of both passes (the official code uses a step decay).
- salun (Fan et al., ICLR 2024): the saliency of a weight is |sum over D_f batches of the gradient of the
  forget loss| (the system's own loss on D_f with true labels, model in eval mode: cross-entropy, or DSPH
  for hashing), and the mask holds the top `mask_fraction` of all trainable weights (one global
  ranking). Then random-label training: D_r plus D_f relabelled as Amnesiac does (`random_wrong_labels`:
  each forget label swapped for a random retained class the sample does not carry), with the system's
  own loss, on the shared loop, where only masked weights change: their gradients pass the mask and,
  after every optimiser step, unmasked weights are reset to the original (theta_u = theta_o + m * dtheta,
  the paper's formulation; the official code masks gradients but lets weight decay shrink the rest).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook
from tqdm.auto import tqdm

from ppp.data.base import Concatenated, LabelledDataset
from ppp.methods.baselines import (
    MODALITIES,
    Relabelled,
    Trained,
    _train,
    kl_divergence,
    random_wrong_labels,
    recipe,
)
from ppp.methods.registry import METHODS
from ppp.models import System, batch_to
from ppp.models.base import TrainRecipe
from ppp.models.scores import class_scores
from ppp.schema import block, integer, number, read, schema, setting
from ppp.train import make_loader, recipe_optimizers, warmup_cosine

FORGET_STREAM_OFFSET = 1  # the D_f data order's seed = sample seed + offset (D_r's is the sample seed)


@schema
class TwoStreams(Trained):
    """A method that draws D_f batches of their own: `train.<task>.forget_batch_size` (null = the batch size)."""

    def check(self, path: str) -> None:
        for task, overrides in (self.train or {}).items():
            if isinstance(overrides, dict) and "forget_batch_size" in overrides:
                integer(1, optional=True)(f"{path}.train.{task}.forget_batch_size", overrides["forget_batch_size"])


@schema
class NegGradPlusSettings(TwoStreams):
    beta: float = setting(number(0, 1))


@schema
class Temperatures:
    """A distillation temperature per backbone task (logits; cosines to the DSPH proxies)."""

    classification: float = setting(number(0, low_open=True))
    retrieval: float = setting(number(0, low_open=True))


@schema
class ScrubSettings(TwoStreams):
    msteps: int = setting(integer(0))
    alpha: float = setting(number(0))
    gamma: float = setting(number(0))
    temperature: Temperatures = block(Temperatures)


@schema
class SalUnSettings(Trained):
    mask_fraction: float = setting(number(0, 1, low_open=True))


def loader(data: LabelledDataset, system: System, batch_size: int, seed: int, ctx):
    """A shuffled, seeded loader over `data` that drops a last partial batch, as the shared loop's."""
    return make_loader(
        data,
        system,
        batch_size,
        shuffle=True,
        seed=seed,
        num_workers=int(ctx.cfg.num_workers),
        drop_last=len(data) > batch_size,
    )


def forget_batch_size(settings) -> int:
    """The recipe's `forget_batch_size` (a method's per-task override), else its `batch_size`."""
    size = settings.get("forget_batch_size")
    return int(settings.batch_size if size is None else size)


def endless(batches, device: torch.device) -> Iterator[dict]:
    """The loader's batches on `device`, pass after pass (each pass reshuffled by its generator)."""
    while True:
        for batch in batches:
            yield batch_to(batch, device)


# ---------------------------------------------------------------------------------------------- NegGrad+


def neggrad_plus_objective(beta: float, forget: Iterator[dict]) -> Callable[[System, dict], torch.Tensor]:
    """beta * L(retain batch) - (1 - beta) * L(next forget batch); a zero-weight term is skipped."""

    def objective(system, batch):
        loss = beta * system.loss(batch) if beta > 0 else 0.0
        if beta < 1:
            loss = loss - (1 - beta) * system.loss(next(forget))
        return loss

    return objective


@METHODS.register("neggrad_plus", schema=NegGradPlusSettings)
def neggrad_plus(system, ctx, cfg):
    """Descent on D_r combined with ascent on D_f (Kurmanji et al.'s NegGrad+)."""
    settings = recipe(system, ctx, cfg)
    forget = loader(ctx.forget_train, system, forget_batch_size(settings), ctx.sample_seed + FORGET_STREAM_OFFSET, ctx)
    return _train(
        system, ctx.retain_train, ctx, cfg, neggrad_plus_objective(float(cfg.beta), endless(forget, ctx.device))
    )


# ------------------------------------------------------------------------------------------------- SCRUB


def distill_kl(student: System, teacher: System, batch: dict, temperature: float) -> torch.Tensor:
    """The official DistillKL, KL(teacher || student) per sample times T^2, summed over the modalities
    `class_scores` gives (one for classifiers, image and text for hashing systems)."""
    with torch.no_grad():
        targets = [F.softmax(s / temperature, dim=1) for s in class_scores(teacher, batch, MODALITIES)]
    return temperature**2 * sum(
        kl_divergence(F.log_softmax(s / temperature, dim=1), t, "batchmean")
        for s, t in zip(class_scores(student, batch, MODALITIES), targets)
    )


def scrub_objectives(teacher: System, temperature: float, alpha: float, gamma: float):
    """(max-step loss, min-step loss): -KL on a D_f batch; gamma * own loss + alpha * KL on a D_r batch."""

    def maximise(student, batch):
        return -distill_kl(student, teacher, batch, temperature)

    def minimise(student, batch):
        return gamma * student.loss(batch) + alpha * distill_kl(student, teacher, batch, temperature)

    return maximise, minimise


class Stepper:
    """One optimiser step per call, as the shared loop takes them: the recipe's optimisers, warm-up +
    cosine schedule over `total` steps and optional gradient clipping."""

    def __init__(self, system: System, settings, total: int):
        self.system, self.clip = system, read(TrainRecipe, settings).grad_clip  # as `train` reads it
        self.optimizers = recipe_optimizers(system, settings)
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(o, lambda s: warmup_cosine(s, total, settings.warmup))
            for o in self.optimizers
        ]

    def __call__(self, loss: torch.Tensor) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.system.parameters(), self.clip)
        for o, sch in zip(self.optimizers, self.schedulers):
            o.step()
            sch.step()


@METHODS.register("scrub", schema=ScrubSettings)
def scrub(system, ctx, cfg):
    """SCRUB: alternate max-passes on D_f (away from the teacher) and min-passes on D_r (towards it,
    plus the task loss); diagnostics: the mean KL of the last max-pass and the mean loss of the last min-pass."""
    settings = recipe(system, ctx, cfg)
    teacher = copy.deepcopy(system).eval().requires_grad_(False)
    maximise, minimise = scrub_objectives(
        teacher, float(cfg.temperature[system.task]), float(cfg.alpha), float(cfg.gamma)
    )
    retain = loader(ctx.retain_train, system, int(settings.batch_size), ctx.sample_seed, ctx)
    forget = loader(ctx.forget_train, system, forget_batch_size(settings), ctx.sample_seed + FORGET_STREAM_OFFSET, ctx)
    epochs, msteps = int(settings.epochs), int(cfg.msteps)
    total = epochs * len(retain) + min(msteps, epochs) * len(forget)
    torch.manual_seed(ctx.sample_seed)
    system.to(ctx.device).train()
    step = Stepper(system, settings, total)
    diagnostics = {}
    bar = tqdm(total=total, desc=cfg.name, unit="step", leave=False, dynamic_ncols=True, disable=None)
    for epoch in range(epochs):
        passes = [("max", forget, maximise)] if epoch < msteps else []
        for kind, batches, objective in [*passes, ("min", retain, minimise)]:
            losses = []
            for batch in batches:
                loss = objective(system, batch_to(batch, ctx.device))
                step(loss)
                losses.append(loss.item())
                bar.update()
            mean = sum(losses) / max(1, len(losses))
            diagnostics.update({"scrub/max_kl": -mean} if kind == "max" else {"scrub/min_loss": mean})
    bar.close()
    return system.eval(), diagnostics


# ------------------------------------------------------------------------------------------------- SalUn


def trainable(system: System, settings) -> dict[str, torch.nn.Parameter]:
    """The parameters the recipe's optimiser groups train, by name."""
    ids = {id(p) for group in system.param_groups(settings) for p in group["params"]}
    return {name: p for name, p in system.named_parameters() if id(p) in ids and p.requires_grad}


def saliency(system: System, data: LabelledDataset, params: dict, batch_size: int, ctx) -> dict[str, torch.Tensor]:
    """|gradient of the system's own loss on `data`, summed over batches| per weight, in eval mode."""
    system.to(ctx.device).eval()
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for batch in make_loader(data, system, batch_size, num_workers=int(ctx.cfg.num_workers)):
        grads = torch.autograd.grad(system.loss(batch_to(batch, ctx.device)), list(params.values()), allow_unused=True)
        for name, g in zip(params, grads):
            if g is not None:
                total[name] += g
    return {name: g.abs() for name, g in total.items()}


def top_fraction_mask(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """True for the int(fraction * n) highest scores over all tensors together (one global ranking;
    ties broken by position, so the count is exact)."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    keep[torch.argsort(flat, descending=True, stable=True)[: int(fraction * len(flat))]] = True
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


@contextmanager
def masked_updates(params: dict[str, torch.nn.Parameter], mask: dict[str, torch.Tensor]):
    """Inside, only masked weights change: unmasked gradient entries are zeroed (so they do not count in
    gradient clipping), and after every optimiser step the unmasked entries are reset to their values on
    entry (so weight decay and momentum cannot move them either)."""
    original = {name: p.detach().clone() for name, p in params.items()}
    hooks = [p.register_hook(lambda g, m=mask[name]: g.masked_fill(~m, 0)) for name, p in params.items()]

    @torch.no_grad()
    def restore(*_):
        for name, p in params.items():
            p.copy_(torch.where(mask[name], p, original[name]))

    post = register_optimizer_step_post_hook(restore)
    try:
        yield
    finally:
        post.remove()
        for hook in hooks:
            hook.remove()
        restore()


@METHODS.register("salun", schema=SalUnSettings)
def salun(system, ctx, cfg):
    """Saliency mask from the forget loss's gradient, then random-label training of the masked weights on
    D_r plus the relabelled D_f; diagnostics: the share of trainable weights the mask holds."""
    settings = recipe(system, ctx, cfg)
    params = trainable(system, settings)
    mask = top_fraction_mask(
        saliency(system, ctx.forget_train, params, int(settings.batch_size), ctx), float(cfg.mask_fraction)
    )
    forget = ctx.forget_train
    wrong = random_wrong_labels(forget.labels, ctx.forget_set.swapped, ctx.bench.num_classes, ctx.sample_seed)
    data = Concatenated(ctx.retain_train, Relabelled(forget, wrong))
    with masked_updates(params, mask):
        system, _ = _train(system, data, ctx, cfg)
    held = sum(int(m.sum()) for m in mask.values()) / max(1, sum(m.numel() for m in mask.values()))
    return system, {"salun/mask_share": held}
