"""Run directories -> one tidy frame (a row per run x metric), each run counted once.

A run is a folder with `metrics.json` (and optionally `arrays.npz`). Sweeps nest runs in numbered
subfolders, and a resumed sweep may leave the same run (same `run_hash`) in several folders: the first
one found, in sorted path order, counts. Reference models (Original, Bad, Retrain) come both from their
own runs and from the `references` stored in other runs; their rows are deduplicated per
(dataset, backbone, bits, seed, forget, reference), preferring a reference's own run. A dataset is
named by its name plus the dataset settings that differ between the runs read together, e.g.
`digit_scenes (topic_prob=0.8)`, so runs (and references) on different data never pool.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ppp import identity
from ppp.cache import config_identity
from ppp.errors import ConfigError
from ppp.runs import FINISHED_ELSEWHERE

log = logging.getLogger(__name__)

REFERENCES = identity.REFERENCE_METHODS  # the reference rows of every table, in table order
REPLICATE = ["seed", "sample_seed"]  # what varies between repeats of one setting
SETTING = ["dataset", "task", "backbone", "forget", "n_forget", "bits"]
REFERENCE_KEY = ["dataset", "backbone", "bits", "seed", "forget", "method"]


@dataclass
class Run:
    """One `metrics.json` and the folder it lies in."""

    dir: Path
    record: dict
    variant: str = field(default="")
    dataset: str = field(default="")

    @property
    def hash(self) -> str:
        """The runner's `run_hash`; for a file without one, a hash of what it says it ran."""
        if "run_hash" in self.record:
            return str(self.record["run_hash"])
        what = {k: v for k, v in self.record.items() if k not in ("metrics", "references", "provenance")}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]

    @property
    def method(self) -> str:
        return str(self.record["method"])

    @property
    def task(self) -> str:
        if "task" in self.record:
            return str(self.record["task"])
        return "classification" if any(k.endswith("/acc") for k in self.record["metrics"]) else "retrieval"

    @property
    def identity(self) -> dict:
        """The setting and replicate of the run (config fields shared by every row it gives)."""
        r = self.record
        forget = [str(c) for c in r.get("forget", [])]
        items = r.get("forget_set")
        return {
            "dataset": self.dataset or r["dataset"],
            "task": self.task,
            "backbone": r["backbone"],
            "forget": ",".join(forget) if items is None else item_request(r["config"]["forget_set"]),
            "n_forget": len(forget) if items is None else len(items["positions"]),
            "bits": int(r["bits"]),
            "seed": int(r["seed"]),
            "sample_seed": int(r.get("sample_seed", r["seed"])),
            "delta": r.get("config", {}).get("delta"),
        }

    @property
    def choices(self) -> dict:
        """The config groups the run was composed from (`choices` of metrics.json, Hydra's
        `hydra.runtime.choices`) as `choices.<group>` columns; nothing for runs from before they were recorded."""
        return {f"choices.{k}": v for k, v in (self.record.get("choices") or {}).items() if v is not None}

    @property
    def hyperparameters(self) -> dict:
        """The method's config, flattened as `method.alpha`, ... (`name` left out)."""
        method = dict(self.record.get("config", {}).get("method", {}))
        method.pop("name", None)
        return {f"method.{k}": v for k, v in flatten(method).items()}

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """`arrays.npz` beside `metrics.json` (per-query APs, density distances), or nothing."""
        path = self.dir / "arrays.npz"
        if not path.exists():
            return {}
        with np.load(path) as data:
            return {k: data[k] for k in data.files}


def item_request(settings: dict) -> str:
    """An item forget set as a table names it, e.g. `share 0.01`, `contributors 3+7`, `pairs ten_pairs.txt`, with
    `in 5 requests` for a stream (no comma: class lists are comma-joined)."""
    kind = settings["kind"]
    what = {
        "share": f"share {settings['share']} (seed {settings['share_seed']})",
        "contributor": "contributors " + "+".join(str(c) for c in settings["contributors"]),
        "pairs": f"pairs {Path(str(settings['ids_file'])).name}",
    }[kind]
    count = int(settings.get("requests", 1))
    return what + (f" in {count} requests" if count > 1 else "")


def stored(runs: list[Run], setting: dict, variant: str, key: str) -> dict[tuple, np.ndarray]:
    """An array of one model over its repeats in one setting: a run's own model is stored under
    `method/<key>`, the references it evaluated under `<name>/<key>`. Repeats are (seed, sample_seed),
    or (seed, None) for a reference, which the sample seed does not change."""
    out = {}
    for run in runs:
        identity = run.identity
        if any(identity[k] != v for k, v in setting.items()):
            continue
        name = f"method/{key}" if run.variant == variant else f"{variant}/{key}" if variant in REFERENCES else None
        repeat = (identity["seed"], None if variant in REFERENCES else identity["sample_seed"])
        if name in run.arrays and repeat not in out:
            out[repeat] = run.arrays[name]
    return out


