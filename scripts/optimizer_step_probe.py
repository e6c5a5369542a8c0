"""What one optimiser step and one epoch's tokenization cost in the training loop, under torch's three kinds of
optimiser kernels and with the caption memo (`ppp.train._optimizers`, `ppp.models.clip_hashing.TokenMemo`).

For each backbone: its recipe's optimisers over its parameters (random gradients), a step timed with the
per-parameter loop (torch's CPU default), the multi-tensor (`foreach`) kernels and the fused ones
(`backbone.train.fused_optimizer`), interleaved so that load falls on all alike, the best of `--repeats`; and,
for a CLIP backbone, the tokenization of the training split's captions once fresh and once from the memo.
With `--epochs N`, also N epochs of the recipe's training from the same initialisation under the multi-tensor
and the fused kernels, interleaved, the best of `--repeats`. Milliseconds per step, seconds per epoch.

python scripts/optimizer_step_probe.py --backbones clip_tiny resnet18 --threads 1 --epochs 2
"""

from __future__ import annotations

import argparse
import time

import torch
from omegaconf import OmegaConf

from ppp.config import compose_config, configs_initialised
from ppp.data import build_benchmark
from ppp.models import build_system
from ppp.train import _optimizers, train

DATASET = {"clip_tiny": "digit_scenes", "resnet18": "digits"}


KERNELS = ("loop", "foreach", "fused")


def step_ms(system, recipe, kernels: str, steps: int) -> float:
    """Milliseconds per step of the recipe's optimisers with the given kernels."""
    optimizers = _optimizers(system.param_groups(recipe), fused=kernels == "fused")
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["foreach"] = kernels == "foreach"
    for optimizer in optimizers:
        optimizer.step()  # the state is allocated at the first step: not timed
    start = time.perf_counter()
    for _ in range(steps):
        for optimizer in optimizers:
            optimizer.step()
    return 1000 * (time.perf_counter() - start) / steps


def training_s(cfg, bench, fused: bool, epochs: int) -> float:
    """Seconds per epoch of the backbone's recipe on the training split, with fused kernels or multi-tensor ones."""
    recipe = OmegaConf.merge(cfg.backbone.train, {"epochs": epochs, "fused_optimizer": fused})
    system = build_system(cfg.backbone, bench.num_classes, cfg.bits, 0)
    start = time.perf_counter()
    train(system, bench.train, recipe, torch.device("cpu"), seed=0)
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(DATASET), choices=list(DATASET))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=0, help="also time this many training epochs per kernel")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.backbones:
        with configs_initialised():
            cfg = compose_config([f"dataset={DATASET[name]}", f"backbone={name}", "device=cpu"])
        bench = build_benchmark(cfg.dataset, cfg.cache_dir)
        system = build_system(cfg.backbone, bench.num_classes, cfg.bits, 0)
        for p in system.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        times = {kernels: [] for kernels in KERNELS}
        for _ in range(args.repeats):
            for kernels in times:
                times[kernels].append(step_ms(system, cfg.backbone.train, kernels, args.steps))
        count = sum(p.numel() for p in system.parameters()) / 1e6
        line = f"{name}: {count:.2f} M parameters; optimiser step "
        line += ", ".join(f"{min(times[kernels]):.1f} ms ({kernels})" for kernels in KERNELS)
        if hasattr(system, "tokenizer"):
            captions = [bench.train[i][1] for i in range(len(bench.train))]
            fresh = type(system.tokenizer)(system.tokenizer.tokenize)
            start = time.perf_counter()
            fresh(captions)
            first = time.perf_counter() - start
            start = time.perf_counter()
            fresh(captions)
            line += f"; tokenizing {len(captions)} captions {first:.2f} s fresh, {time.perf_counter() - start:.3f} s remembered"
        if args.epochs:
            epoch = {fused: [] for fused in (False, True)}
            for _ in range(args.repeats):
                for fused in epoch:
                    epoch[fused].append(training_s(cfg, bench, fused, args.epochs))
            line += f"; an epoch {min(epoch[False]):.2f} s (foreach), {min(epoch[True]):.2f} s (fused)"
        print(line)


if __name__ == "__main__":
    main()
