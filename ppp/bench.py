"""`python -m ppp.bench`: how far each fast path sits from its floor and from straightforward code.

Each section is a function registered in SECTIONS that takes the Settings and returns a Section: one
table (rows of the same columns) and notes. Every figure is the median of several timed repeats after
a warm-up. Sections: mAP and its scaling, per-sample Fisher throughput, a warm run's start-up, the
unlearning times of the methods, the cost of issue 23's N-seed forgetting quality per model seed; peak memory
sits beside the times it belongs to.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ppp.errors import ConfigError
from ppp.evaluation.map import BLOCK_ENTRIES, average_precisions, binarise, sign_distance
from ppp.registry import Registry
from ppp.utils import cli_logging, resolve_device


@dataclass
class Settings:
    size: str  # "quick" or "full": each section picks its own sizes from it
    device: torch.device
    repeats: int
    figures: Path  # where sections write their plots
    items: int | None = None  # database items of the mAP sections (None: the size's own)


@dataclass
class Section:
    title: str
    rows: list[dict]
    notes: list[str] = field(default_factory=list)


SECTIONS: Registry[Callable[[Settings], Section]] = Registry("benchmark section")


def seconds(fn: Callable, device: torch.device) -> float:
    """Wall time of one call of `fn`, with the device's queue drained before and after."""
    synchronise(device)
    start = time.perf_counter()
    fn()
    synchronise(device)
    return time.perf_counter() - start


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- mAP -----------------------------------------------------------------------------------------

MAP_SIZES = {"quick": (500, 20_000), "full": (5_000, 100_000)}  # queries x database items
MAP_BITS = (16, 32, 64)
MAP_LABELS = 80
SCALING_SIZES = {"quick": (100, (10_000, 20_000, 50_000, 100_000)), "full": (1_000, (10_000, 20_000, 50_000, 100_000))}
SCALING_BITS = 64
WARMUP_QUERIES = 50
ARGSORT_QUERIES = 500  # the per-query argsort loop is timed on at most this many queries, then scaled


def random_retrieval(n_query: int, n_db: int, bits: int, device: torch.device, seed: int = 0) -> tuple:
    """Random {-1, +1} codes and multi-hot labels over MAP_LABELS classes (about 3 per item, at least 1,
    COCO-like), for queries and database."""
    g = torch.Generator().manual_seed(seed)

    def labels(n):
        multi_hot = torch.rand(n, MAP_LABELS, generator=g) < 3 / MAP_LABELS
        multi_hot[torch.arange(n), torch.randint(MAP_LABELS, (n,), generator=g)] = True
        return multi_hot.float()

    codes = [torch.randn(n, bits, generator=g).sign() for n in (n_query, n_db)]
    return tuple(t.to(device) for t in (*codes, labels(n_query), labels(n_db)))