def paired(a: dict, b: dict) -> list[tuple[tuple, tuple]]:
    """Repeats of two models that share their models' seed (and sample seed, where both have one)."""
    return [
        (ka, kb)
        for ka in sorted(a, key=str)
        for kb in sorted(b, key=str)
        if ka[0] == kb[0] and (ka[1] == kb[1] or None in (ka[1], kb[1]))
    ]


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> dotted keys; lists become strings so that they can be grouped on."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value) if isinstance(value, (list, tuple)) else value
    return out


def followed(path: Path) -> Path | None:
    """A `metrics.json`, or the one a skipped run's pointer names (None when it is gone)."""
    if path.name != FINISHED_ELSEWHERE:
        return path
    target = Path(json.loads(path.read_text())["run_dir"]) / "metrics.json"
    if not target.exists():
        log.warning("%s points to %s, which is gone", path, target)
        return None
    return target


def find_runs(dirs) -> list[Run]:
    """Every `metrics.json` under the given folders (or the files themselves), each `run_hash` once."""
    runs, seen = [], set()
    for top in map(Path, dirs):
        if not top.exists():
            raise ConfigError(f"no such folder: {top}")
        paths = [top] if top.is_file() else sorted([*top.rglob("metrics.json"), *top.rglob(FINISHED_ELSEWHERE)])
        for path in map(followed, paths):
            if path is None:
                continue
            try:
                run = Run(path.parent, json.loads(path.read_text()))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                log.warning("skipping unreadable %s: %s", path, err)
                continue
            if run.hash not in seen:
                seen.add(run.hash)
                runs.append(run)
    if not runs:
        raise ConfigError(f"no metrics.json under {', '.join(map(str, dirs))}")
    name_datasets(runs)
    name_variants(runs)
    return runs


def labelled(name: str, settings: list[dict], prefix: str, show_missing: bool = True) -> list[str]:
    """`name` plus, for each of `settings`, the keys whose values differ between them: 'ppp (lam=2)'."""
    keys = sorted({k for s in settings for k in s})
    varying = [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1]
    labels = []
    for s in settings:
        shown = [f"{k[len(prefix) :]}={show(s.get(k))}" for k in varying if show_missing or k in s]
        labels.append(name + (f" ({', '.join(shown)})" if shown else ""))
    return labels


def name_datasets(runs: list[Run]) -> None:
    """Label each run's dataset by its name plus the dataset settings that differ between the runs of that
    name (keys at their neutral default and the forget classes, shown elsewhere, left out)."""
    for name, group in groupby(runs, lambda r: r.record["dataset"]).items():
        settings = [flatten(config_identity(r.record.get("config", {}).get("dataset", {}), "dataset")) for r in group]
        settings = [{k: v for k, v in s.items() if k not in ("name", "seed")} for s in settings]
        for run, label in zip(group, labelled(name, settings, "", show_missing=False)):  # missing: neutral
            run.dataset = label


def name_variants(runs: list[Run]) -> None:
    """Label each run by its method plus the hyperparameters that differ between that method's runs on
    one dataset, e.g. 'ppp (forget_samples=20)', so that such runs never pool into one table cell."""
    for (_dataset, method), group in groupby(runs, lambda r: (r.dataset, r.method)).items():
        for run, label in zip(group, labelled(method, [r.hyperparameters for r in group], "method.")):
            run.variant = label


def show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def groupby(items, key) -> dict:
    out: dict = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


def where(frame: pd.DataFrame, **values) -> pd.DataFrame:
    """The rows whose columns hold the given values."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in values.items():
        mask &= (frame[column] == value).to_numpy()
    return frame[mask]


def numeric(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def tidy(runs: list[Run]) -> pd.DataFrame:
    """One row per run x numeric metric; references as rows of their own (source 'reference')."""
    rows = []
    for run in runs:
        base = {**run.identity, "run_hash": run.hash, "run_dir": str(run.dir), **run.choices}
        own = {**base, "method": run.method, "variant": run.variant, "source": "run", **run.hyperparameters}
        rows += [{**own, "metric": k, "value": float(v)} for k, v in run.record["metrics"].items() if numeric(v)]
        for name, metrics in run.record.get("references", {}).items():
            ref = {**base, "method": name, "variant": name, "source": "reference"}
            rows += [{**ref, "metric": k, "value": float(v)} for k, v in metrics.items() if numeric(v)]
    frame = pd.DataFrame(rows)
    is_reference = frame["method"].isin(REFERENCES)
    references = frame[is_reference].sort_values("source", key=lambda s: s != "run", kind="stable")
    references = references.drop_duplicates(REFERENCE_KEY + ["metric"])
    references = references.assign(sample_seed=pd.NA, variant=references["method"])  # fixed given the seed
    frame = pd.concat([frame[~is_reference], references], ignore_index=True)
    first = [
        "dataset",
        "task",
        "backbone",
        "forget",
        "n_forget",
        "bits",
        "seed",
        "sample_seed",
        "method",
        "variant",
        "metric",
        "value",
        "source",
        "delta",
        "run_hash",
        "run_dir",
    ]
    return frame[first + sorted(c for c in frame.columns if c not in first)]
