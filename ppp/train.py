"""The one training loop, shared by every method that trains (original, retrain, finetune, ...)."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ppp.data.base import Transformed
from ppp.models.base import System, TrainRecipe, batch_to
from ppp.schema import read

log = logging.getLogger(__name__)


def make_loader(
    data: Dataset,
    system: System,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    collate: Callable | None = None,
) -> DataLoader:
    """A loader that applies the system's image transform per item and its collate (or `collate`) per batch."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        Transformed(data, system.transform),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate or system.collate,
        drop_last=drop_last,
        persistent_workers=False,
    )


def tagged_collate(system: System) -> Callable:
    """The system's collate for items with a last forget tag (`ForgetTagged`): the tags as `batch["forget"]`."""

    def collate(items):
        return {**system.collate([item[:-1] for item in items]), "forget": torch.tensor([item[-1] for item in items])}

    return collate


@torch.no_grad()
def collect(
    system: System, data: Dataset, device: torch.device, outputs: Callable, batch_size: int = 256, num_workers: int = 0
) -> tuple[torch.Tensor, ...]:
    """`outputs(batch)` (a tensor or a tuple of tensors) over every item of `data`, in order, in eval
    mode; each output concatenated over batches on the CPU."""
    system.eval().to(device)
    parts = []
    for batch in make_loader(data, system, batch_size, num_workers=num_workers):
        out = outputs(batch_to(batch, device))
        parts.append(tuple(o.cpu() for o in (out if isinstance(out, tuple) else (out,))))
    return tuple(torch.cat(column) for column in zip(*parts))


def _optimizers(groups: list[dict], fused: bool = False) -> list[torch.optim.Optimizer]:
    """AdamW and SGD (momentum 0.9) over the system's groups, with torch's fused kernels when `fused`, else AdamW
    with its multi-tensor (`foreach`) kernels and SGD with torch's CPU default.

    The multi-tensor AdamW step over clip_tiny's parameters takes 15-17 ms instead of the loop's 22 ms, with
    bit-identical updates (tests/test_runner.py). The fused kernels take a third of that again, but round
    differently (about 1e-8 after a few steps), so they are a recipe key (`fused_optimizer`), not a silent swap.
    ResNet-18's SGD step is slower with `foreach` on the CPU (39-40 ms against 31-36 ms)
    (`scripts/optimizer_step_probe.py`)."""

    def of_kind(kind: str) -> list[dict]:  # the non-empty groups for one optimiser, without the `optimizer` key
        return [
            {k: v for k, v in g.items() if k != "optimizer"} for g in groups if g["optimizer"] == kind and g["params"]
        ]

    adamw, sgd = of_kind("adamw"), of_kind("sgd")
    kernels = {"fused": True} if fused else {}
    opts: list[torch.optim.Optimizer] = []
    if adamw:
        opts.append(torch.optim.AdamW(adamw, betas=(0.9, 0.98), eps=1e-6, **(kernels or {"foreach": True})))
    if sgd:
        opts.append(torch.optim.SGD(sgd, momentum=0.9, **kernels))
    return opts


def recipe_optimizers(system: System, settings) -> list[torch.optim.Optimizer]:
    """The optimisers a training recipe (`backbone.train`, or a method's recipe over it) gives `system`."""
    return _optimizers(system.param_groups(settings), read(TrainRecipe, settings).fused_optimizer)


def drops_last(samples: int, batch_size: int) -> bool:
    """The loop's rule: the incomplete last batch is dropped unless it would be the only one."""
    return samples > batch_size


def batches_per_epoch(samples: int, batch_size: int) -> int:
    """How many optimiser steps one epoch of `samples` takes in the shared loop (`drops_last`)."""
    return samples // batch_size if drops_last(samples, batch_size) else int(samples > 0)


def warmup_cosine(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up over the first fraction of steps, then 0.5 (1 + cos(pi * progress))."""
    warm = int(warmup_fraction * total)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def train(
    system: System,
    data: Dataset,
    settings,
    device: torch.device,
    seed: int,
    objective: Callable[[System, dict], torch.Tensor] | None = None,
    desc: str = "train",
    num_workers: int = 0,
    checkpoint: Path | None = None,
    collate: Callable | None = None,
) -> System:
    """Train `system` in place on `data` for `settings.epochs` epochs; deterministic given `seed`.

    `objective(system, batch)` replaces the system's own loss (amnesiac, bad teacher, ...). With a
    `checkpoint` path, the full training state (weights, optimisers, schedules, data order and RNG) is
    saved after every epoch and a run killed part-way resumes from it to the very model an
    uninterrupted run gives; the file is removed once training ends. `collate` replaces the system's own
    (`tagged_collate`: items that carry a forget tag).
    """
    torch.manual_seed(seed)
    loader = make_loader(
        data,
        system,
        settings.batch_size,
        shuffle=True,
        seed=seed,
        num_workers=num_workers,
        drop_last=drops_last(len(data), settings.batch_size),
        collate=collate,
    )
    objective = objective or (lambda s, b: s.loss(b))
    optimizers = recipe_optimizers(system, settings)
    total = settings.epochs * len(loader)
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(o, lambda s: warmup_cosine(s, total, settings.warmup)) for o in optimizers
    ]
    system.to(device).train()
    state = TrainingState(system, optimizers, schedulers, loader.generator)
    first_epoch = state.resume(checkpoint) if checkpoint else 0
    if first_epoch:
        log.info("[train] %s: resuming after epoch %d from %s", desc, first_epoch, checkpoint)
    bar = tqdm(
        total=total,
        initial=first_epoch * len(loader),
        desc=desc,
        unit="step",
        leave=False,
        dynamic_ncols=True,
        disable=None,
    )
    grad_clip = read(TrainRecipe, settings).grad_clip
    for epoch in range(first_epoch, settings.epochs):
        system.train()
        for batch in loader:
            loss = objective(system, batch_to(batch, device))
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(system.parameters(), grad_clip)
            for o, sch in zip(optimizers, schedulers):
                o.step()
                sch.step()
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
        if checkpoint and epoch + 1 < settings.epochs:
            state.save(checkpoint, epoch + 1)
    bar.close()
    if checkpoint:
        checkpoint.unlink(missing_ok=True)
    return system.eval()


class TrainingState:
    """Everything an interrupted training run needs to continue exactly where it stopped."""

    def __init__(self, system: System, optimizers, schedulers, generator: torch.Generator):
        self.system, self.optimizers, self.schedulers, self.generator = system, optimizers, schedulers, generator

    def save(self, path: Path, epochs_done: int) -> None:
        from ppp.cache import atomic_write

        state = {
            "epochs_done": epochs_done,
            "model": self.system.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "data_order": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(path, buf.getvalue())

    def resume(self, path: Path) -> int:
        """Restore from `path` when it holds a readable checkpoint; the number of epochs already done."""
        if not path.exists():
            return 0
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except (RuntimeError, EOFError, OSError):  # unreadable: start over (writes are atomic, so rare)
            return 0
        self.system.load_state_dict(state["model"])
        for o, saved in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(saved)
        for s, saved in zip(self.schedulers, state["schedulers"]):
            s.load_state_dict(saved)
        self.generator.set_state(state["data_order"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return int(state["epochs_done"])
