"""A run's identity, its finished-runs index and its output files.

A run is identified by the content hash of its resolved config, leaving out what cannot change its
numbers (where files go, worker counts). The index (`run_index`/<hash>.json) says where a finished run
wrote its results and does not depend on timestamped sweep folders, so a repeated or resumed sweep
skips what is done. Results are written atomically and the index entry last: a run killed at any
moment leaves nothing that looks finished.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ppp import identity
from ppp.cache import atomic_write, config_identity, content_key

ROOT = Path(__file__).resolve().parents[1]


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def run_hash(cfg: DictConfig) -> str:
    """The resolved config without what never changes the numbers (paths, worker counts) and without
    new keys at their neutral default (`NEUTRAL_DEFAULTS`), so that adding a key keeps finished runs finished;
    what is left out is declared in ppp/identity.py."""
    neutral = identity.NEUTRAL_DEFAULTS
    config = {
        k: config_identity(v, k, never_keyed=identity.RUN_HASH_NEVER_KEYED)
        for k, v in resolved(cfg).items()
        if k not in identity.NOT_IN_RUN_HASH and not (k in neutral and v == neutral[k])
    }
    return content_key(config)


def finished(cfg: DictConfig, key: str) -> dict | None:
    """The recorded result of a finished run with this hash, or None (also when its files are gone)."""
    entry = Path(cfg.run_index) / f"{key}.json"
    if not entry.exists():
        return None
    record = json.loads(entry.read_text())
    metrics_file = Path(record["run_dir"]) / "metrics.json"
    if not metrics_file.exists():
        return None
    result = json.loads(metrics_file.read_text())
    return result if result.get("run_hash") == key else None


FINISHED_ELSEWHERE = "finished_elsewhere.json"


def point_to_finished(out: Path, done: dict) -> None:
    """A skipped run leaves, in its own folder, a pointer to the folder that holds its results, so that a
    report of this sweep alone still counts it (`ppp.report` follows the pointer)."""
    if Path(done["run_dir"]).resolve() == out.resolve():
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(
        out / FINISHED_ELSEWHERE,
        json.dumps({"run_hash": done["run_hash"], "run_dir": str(Path(done["run_dir"]).resolve())}).encode(),
    )


def write_result(cfg: DictConfig, out: Path, result: dict, arrays: dict[str, np.ndarray]) -> Path:
    """arrays.npz, then metrics.json, then the index entry: each file atomic, the index last."""
    out.mkdir(parents=True, exist_ok=True)
    if arrays:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write(out / "arrays.npz", buf.getvalue())
    atomic_write(out / "metrics.json", json.dumps(result, indent=2, default=_json_default).encode())
    atomic_write(
        Path(cfg.run_index) / f"{result['run_hash']}.json",
        json.dumps({"run_dir": str(out.resolve()), "method": result["method"]}).encode(),
    )
    return out / "metrics.json"


def save_model(out: Path, system) -> Path:
    """The unlearned network's state dict, loadable with torch.load(..., weights_only=True)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in system.state_dict().items()}, buf)
    atomic_write(out / "model.pt", buf.getvalue())
    return out / "model.pt"


def split_arrays(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Scalars (and short lists) for metrics.json; tensors and arrays for arrays.npz."""
    scalars, arrays = {}, {}
    for key, value in values.items():
        if isinstance(value, (torch.Tensor, np.ndarray)):
            arrays[key] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        else:
            scalars[key] = value
    return scalars, arrays


def provenance(device: torch.device) -> dict:
    """What produced the numbers: code version and state, library versions, device."""
    from importlib.metadata import PackageNotFoundError, version

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    versions = {}
    for package in ("torch", "torchvision", "open_clip_torch", "hydra-core", "optuna", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "git_commit": git("rev-parse", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "versions": versions,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "host": os.uname().nodename,
    }


def _json_default(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    return str(value)
