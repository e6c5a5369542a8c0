"""Content-addressed artefact cache: keys hash what changes an artefact; each entry is one atomic file.

An entry is `<kind>/<key>.pt`: a header line (format tag and the SHA-256 of the payload), then the
`torch.save` payload. It is written to a temporary file in the same folder, fsynced, and renamed
into place, so a reader sees no file or a complete one, never a payload without its checksum. A
reader never deletes anything: an entry whose checksum does not match (a bad copy, a truncated
disk) is reported and rebuilt, and the rebuild replaces it by the same atomic rename. Two processes
that build one artefact at the same time both build it, and the last rename wins (see
docs/decisions.md, "Caches").

Keys come from `config_identity`: a config section with the keys that never change an artefact
removed, and with every key in `NEUTRAL_DEFAULTS` dropped while it holds its declared default (both declared
in ppp/identity.py).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from ppp import identity

log = logging.getLogger(__name__)

FORMAT = b"ppp-cache-1"  # first line of every entry; entries of another format are rebuilt


def content_key(obj: Any) -> str:
    """A stable short hash of a JSON-able object (OmegaConf configs are resolved first)."""
    if isinstance(obj, (DictConfig, ListConfig)):
        obj = OmegaConf.to_container(obj, resolve=True)
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def config_identity(section: Any, prefix: str, never_keyed: frozenset | None = None) -> Any:
    """`section` (the config at dotted path `prefix`) as plain data, without `never_keyed` keys (default
    `identity.NEVER_KEYED`) and without `identity.NEUTRAL_DEFAULTS` keys at their neutral value: what of it
    may change an artefact."""
    never_keyed = identity.NEVER_KEYED if never_keyed is None else never_keyed
    neutral = identity.NEUTRAL_DEFAULTS
    if isinstance(section, (DictConfig, ListConfig)):
        section = OmegaConf.to_container(section, resolve=True)
    if not isinstance(section, dict):
        return section
    out = {}
    for key, value in section.items():
        path = f"{prefix}.{key}"
        if path in never_keyed or (path in neutral and value == neutral[path]):
            continue
        out[key] = config_identity(value, path, never_keyed)
    return out


@functools.cache
def source_digest(*paths: Path) -> str:
    """A short hash of the Python sources under `paths` (files or folders): keys of artefacts that code
    computes from cached inputs (reference rows' metrics), so an edit to that code rebuilds them."""
    digest = hashlib.sha256()
    for root in paths:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def storable(values: dict[str, Any]) -> dict[str, Any]:
    """`values` in a form `weights_only` loads back unchanged: numpy arrays as tensors (same dtype, turned
    back by `.numpy()`), numpy scalars as Python numbers (the same JSON)."""
    import numpy as np

    def convert(value):
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value))
        return value.item() if isinstance(value, np.generic) else value

    return {key: convert(value) for key, value in values.items()}


def index_digest(indices: torch.Tensor) -> str:
    """A short hash of an ordered index vector (which samples, in which order)."""
    return hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()[:20]


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _checked_payload(data: bytes) -> bytes | None:
    """The payload of an entry's bytes, or None when the header is foreign or the checksum does not match."""
    header, _, payload = data.partition(b"\n")
    tag, _, digest = header.partition(b" ")
    if tag != FORMAT or digest.decode(errors="replace") != hashlib.sha256(payload).hexdigest():
        return None
    return payload


class Cache:
    """One run's view of the cache folder: it records which entries the run used (for provenance) and
    notes beside each entry it builds which run made it (`<key>.json`, read by `python -m ppp.cache`)."""

    def __init__(self, root: str | os.PathLike, made_by: dict | None = None):
        self.root = Path(root)
        self.made_by = made_by or {}
        self.used: list[dict] = []

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def save(self, kind: str, key: str, payload: Any) -> Path:
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        path = self.path(kind, key)
        atomic_write(path, FORMAT + b" " + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
        return path

    def load(self, kind: str, key: str) -> Any | None:
        """The cached payload, or None when absent or corrupt (a corrupt entry is left for the rebuild to replace)."""
        path = self.path(kind, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        payload = _checked_payload(data)
        if payload is None:
            log.warning("cache entry %s is corrupt or of an older format; rebuilding it", path)
            return None
        return torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")

    def get_or_build(self, kind: str, key: str, build: Callable[[], Any], label: str | None = None) -> tuple[Any, bool]:
        """(payload, hit). Logs whether the artefact was reused or built."""
        payload = self.load(kind, key)
        label = label or kind
        self.used.append({"kind": kind, "key": key, "label": label, "reused": payload is not None})
        if payload is not None:
            log.info("[cache] reusing %s (%s)", label, self.path(kind, key))
            return payload, True
        payload = build()
        path = self.save(kind, key, payload)
        note = {"label": label, "made_by": self.made_by, "created": time.time()}
        atomic_write(path.with_suffix(".json"), json.dumps(note).encode())
        log.info("[cache] saved %s (%s)", label, path)
        return payload, False


def entries(root: Path, kind: str | None = None) -> list[dict]:
    """Every cache entry under `root` (of one kind): kind, key, size, age and the note of what made it."""
    out = []
    for path in sorted(root.glob(f"{kind or '*'}/*.pt")):
        note_path = path.with_suffix(".json")
        note = json.loads(note_path.read_text()) if note_path.exists() else {}
        stat = path.stat()
        out.append(
            {
                "kind": path.parent.name,
                "key": path.stem,
                "size_mb": stat.st_size / 2**20,
                "age_days": (time.time() - stat.st_mtime) / 86400,
                "label": note.get("label", ""),
                "made_by": note.get("made_by", {}),
                "path": path,
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m ppp.cache list|prune [--root DIR] [--kind K] [--older-than DAYS] [--dry-run]`: the listing and
    the summary line are the command's output (stdout)."""
    import argparse

    from ppp.utils import cli_logging

    cli_logging()

    parser = argparse.ArgumentParser(prog="python -m ppp.cache", description="List or prune cached artefacts.")
    parser.add_argument("action", choices=["list", "prune"])
    parser.add_argument("--root", default=os.environ.get("PPP_CACHE_DIR", "outputs/cache"))
    parser.add_argument("--kind", help="models, fisher, prototypes, checkpoints, ...")
    parser.add_argument("--older-than", type=float, default=0.0, help="prune: only entries older than this many days")
    parser.add_argument("--dry-run", action="store_true", help="prune: say what would go, remove nothing")
    args = parser.parse_args(argv)
    if args.action == "prune" and not args.kind and not args.older_than:
        parser.error("prune needs --kind and/or --older-than (refusing to empty the whole cache)")
    chosen = [e for e in entries(Path(args.root), args.kind) if e["age_days"] >= args.older_than]
    for e in chosen:
        made_by = " ".join(f"{k}={v}" for k, v in e["made_by"].items())
        print(f"{e['kind']:<12} {e['key']}  {e['size_mb']:9.1f} MB  {e['age_days']:7.2f} d  {e['label']}  {made_by}")
    total = sum(e["size_mb"] for e in chosen)
    if args.action == "prune" and not args.dry_run:
        for e in chosen:
            e["path"].unlink(missing_ok=True)
            e["path"].with_suffix(".json").unlink(missing_ok=True)
    verb = {"list": "listed", "prune": "would remove" if args.dry_run else "removed"}[args.action]
    print(f"{verb} {len(chosen)} entries, {total:.1f} MB")


if __name__ == "__main__":
    main()