def floor(q, d, ql, dl) -> None:
    """What every mAP must compute: the Hamming-distance and relevance matrices, in the evaluator's blocks."""
    q, d = binarise(q), binarise(d)
    rows = max(1, BLOCK_ENTRIES // d.shape[0])
    for s in range(0, q.shape[0], rows):
        sign_distance(q[s : s + rows], d)
        _ = (ql[s : s + rows] @ dl.T) > 0  # the relevance matrix, computed and dropped


def argsort_aps(q, d, ql, dl) -> torch.Tensor:
    """The straightforward mAP of common hashing code (DSPH's calc_map_k): per query, one argsort of the
    float distances (stable here, so the order is defined), then precision at each hit."""
    bits, aps = q.shape[1], torch.zeros(q.shape[0], dtype=torch.float64)
    for i in range(q.shape[0]):
        relevant = (ql[i] @ dl.T > 0).float()
        hits = int(relevant.sum())
        if hits == 0:
            continue
        order = torch.argsort(0.5 * (bits - q[i] @ d.T), stable=True)
        positions = torch.nonzero(relevant[order]).flatten().double().cpu() + 1
        aps[i] = (torch.arange(1, hits + 1, dtype=torch.float64) / positions).mean()
    return aps


MAP_METHODS = {
    "floor": floor,
    "average": lambda *data: average_precisions(*data, ties="average"),
    "stable": lambda *data: average_precisions(*data, ties="stable"),
    "argsort": argsort_aps,
}


def first_queries(data: tuple, n: int) -> tuple:
    q, d, ql, dl = data
    return q[:n], d, ql[:n], dl


def time_map_methods(data: tuple, settings: Settings) -> dict[str, float]:
    """Median seconds of each mAP method on `data`, each warmed up on the first WARMUP_QUERIES queries.

    The methods take turns within each repeat, so a change in the machine's load hits them alike. The
    argsort baseline, a loop over queries, runs on at most ARGSORT_QUERIES of them and is scaled up."""
    inputs = {name: data for name in MAP_METHODS}
    inputs["argsort"] = first_queries(data, ARGSORT_QUERIES)
    for method in MAP_METHODS.values():
        method(*first_queries(data, WARMUP_QUERIES))
    times = {name: [] for name in MAP_METHODS}
    for _ in range(settings.repeats):
        for name, method in MAP_METHODS.items():
            times[name].append(seconds(lambda: method(*inputs[name]), settings.device))
    scale = {name: data[0].shape[0] / x[0].shape[0] for name, x in inputs.items()}
    return {name: statistics.median(t) * scale[name] for name, t in times.items()}


@SECTIONS.register("map")
def map_section(settings: Settings) -> Section:
    n_query, n_db = MAP_SIZES[settings.size]
    n_db = settings.items or n_db
    rows = []
    for bits in MAP_BITS:
        data = random_retrieval(n_query, n_db, bits, settings.device, seed=bits)
        t = time_map_methods(data, settings)
        subset = first_queries(data, ARGSORT_QUERIES)
        stable_gap = (average_precisions(*subset, ties="stable").cpu() - argsort_aps(*subset)).abs().max()
        rows.append(
            {
                "bits": bits,
                "queries": n_query,
                "items": n_db,
                "floor_s": t["floor"],
                "average_s": t["average"],
                "stable_s": t["stable"],
                "argsort_s": t["argsort"],
                "average/floor": t["average"] / t["floor"],
                "stable/floor": t["stable"] / t["floor"],
                "argsort/floor": t["argsort"] / t["floor"],
                "argsort/average": t["argsort"] / t["average"],
                "argsort/stable": t["argsort"] / t["stable"],
                "stable_vs_argsort_max_diff": float(stable_gap),
            }
        )
    return Section(
        f"mAP@all, {n_query:,} queries x {n_db:,} items, {MAP_LABELS} labels (seconds, median of {settings.repeats})",
        rows,
        [
            "floor: the Hamming-distance and relevance matrices alone; argsort: one stable argsort per "
            f"query (DSPH's calc_map_k), timed on the first {ARGSORT_QUERIES} queries and scaled to all; "
            f"stable_vs_argsort_max_diff: largest per-query AP difference between the two on those queries"
        ],
    )


@SECTIONS.register("map_scaling")
def map_scaling_section(settings: Settings) -> Section:
    n_query, sizes = SCALING_SIZES[settings.size]
    if settings.items:  # up to the asked size
        sizes = tuple(n for n in sizes if n < settings.items) + (settings.items,)
    rows = []
    for n_db in sizes:
        t = time_map_methods(random_retrieval(n_query, n_db, SCALING_BITS, settings.device), settings)
        rows.append({"items": n_db, **{f"{name}_s": seconds for name, seconds in t.items()}})
    slopes = {name: loglog_slope([r["items"] for r in rows], [r[f"{name}_s"] for r in rows]) for name in MAP_METHODS}
    figure = settings.figures / "map_scaling.png"
    plot_scaling(
        rows,
        slopes,
        figure,
        f"mAP@all time vs database size ({n_query:,} queries, {SCALING_BITS} bits, {settings.device.type})",
    )
    return Section(
        f"mAP@all time against database size ({n_query:,} queries, {SCALING_BITS} bits; seconds)",
        rows,
        ["log-log slope (1 = linear): " + ", ".join(f"{n} {s:.2f}" for n, s in slopes.items()), f"plot: {figure}"],
    )


def loglog_slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = torch.tensor(x, dtype=torch.float64).log(), torch.tensor(y, dtype=torch.float64).log()
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def plot_scaling(rows: list[dict], slopes: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    x = [r["items"] for r in rows]
    for name, slope in slopes.items():
        ax.loglog(x, [r[f"{name}_s"] for r in rows], marker="o", label=f"{name} (slope {slope:.2f})")
    ref = rows[0]["floor_s"]
    ax.loglog(x, [ref * n / x[0] for n in x], "k:", label="linear (slope 1)")
    ax.set_xlabel("database items")
    ax.set_ylabel("seconds (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- per-sample Fisher ---------------------------------------------------------------------------

# (model, image px, samples) per size; models at random initialisation, as the Fisher's cost does not
# depend on the weights. ViT-B/32 only at full size: one of its per-sample loops takes minutes on a CPU.
FISHER_MODELS = {
    "quick": (("clip_tiny", 32, 16), ("resnet18", 32, 8), ("resnet50", 32, 4)),
    "full": (("clip_tiny", 32, 256), ("resnet18", 32, 64), ("resnet50", 32, 64), ("vit_b32", 224, 8)),
}
FISHER_CONTEXT = 64  # samples of the per-sample loss's context batch (fisher_context_size's default)


def fisher_system(model: str, px: int):
    """A randomly initialised system and training samples for it (digit_scenes for CLIP, digits for ResNets)."""
    from ppp.data.digits import digit_scenes, digits
    from ppp.models.clip_hashing import ClipHashingSystem
    from ppp.models.resnet import ClassifierSystem

    torch.manual_seed(0)
    if model.startswith("resnet"):
        return ClassifierSystem(model, num_classes=10, image_size=px, small_input=False), digits(seed=0).train
    arch, length = {"clip_tiny": ("clip_tiny", None), "vit_b32": ("ViT-B-32", 32)}[model]
    system = ClipHashingSystem(arch, bits=16, num_classes=10, context_length=length)
    return system, digit_scenes(n_total=900, n_query=100, n_train=600, n_val=0, seed=0).train


def loop_fisher(system, data, device, context: dict) -> dict[str, torch.Tensor]:
    """The straightforward per-sample Fisher: one backward per sample, squared gradients summed."""
    from ppp.fisher import trainable_parameters
    from ppp.models.base import batch_to
    from ppp.train import make_loader

    batch = batch_to(next(iter(make_loader(data, system, len(data)))), device)
    params = trainable_parameters(system.net)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(data)):
        system.net.zero_grad(set_to_none=True)
        system.sample_loss(system.net, {k: v[i] for k, v in batch.items()}, context).backward()
        for n, p in params.items():
            if p.grad is not None:
                total[n] += p.grad**2
    system.net.zero_grad(set_to_none=True)
    return {n: t.div_(len(data)).cpu() for n, t in total.items()}


def batch_gradient(system, data, device) -> None:
    """The floor: one backward pass of the batch-mean loss over the same samples."""
    from ppp.models.base import batch_to
    from ppp.train import make_loader

    system.net.zero_grad(set_to_none=True)
    system.loss(batch_to(next(iter(make_loader(data, system, len(data)))), device)).backward()
    system.net.zero_grad(set_to_none=True)


def max_relative_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |a - b| of a parameter tensor relative to that tensor's largest value in b."""
    return max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-30)) for n in b)


