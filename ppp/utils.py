"""Seeding and device selection."""
from __future__ import annotations

import random

import numpy as np
import torch

from ppp.errors import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; an explicit 'cuda' without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} asked for, but no CUDA device is available (use device=auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the host of `url` (or to the HTTPS proxy) opens within `timeout` s.

    Run in a thread so that a hanging DNS lookup is bounded too.
    """
    import socket
    import threading
    import urllib.parse
    import urllib.request

    target = urllib.parse.urlsplit(urllib.request.getproxies().get("https") or url)
    opened = threading.Event()

    def connect():
        try:
            socket.create_connection((target.hostname, target.port or 443), timeout=timeout).close()
            opened.set()
        except OSError:
            pass

    threading.Thread(target=connect, daemon=True).start()
    return opened.wait(timeout)
