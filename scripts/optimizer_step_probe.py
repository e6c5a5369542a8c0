"""What one optimiser step and one epoch's tokenization cost in the training loop, with and without torch's
multi-tensor (`foreach`) kernels and the caption memo (`ppp.train._optimizers`, `ppp.models.clip_hashing.TokenMemo`).

For each backbone: its recipe's optimisers over its parameters (random gradients), a step timed with `foreach`
off (torch's CPU default, a Python loop over the parameters) and on, interleaved so that load falls on both
alike, the best of `--repeats`; and, for a CLIP backbone, the tokenization of the training split's captions
once fresh and once from the memo. Milliseconds per step and seconds per epoch.

python scripts/optimizer_step_probe.py --backbones clip_tiny resnet18 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from ppp.config import compose_config, configs_initialised
from ppp.data import build_benchmark
from ppp.models import build_system
from ppp.train import _optimizers

DATASET = {"clip_tiny": "digit_scenes", "resnet18": "digits"}


def step_ms(system, recipe, foreach: bool, steps: int) -> float:
    """Milliseconds per step of the recipe's optimisers with `foreach` set as given."""
    optimizers = _optimizers(system.param_groups(recipe))
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["foreach"] = foreach
    for optimizer in optimizers:
        optimizer.step()  # the state is allocated at the first step: not timed
    start = time.perf_counter()
    for _ in range(steps):
        for optimizer in optimizers:
            optimizer.step()
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(DATASET), choices=list(DATASET))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.backbones:
        with configs_initialised():
            cfg = compose_config([f"dataset={DATASET[name]}", f"backbone={name}", "device=cpu"])
        bench = build_benchmark(cfg.dataset, cfg.cache_dir)
        system = build_system(cfg.backbone, bench.num_classes, cfg.bits, 0)
        for p in system.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for foreach in times:
                times[foreach].append(step_ms(system, cfg.backbone.train, foreach, args.steps))
        count = sum(p.numel() for p in system.parameters()) / 1e6
        line = f"{name}: {count:.2f} M parameters; optimiser step {min(times[False]):.1f} ms (loop), "
        line += f"{min(times[True]):.1f} ms (foreach)"
        if hasattr(system, "tokenizer"):
            captions = [bench.train[i][1] for i in range(len(bench.train))]
            fresh = type(system.tokenizer)(system.tokenizer.tokenize)
            start = time.perf_counter()
            fresh(captions)
            first = time.perf_counter() - start
            start = time.perf_counter()
            fresh(captions)
            line += f"; tokenizing {len(captions)} captions {first:.2f} s fresh, {time.perf_counter() - start:.3f} s remembered"
        print(line)


if __name__ == "__main__":
    main()
