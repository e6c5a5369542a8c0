"""`python -m ppp.bench`: how far each fast path sits from its floor and from straightforward code.

Each section is a function registered in SECTIONS that takes the Settings and returns a Section: one
table (rows of the same columns) and notes. Every figure is the median of several timed repeats after
a warm-up. Sections still to come (per-sample Fisher throughput, warm run start-up, unlearning times,
peak memory) register the same way.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ppp.errors import ConfigError
from ppp.evaluation.map import BLOCK_ENTRIES, average_precisions, binarise, sign_distance
from ppp.registry import Registry
from ppp.utils import resolve_device


@dataclass
class Settings:
    size: str             # "quick" or "full": each section picks its own sizes from it
    device: torch.device
    repeats: int
    figures: Path         # where sections write their plots


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
        sign_distance(q[s:s + rows], d)
        (ql[s:s + rows] @ dl.T) > 0


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
    rows = []
    for bits in MAP_BITS:
        data = random_retrieval(n_query, n_db, bits, settings.device, seed=bits)
        t = time_map_methods(data, settings)
        subset = first_queries(data, ARGSORT_QUERIES)
        stable_gap = (average_precisions(*subset, ties="stable").cpu() - argsort_aps(*subset)).abs().max()
        rows.append({
            "bits": bits, "queries": n_query, "items": n_db,
            "floor_s": t["floor"], "average_s": t["average"], "stable_s": t["stable"], "argsort_s": t["argsort"],
            "average/floor": t["average"] / t["floor"], "stable/floor": t["stable"] / t["floor"],
            "argsort/floor": t["argsort"] / t["floor"],
            "argsort/average": t["argsort"] / t["average"], "argsort/stable": t["argsort"] / t["stable"],
            "stable_vs_argsort_max_diff": float(stable_gap),
        })
    return Section(f"mAP@all, {n_query:,} queries x {n_db:,} items, {MAP_LABELS} labels (seconds, median of "
                   f"{settings.repeats})", rows,
                   ["floor: the Hamming-distance and relevance matrices alone; argsort: one stable argsort per "
                    f"query (DSPH's calc_map_k), timed on the first {ARGSORT_QUERIES} queries and scaled to all; "
                    f"stable_vs_argsort_max_diff: largest per-query AP difference between the two on those queries"])


@SECTIONS.register("map_scaling")
def map_scaling_section(settings: Settings) -> Section:
    n_query, sizes = SCALING_SIZES[settings.size]
    rows = []
    for n_db in sizes:
        t = time_map_methods(random_retrieval(n_query, n_db, SCALING_BITS, settings.device), settings)
        rows.append({"items": n_db, **{f"{name}_s": seconds for name, seconds in t.items()}})
    slopes = {name: loglog_slope([r["items"] for r in rows], [r[f"{name}_s"] for r in rows]) for name in MAP_METHODS}
    figure = settings.figures / "map_scaling.png"
    plot_scaling(rows, slopes, figure, f"mAP@all time vs database size ({n_query:,} queries, {SCALING_BITS} bits, "
                                       f"{settings.device.type})")
    return Section(f"mAP@all time against database size ({n_query:,} queries, {SCALING_BITS} bits; seconds)", rows,
                   ["log-log slope (1 = linear): " + ", ".join(f"{n} {s:.2f}" for n, s in slopes.items()),
                    f"plot: {figure}"])


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


# --- output --------------------------------------------------------------------------------------

def machine(device: torch.device) -> dict:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device)}
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
    payload = {"machine": info, "command": command,
               "sections": {name: asdict(s) for name, s in sections.items()}}
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
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:  # bad values fail before anything runs
        settings = Settings("quick" if args.quick else "full", resolve_device(args.device), args.repeats, args.figures)
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