@SECTIONS.register("fisher")
def fisher_section(settings: Settings) -> Section:
    from ppp.fisher import functorch_fisher, loss_context, per_sample_fisher, uses_context, uses_hooks
    from ppp.memory import PeakMemory

    rows = []
    for model, px, n in FISHER_MODELS[settings.size]:
        system, train = fisher_system(model, px)
        system.to(settings.device).eval()
        data = train.subset(range(n))
        context = (
            loss_context(system, train.subset(range(n, n + FISHER_CONTEXT)), settings.device)
            if uses_context(system)
            else {}
        )
        runs = {
            "path": lambda: per_sample_fisher(system, data, settings.device, context),
            "torch_func": lambda: functorch_fisher(system, data, settings.device, context),
            "loop": lambda: loop_fisher(system, data, settings.device, context),
            "floor": lambda: batch_gradient(system, data, settings.device),
        }
        hooks = uses_hooks(system)
        if not hooks:
            del runs["torch_func"]  # it is the path
        with PeakMemory(settings.device) as memory:
            path = runs["path"]()
        gap = max_relative_gap(path, runs["loop"]())
        runs["floor"]()
        times = {name: [] for name in runs}
        for _ in range(settings.repeats):
            for name, run in runs.items():
                times[name].append(seconds(run, settings.device))
        rate = {name: n / statistics.median(t) for name, t in times.items()}
        rate.setdefault("torch_func", rate["path"])
        rows.append(
            {
                "model": model,
                "px": px,
                "samples": n,
                "engine": "hooks" if hooks else "torch.func",
                "path_per_s": rate["path"],
                "torch_func_per_s": rate["torch_func"],
                "loop_per_s": rate["loop"],
                "floor_per_s": rate["floor"],
                "path/loop": rate["path"] / rate["loop"],
                "floor/path": rate["floor"] / rate["path"],
                "path_peak_mb": memory.mb,
                "path_vs_loop_max_rel_diff": gap,
            }
        )
        system = runs = None  # free the model before the next one is built
    return Section(
        f"Per-sample Fisher diagonal, samples per second (median of {settings.repeats})",
        rows,
        [
            "path: ppp.fisher.per_sample_fisher (chunks of 32); torch_func: vmap(grad) over the whole "
            "network (the path before issue 10); loop: one backward per sample; floor: one backward of "
            "the batch-mean loss over the same samples. Random initialisation; ResNets with their "
            "configs' stem (small_input=false)."
        ],
    )


