"""Peak memory of one step of a run (the unlearning method), for the `mem/peak_mb` metric."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


def _status_kb(field: str) -> int:
    """A `VmRSS` / `VmHWM` line of /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _maxrss_kb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB elsewhere


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory, in MB, that a block uses on top of what was in use when it started.

    CUDA: the allocator's peak minus its allocation at the start. CPU (Linux): the process's peak resident
    set (VmHWM, reset at the start) minus its resident set at the start; where that reset is unavailable,
    the growth of ru_maxrss, which misses peaks below an earlier high-water mark.
    """

    def __init__(self, device: torch.device):
        self.device, self.mb = device, 0.0

    def _now_and_peak_mb(self) -> tuple[float, float]:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20, torch.cuda.max_memory_allocated(
                self.device
            ) / 2**20
        if self._kernel_peak:
            return _status_kb("VmRSS") / 1024, _status_kb("VmHWM") / 1024
        return _maxrss_kb() / 1024, _maxrss_kb() / 1024

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._kernel_peak = _reset_peak_rss()
        self._start, _ = self._now_and_peak_mb()
        return self

    def __exit__(self, *exc) -> None:
        self.mb = max(0.0, self._now_and_peak_mb()[1] - self._start)
