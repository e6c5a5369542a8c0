"""Content-addressed artefact cache: keys hash what determines an artefact; writes are atomic.

Each artefact is `<kind>/<key>.pt` plus `<key>.sha256` (written after it). A file without a
matching checksum is partial or corrupt: it is reported, removed and rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def content_key(obj: Any) -> str:
    """A stable short hash of a JSON-able object (OmegaConf configs are resolved first)."""
    if isinstance(obj, DictConfig):
        obj = OmegaConf.to_container(obj, resolve=True)
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def atomic_write(path: Path, data: bytes) -> None:
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


class Cache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def save(self, kind: str, key: str, payload: Any) -> Path:
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        path = self.path(kind, key)
        atomic_write(path, data)
        atomic_write(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
        return path

    def load(self, kind: str, key: str) -> Any | None:
        """The cached payload, or None when absent; a corrupt or partial entry is removed."""
        path = self.path(kind, key)
        if not path.exists():
            return None
        digest_path = path.with_suffix(".sha256")
        data = path.read_bytes()
        expected = digest_path.read_text().strip() if digest_path.exists() else None
        if expected != hashlib.sha256(data).hexdigest():
            log.warning("cache entry %s is corrupt or partial; rebuilding it", path)
            path.unlink(missing_ok=True)
            digest_path.unlink(missing_ok=True)
            return None
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")

    def get_or_build(self, kind: str, key: str, build: Callable[[], Any], label: str | None = None) -> tuple[Any, bool]:
        """(payload, hit). Prints whether the artefact was reused or built."""
        payload = self.load(kind, key)
        label = label or kind
        if payload is not None:
            print(f"[cache] reusing {label} ({self.path(kind, key)})")
            return payload, True
        payload = build()
        path = self.save(kind, key, payload)
        print(f"[cache] saved {label} ({path})")
        return payload, False
