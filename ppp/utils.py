"""Seeding, device selection, and the logging of command-line entry points."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from ppp.errors import ConfigError


class _CliFormatter(logging.Formatter):
    """Progress as the bare message; warnings and errors prefixed, as `warning: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def cli_logging(level: int = logging.INFO, others: int = logging.ERROR) -> None:
    """The logging of a command-line entry point that is not run under Hydra (whose job_logging does this for
    run.py): ppp's messages from `level` up, other libraries' from `others` up (open_clip logs every model build),
    on stderr, so that stdout holds the command's output alone. Leaves a logging setup already in place (a test's,
    an embedding program's) as it is, but for ppp's level."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_CliFormatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(others)
    logging.getLogger("ppp").setLevel(level)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_deterministic(device: torch.device) -> None:
    """A fixed seed should give identical metrics on CUDA as on the CPU: CUDA's atomic-add kernels (embedding
    and index_add backward, used by the Fisher estimates) sum in a varying order unless deterministic
    kernels are asked for (ops without one only warn), and TF32 rounds matmuls and convolutions to 10-bit
    mantissas, enough to flip the sign of near-zero hash activations between kernel choices (and it moved
    the per-sample Fisher 3-4 % from the loop's on an H100). Idempotent, so many runs in one process agree."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS reductions
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # attention through scaled_dot_product_attention (open_clip's towers): the flash, memory-efficient and
    # cuDNN kernels' backward accumulate with atomics, and warn_only would let them run; the math kernel is exact
    for backend in ("enable_flash_sdp", "enable_mem_efficient_sdp", "enable_cudnn_sdp"):
        if hasattr(torch.backends.cuda, backend):
            getattr(torch.backends.cuda, backend)(False)
    torch.use_deterministic_algorithms(True, warn_only=True)


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
