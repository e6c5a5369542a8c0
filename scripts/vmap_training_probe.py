"""Can K tiny models train faster in one vectorised pass than one after another? (issue 23, "Fast enough")

The N-model measures (forgetting quality, U-LiRA) train N models per setting, and that training dominates
their cost. This probe times one training step per model of the project's backbone, K models at once:
(a) sequentially, each its own `system.loss(batch)`, backward, gradient clipping and the recipe's
optimisers (`ppp.train`'s loop body, without the schedule); (b) vectorised, the K models' parameters
stacked (`torch.func.stack_module_state`) and `vmap(grad(loss))` over them, each model on its own batch,
then the same optimisers written out on the stacked tensors (AdamW, SGD with momentum), dropout drawn
per model (`randomness="different"`). Each model has its own seed and its own shuffled batch order.
The steps of (a) and (b) are interleaved so that the machine's load falls on both alike; the table
gives per-model seconds per step (medians after a warm-up) and the speed-up (a)/(b). With dropout off
and the same start, one step of each must give the same parameters: the largest |difference| is
reported. The issue adopts (b) only at a speed-up of at least 1.5x on the 2-core CPU.

When the project's loss does not run under `vmap`, the error is recorded and the one workaround tried
is a masked form of the DSPH loss's irrelevant-pair terms (no boolean indexing, no branch on the data).

python scripts/vmap_training_probe.py --backbone clip_tiny --models 2 4 8 --threads 1 2 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from ppp.config import compose_config
from ppp.data import build_benchmark
from ppp.models import build_system
from ppp.models.base import TrainRecipe
from ppp.schema import read
from ppp.train import make_loader, recipe_optimizers

DATASETS = {  # small data: the probe times steps, it does not train to the end
    "clip_tiny": ["dataset=digit_scenes", "dataset.n_total=600", "dataset.n_train=300"]
    + ["dataset.n_query=100", "dataset.n_val=100"],
    "resnet18": ["dataset=digits", "dataset.per_class=100", "dataset.population_per_class=20"],
}
WARMUP = 2  # untimed steps of each variant


class Loss(nn.Module):
    """A system's training loss as a module's forward, so that `functional_call` can swap its tensors."""

    def __init__(self, system, loss=None):
        super().__init__()
        self.system, self.loss = system, loss

    def forward(self, batch):
        return self.loss(self.system, batch) if self.loss else self.system.loss(batch)


def masked_dsph_loss(system, batch) -> torch.Tensor:
    """The DSPH loss with its irrelevant-pair terms over the whole batch, pairs outside the multi-label
    samples masked (the project's form selects them with a boolean index, which `vmap` cannot batch)."""
    crit, labels = system.criterion, batch["label"].float()
    img, txt = system.codes(batch)
    pos_i, neg_i = crit._proxy_terms(img, labels)
    pos_t, neg_t = crit._proxy_terms(txt, labels)
    multi = labels.sum(dim=1) > 1
    mask = ((labels @ labels.T) == 0) & multi[:, None] & multi[None, :]
    n_pairs = mask.sum().clamp_min(1)
    a, b = F.normalize(img, dim=1), F.normalize(txt, dim=1)

    def term(sim):
        return crit.irrelevant_weight * torch.where(mask, F.relu(sim - crit.delta), 0.0).sum() / n_pairs

    return pos_i + neg_i + pos_t + neg_t + term(a @ a.T) + term(b @ b.T) + term(a @ b.T)


def setup(backbone: str, k: int, steps: int):
    """K freshly built systems (seeds 0..K-1), each with `steps` batches from its own shuffled loader, and the recipe."""
    cfg = compose_config([f"backbone={backbone}", *DATASETS[backbone]])
    bench = build_benchmark(cfg.dataset)
    systems = [build_system(cfg.backbone, bench.num_classes, int(cfg.bits), seed) for seed in range(k)]
    recipe = cfg.backbone.train
    batches = []
    for seed, system in enumerate(systems):
        loader = make_loader(bench.train, system, recipe.batch_size, shuffle=True, seed=seed, drop_last=True)
        own = []
        while len(own) < steps + WARMUP:
            own.extend(loader)
        batches.append(own[: steps + WARMUP])
    return systems, batches, recipe


class Sequential:
    """K systems, each stepped on its own as `ppp.train.train` steps it."""

    def __init__(self, systems, recipe):
        self.systems = [copy.deepcopy(s).train() for s in systems]
        self.optimizers = [recipe_optimizers(s, recipe) for s in self.systems]
        self.clip = read(TrainRecipe, recipe).grad_clip

    def step(self, batches):
        for system, optimizers, batch in zip(self.systems, self.optimizers, batches):
            loss = system.loss(batch)
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            if self.clip:
                torch.nn.utils.clip_grad_norm_(system.parameters(), self.clip)
            for o in optimizers:
                o.step()

    def parameters(self) -> dict[str, torch.Tensor]:
        return self._stacked("named_parameters")

    def buffers(self) -> dict[str, torch.Tensor]:
        return self._stacked("named_buffers")

    def _stacked(self, kind: str) -> dict[str, torch.Tensor]:
        tensors = [dict(getattr(Loss(s), kind)()) for s in self.systems]
        return {name: torch.stack([t[name] for t in tensors]).detach() for name in tensors[0]}


class Vectorised:
    """The K systems' tensors stacked and stepped in one `vmap(grad(loss))` and one optimiser pass."""

    def __init__(self, systems, recipe, used: set[str], loss=None):
        modules = [Loss(copy.deepcopy(s).train(), loss) for s in systems]
        params, self.buffers = stack_module_state(modules)
        self.base = copy.deepcopy(modules[0]).to("meta")
        self.clip = read(TrainRecipe, recipe).grad_clip
        names = {id(p): n for n, p in modules[0].named_parameters()}
        self.groups = {names[id(p)]: g for g in modules[0].system.param_groups(recipe) for p in g["params"]}
        self.params = {n: p.detach() for n, p in params.items() if n in used}
        self.fixed = {n: p.detach() for n, p in params.items() if n not in used}
        self.state = {n: {} for n in self.params}
        self.t = 0

        def one(params, fixed, buffers, batch):
            return functional_call(self.base, {**params, **fixed, **buffers}, (batch,))

        self.grads = vmap(grad(one), randomness="different")

    def step(self, batches):
        batch = {key: torch.stack([b[key] for b in batches]) for key in batches[0]}
        grads = self.grads(self.params, self.fixed, self.buffers, batch)
        if self.clip:  # clip_grad_norm_ per model
            norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
            coef = (self.clip / (norms + 1e-6)).clamp(max=1.0)
            for g in grads.values():
                g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))
        self.t += 1
        for name, p in self.params.items():  # torch's single-tensor SGD and AdamW, in place
            g, group, state = grads[name], self.groups[name], self.state[name]
            lr, decay = group["lr"], group["weight_decay"]
            if group["optimizer"] == "sgd":
                g.add_(p, alpha=decay)
                if self.t == 1:
                    state["buf"] = g.clone()
                else:
                    state["buf"].mul_(group.get("momentum", 0.9)).add_(g)
                p.add_(state["buf"], alpha=-lr)
            else:
                b1, b2 = group.get("betas", (0.9, 0.98))
                if self.t == 1:
                    state.update(m=torch.zeros_like(p), v=torch.zeros_like(p), denom=torch.empty_like(p))
                p.mul_(1 - lr * decay)
                state["m"].lerp_(g, 1 - b1)
                state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = torch.sqrt(state["v"], out=state["denom"]).div_((1 - b2**self.t) ** 0.5)
                p.addcdiv_(state["m"], denom.add_(group.get("eps", 1e-6)), value=-lr / (1 - b1**self.t))

    def parameters(self) -> dict[str, torch.Tensor]:
        return {**self.params, **self.fixed}