# --- whole runs ------------------------------------------------------------------------------------

RUN_SIZES = {  # overrides of the embedded default run per size
    "quick": [
        "dataset.n_total=280",
        "dataset.n_query=40",
        "dataset.n_train=120",
        "dataset.n_val=40",
        "backbone.train.epochs=1",
        "backbone.train.batch_size=32",
    ],
    "full": [],
}
UNLEARNING_METHODS = ("ppp", "ssd", "ssd_per_sample", "fisher_zero", "finetune", "retrain")  # rows, in run order
# Rows that are not a method with its defaults: SSD on PPP's Fisher mode, PPP's like-for-like comparison.
UNLEARNING_OVERRIDES = {"ssd_per_sample": ["method=ssd", "method.fisher_mode=per_sample"]}


def run_overrides(settings: Settings, root: Path, sizes: dict[str, list[str]] = RUN_SIZES) -> list[str]:
    return [
        *sizes[settings.size],
        f"device={settings.device}",
        f"cache_dir={root / 'cache'}",
        f"run_index={root / 'index'}",
        "skip_finished=false",
    ]


def execute_run(overrides: list[str], root: Path) -> dict:
    """One run in this process (imports warm), as `python run.py OVERRIDES` would do it."""
    from ppp.config import compose_config
    from ppp.experiment import execute

    cfg = compose_config([*overrides, f"out_dir={root / 'out'}"])
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own table is not the benchmark's
        return execute(cfg)


def quick_note(settings: Settings) -> str:
    """The run overrides of the quick size, for a section's notes (empty at the full size)."""
    return "Quick size: " + " ".join(RUN_SIZES["quick"]) if settings.size == "quick" else ""


