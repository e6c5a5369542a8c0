"""Device selection and the CUDA determinism settings (checked in a fresh process: they are global)."""

import os
import subprocess
import sys

import pytest
import torch

from ppp.errors import ConfigError
from ppp.utils import resolve_device

CHECK = """
import torch
from ppp.utils import make_deterministic
make_deterministic(torch.device("cpu"))
before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.flash_sdp_enabled())
make_deterministic(torch.device("cuda"))
make_deterministic(torch.device("cuda"))  # idempotent
import os
print(before, torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.flash_sdp_enabled(),
      torch.backends.cuda.mem_efficient_sdp_enabled(), torch.backends.cuda.matmul.allow_tf32,
      torch.backends.cudnn.allow_tf32, os.environ["CUBLAS_WORKSPACE_CONFIG"])
"""


def test_cuda_runs_ask_for_exact_deterministic_kernels_and_cpu_runs_change_nothing():
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out == ["(False,", "True)", "True", "False", "False", "False", "False", ":4096:8"]


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu7'"):
        resolve_device("tpu7")