def reached(system, batch) -> set[str]:
    """The parameters one backward reaches; the others (e.g. CLIP's logit scale, unused by the hashing loss)
    get no gradient, so the sequential optimisers leave them alone and the vectorised ones hold them fixed."""
    module = Loss(copy.deepcopy(system).train())
    module(batch).backward()
    return {n for n, p in module.named_parameters() if p.grad is not None}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |a - b| over the floating-point tensors; equal entries (an attention mask's -inf) count 0."""
    return max(float(torch.where(a[n] == b[n], 0.0, (a[n] - b[n]).abs()).max()) for n in a if a[n].is_floating_point())


def check(systems, batches, recipe, loss) -> dict[str, float]:
    """One step of each variant from the same weights and batches, dropout off: the largest |difference|."""
    systems = [copy.deepcopy(s) for s in systems]
    for module in (m for s in systems for m in s.modules()):
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    first = [b[0] for b in batches]
    seq, vec = Sequential(systems, recipe), Vectorised(systems, recipe, reached(systems[0], first[0]), loss)
    seq.step(first)
    vec.step(first)
    return {
        "max_abs_dparam": max_difference(seq.parameters(), vec.parameters()),
        "max_abs_dbuffer": max_difference(seq.buffers(), vec.buffers) if vec.buffers else 0.0,
    }


def vectorised_loss(systems, batches, recipe):
    """The loss the vectorised variant can use: the project's own, else (its error recorded) the masked DSPH form."""
    try:
        Vectorised(systems, recipe, reached(systems[0], batches[0][0])).step([b[0] for b in batches])
        return None, None
    except RuntimeError as err:
        return masked_dsph_loss, str(err).splitlines()[0]


def measure(backbone: str, k: int, threads: int, steps: int) -> dict:
    torch.set_num_threads(threads)
    systems, batches, recipe = setup(backbone, k, steps)
    loss, error = vectorised_loss(systems, batches, recipe)
    seq = Sequential(systems, recipe)
    vec = Vectorised(systems, recipe, reached(systems[0], batches[0][0]), loss)
    times: dict[str, list[float]] = {"sequential": [], "vectorised": []}
    for step in range(steps + WARMUP):
        for name, variant in (("sequential", seq), ("vectorised", vec)):
            start = time.perf_counter()
            variant.step([b[step] for b in batches])
            if step >= WARMUP:
                times[name].append((time.perf_counter() - start) / k)
    seq_s, vec_s = (statistics.median(times[n]) for n in ("sequential", "vectorised"))
    return {
        "backbone": backbone,
        "models": k,
        "threads": threads,
        "sequential_s_per_model_step": seq_s,
        "vectorised_s_per_model_step": vec_s,
        "speedup": seq_s / vec_s,
        **check(systems, batches, recipe, loss),
        "vmap_error": error,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", choices=sorted(DATASETS), default="clip_tiny")
    parser.add_argument("--models", type=int, nargs="+", default=[4], help="K, the models trained at once")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each variant")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    rows = []
    for threads in args.threads:
        for k in args.models:
            rows.append(measure(args.backbone, k, threads, args.steps))
            r = rows[-1]
            print(
                f"{r['backbone']} K={k} threads={threads}: sequential {r['sequential_s_per_model_step']:.4f} "
                f"vectorised {r['vectorised_s_per_model_step']:.4f} s/model/step, speed-up {r['speedup']:.2f}, "
                f"max|dparam| {r['max_abs_dparam']:.1e}, max|dbuffer| {r['max_abs_dbuffer']:.1e}, "
                f"load {r['load']:.2f}" + (f"; project loss under vmap: {r['vmap_error']}" if r["vmap_error"] else ""),
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