def import_seconds(module: str) -> float:
    """Wall time of a fresh interpreter that imports `module` and exits."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - start


@SECTIONS.register("startup")
def startup_section(settings: Settings) -> Section:
    """A warm `python run.py` (every model and Fisher cached) against what it must do: import torch,
    unlearn, evaluate the unlearned model; and against that floor plus importing open_clip, which the
    CLIP backbone needs and the project does not control."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        overrides = run_overrides(settings, root)
        command = [
            sys.executable,
            "-m",
            "ppp.cli",
            *overrides,
            f"hydra.run.dir={root / 'hydra'}",
        ]
        subprocess.run(command, check=True, capture_output=True)  # cold: trains and caches everything
        for _ in range(settings.repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            wall = time.perf_counter() - start
            torch_s, open_clip_s = import_seconds("torch"), import_seconds("open_clip")
            metrics = json.loads(next((root / "hydra").rglob("metrics.json")).read_text())["metrics"]
            work = metrics["time/unlearn_s"] + metrics["time/evaluate_s"]
            rows.append(
                {
                    "run_wall_s": wall,
                    "import_torch_s": torch_s,
                    "import_open_clip_s": open_clip_s,
                    "unlearn_s": metrics["time/unlearn_s"],
                    "evaluate_s": metrics["time/evaluate_s"],
                    "overhead_s": wall - torch_s - work,
                    "run/floor": wall / (torch_s + work),
                    "overhead_beyond_open_clip_s": wall - open_clip_s - work,
                }
            )
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return Section(
        f"Warm `python run.py` (PPP, every model and Fisher cached; seconds, median of {settings.repeats})",
        [median],
        [
            "floor = import torch (a bare interpreter) + unlearning + evaluation of the unlearned model; "
            "overhead = run_wall_s - floor: the rest of the imports, building the dataset, loading the "
            "cached models, the reference rows' cached metrics and writing the results. "
            "overhead_beyond_open_clip_s: the same with a bare interpreter that imports open_clip (torch, "
            "torchvision, timm and torch._dynamo with it) in place of torch alone. " + quick_note(settings)
        ],
    )


TRIAL_SEARCH = "ppp_digit_scenes"


@SECTIONS.register("trial")
def trial_section(settings: Settings) -> Section:
    """A warm search trial (`python -m ppp.tune`: every setting's models, Fisher and dataset cached, imports
    warm) against the evaluation of its unlearned models alone."""
    from ppp.tune import tune

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        search = [f"hparams_search={TRIAL_SEARCH}", *run_overrides(settings, root), f"tune.dir={root / 'tune'}"]
        search.append("tune.grid.forget=[[six]]")  # one forget set: the trial measured before the forget-set grid
        with contextlib.redirect_stdout(io.StringIO()):
            tune([*search, "tune.n_trials=1"])  # cold: trains every setting's models, computes the Fisher
            study = tune([*search, f"tune.n_trials={1 + settings.repeats}"])
    rows = []
    for trial in study.get_trials(deepcopy=False)[1:]:
        attrs = trial.user_attrs
        timed = {
            t: sum(v for k, v in attrs.items() if k.startswith(f"{t}[")) for t in ("time/unlearn_s", "time/evaluate_s")
        }
        rows.append(
            {
                "runs": sum(k.startswith("time/evaluate_s[") for k in attrs),
                "trial_s": attrs["time/trial_s"],
                "evaluate_s": timed["time/evaluate_s"],
                "unlearn_s": timed["time/unlearn_s"],
                "rest_s": attrs["time/trial_s"] - timed["time/evaluate_s"] - timed["time/unlearn_s"],
                "trial/evaluate": attrs["time/trial_s"] / timed["time/evaluate_s"],
            }
        )
    median = sorted(rows, key=lambda r: r["trial_s"])[(len(rows) - 1) // 2]  # one trial: its columns add up
    return Section(
        f"Warm search trial (`python -m ppp.tune hparams_search={TRIAL_SEARCH}`, in one process; "
        f"seconds, the median of {len(rows)} trials)",
        [median],
        [
            "trial_s: one trial, every setting of tune.grid (one run each); evaluate_s: the evaluation of "
            "the unlearned models alone (the runs' time/evaluate_s); unlearn_s: their unlearning; rest_s: "
            "each run's config (composed once per setting), loading the cached models and Fisher, the "
            "reference rows, writing the results. Target: trial/evaluate at most 1.5. " + quick_note(settings)
        ],
    )


UNLEARNING_SETTINGS = {  # label -> its overrides per size: the embedded default, and Table 1's backbone on digits
    "digit_scenes, clip_tiny": RUN_SIZES,
    "digits, resnet50": {
        "quick": ["dataset=digits", "backbone=resnet50", "dataset.per_class=40", "backbone.train.epochs=1"],
        "full": ["dataset=digits", "backbone=resnet50"],
    },
}


@SECTIONS.register("unlearning")
def unlearning_section(settings: Settings) -> Section:
    """Each method's unlearning time in each of UNLEARNING_SETTINGS, cold (no Fisher cached; models cached)
    and warm, with its peak memory; Retrain's is its training time."""
    rows, same_mode = [], []
    for label, sizes in UNLEARNING_SETTINGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            overrides = run_overrides(settings, root, sizes)
            execute_run([*overrides, "method=original", "references=[original,retrain]"], root)  # trains both models
            timed = []
            for method in UNLEARNING_METHODS:
                chosen = UNLEARNING_OVERRIDES.get(method, [f"method={method}"])
                runs = [execute_run([*overrides, *chosen, "references=[]"], root)["metrics"] for _ in range(2)]
                key = "time/train_s" if method == "retrain" else "time/unlearn_s"
                timed.append(
                    {
                        "setting": label,
                        "method": method,
                        "cold_s": runs[0][key],
                        "warm_s": runs[1][key],
                        "peak_mb": runs[0]["mem/peak_mb"],
                    }
                )
        by_name = {r["method"]: r for r in timed}
        for row in timed:
            row["retrain/cold"] = by_name["retrain"]["cold_s"] / row["cold_s"]
            row["retrain/warm"] = by_name["retrain"]["cold_s"] / row["warm_s"]
        rows += timed
        if {"ppp", "ssd_per_sample"} <= set(by_name):
            ppp, ssd = by_name["ppp"], by_name["ssd_per_sample"]
            same_mode.append(
                f"{label}: PPP / SSD on the same (per-sample) Fisher mode: cold "
                f"{ppp['cold_s'] / ssd['cold_s']:.2f}x, warm {ppp['warm_s'] / ssd['warm_s']:.2f}x "
                f"(target: at most 1.5x)"
            )
    return Section(
        "Unlearning time (each setting's defaults, 16 bits on digit_scenes; seconds, one run each)",
        rows,
        [
            "cold: the first run (models cached, no Fisher); warm: the same run again (Fisher cached); "
            "Retrain: its training time (cached models report it too); retrain/x: Retrain's time over "
            "the method's. peak_mb: ppp.memory.PeakMemory of the unlearning step (cold). ssd_per_sample: "
            "method=ssd method.fisher_mode=per_sample. "
            + (
                "Quick size: "
                + "; ".join(f"{label}: {' '.join(sizes['quick'])}" for label, sizes in UNLEARNING_SETTINGS.items())
                if settings.size == "quick"
                else ""
            ),
            *same_mode,
        ],
    )


FORGETTING_BENCHMARKS = {  # each embedded benchmark's run overrides per size
    "digit_scenes": RUN_SIZES,
    "digits": {
        "quick": [
            "dataset=digits",
            "dataset.per_class=40",
            "dataset.population_per_class=10",
            "backbone.train.epochs=1",
        ],
        "full": ["dataset=digits"],
    },
}
FORGETTING_METHODS = ("amnesiac", "ssd")  # a trained and a Fisher method; every other method lies between
FORGETTING_N = (16, 32)


@SECTIONS.register("forgetting")
def forgetting_section(settings: Settings) -> Section:
    """Issue 23's cost per model seed on each embedded benchmark: training the Original and Retrain, each method's
    unlearning and evaluation with the per-example statistic, and the whole N-seed experiment projected from them
    (one process; every method of Tables 1 / 2 would take about as long as the methods timed here on average)."""
    rows = []
    for benchmark, sizes in FORGETTING_BENCHMARKS.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            overrides = [*run_overrides(settings, root, sizes), "evaluator.example_statistics=true"]
            reference = execute_run([*overrides, "method=retrain"], root)["metrics"]  # trains the Retrain
            original = execute_run([*overrides, "method=original"], root)["metrics"]
            train_s = original["time/train_s"] + reference["time/train_s"]
            for method in FORGETTING_METHODS:
                m = execute_run([*overrides, f"method={method}", "references=[]"], root)["metrics"]
                per_method = m["time/unlearn_s"] + m["time/evaluate_s"]
                rows.append(
                    {
                        "benchmark": benchmark,
                        "method": method,
                        "train_original_s": original["time/train_s"],
                        "train_retrain_s": reference["time/train_s"],
                        "unlearn_s": m["time/unlearn_s"],
                        "evaluate_s": m["time/evaluate_s"],
                        "statistic_s": m["time/example_statistics_s"],
                        "per_seed/one_training": (train_s + per_method) / original["time/train_s"],
                        **{f"N={n}, 10 methods_h": n * (train_s + 10 * per_method) / 3600 for n in FORGETTING_N},
                    }
                )
    return Section(
        "Forgetting quality over N seeds: cost per model seed (seconds; one process)",
        rows,
        [
            "train_*: the Original's and Retrain's training on one seed; unlearn_s / evaluate_s: the method's, its "
            "evaluation including the per-example statistic (statistic_s); per_seed/one_training: a seed's Original, "
            "Retrain and this method over one training; N=…_h: N seeds × (both trainings + 10 methods at this "
            "method's cost), hours in one process (the issue's targets: N = 16 in 2 h, N = 32 in 8 h). "
            + (
                "Quick size: " + "; ".join(f"{b}: {' '.join(z['quick'])}" for b, z in FORGETTING_BENCHMARKS.items())
                if settings.size == "quick"
                else ""
            )
        ],
    )


# --- output --------------------------------------------------------------------------------------


def machine(device: torch.device) -> dict:
    """What the numbers were measured on."""
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if value and abs(value) < 1e-3 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_outputs(path: Path, info: dict, command: str, sections: dict[str, Section]) -> None:
    """FILE as JSON (machine, command, every section), and one CSV per section beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "command": command, "sections": {name: asdict(s) for name, s in sections.items()}}
    path.write_text(json.dumps(payload, indent=2))
    for name, s in sections.items():
        with open(path.with_name(f"{path.stem}.{name}.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(s.rows[0]))
            writer.writeheader()
            writer.writerows(s.rows)


def main(argv: list[str] | None = None) -> dict[str, Section]:
    parser = argparse.ArgumentParser(prog="python -m ppp.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes that run in a few CPU minutes")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to FILE, and CSVs beside it")
    parser.add_argument("--only", help=f"comma-separated sections to run, of: {', '.join(SECTIONS.names())}")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per figure (the median is reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--figures", type=Path, default=Path("outputs/bench"), help="where plots are written")
    parser.add_argument(
        "--items",
        type=int,
        help="database items of the mAP sections (default: 100,000 full, 20,000 quick; the scaling plot goes up to it)",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    cli_logging(logging.WARNING)  # the runs' progress notes (cache reuse, ...) are not the benchmark's output
    try:  # bad values fail before anything runs
        if args.items is not None and args.items < 1:
            raise ConfigError(f"--items must be a positive number of database items, got {args.items}")
        settings = Settings(
            "quick" if args.quick else "full", resolve_device(args.device), args.repeats, args.figures, args.items
        )
        runners = {name: SECTIONS.get(name) for name in (args.only.split(",") if args.only else SECTIONS.names())}
    except ConfigError as e:
        parser.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine(settings.device)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    sections = {}
    for name, run in runners.items():
        sections[name] = section = run(settings)
        print(f"\n## {section.title}\n\n{markdown_table(section.rows)}\n", flush=True)
        for note in section.notes:
            print(f"- {note}")
    if args.json:
        write_outputs(args.json, info, " ".join(["python -m ppp.bench", *argv]), sections)
    return sections


if __name__ == "__main__":
    main()
