import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# A case that needs CUDA: marked `gpu`, and skipped with this reason where there is none (never left out of
# a parametrisation silently), e.g. pytest.param("cuda", marks=GPU).
GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (no GPU here)")]

# Small enough to train in seconds on 2 CPU cores.
TINY = [
    "dataset.n_total=280",
    "dataset.n_query=40",
    "dataset.n_train=120",
    "dataset.n_val=40",
    "backbone.train.epochs=1",
    "backbone.train.batch_size=32",
]


def tiny_config(tmp_path, overrides=()):
    """The runner's config at the TINY sizes on the CPU, with its cache, index and output under tmp_path."""
    from hydra import compose, initialize_config_dir

    from ppp.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                *TINY,
                f"cache_dir={tmp_path / 'cache'}",
                f"run_index={tmp_path / 'index'}",
                "device=cpu",
                f"out_dir={tmp_path / 'out'}",
                *overrides,
            ],
        )


def run_cli(args, tmp_path, check=True):
    """Run `python run.py ARGS` with the cache and outputs under tmp_path."""
    env = dict(os.environ, PPP_CACHE_DIR=str(tmp_path / "cache"), HYDRA_FULL_ERROR="0")
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        *args,
        f"hydra.run.dir={tmp_path}/run",
        f"hydra.sweep.dir={tmp_path}/multi",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli(tmp_path):
    return lambda args, check=True: run_cli(args, tmp_path, check)


@pytest.fixture
def ppp_log(caplog):
    """The package's log records from INFO up (progress such as `[cache] reusing ...`): `ppp_log.messages`,
    `ppp_log.clear()` (pytest's caplog, with the `ppp` logger set to INFO for the test)."""
    caplog.set_level(logging.INFO, logger="ppp")
    return caplog


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run fastest on one thread, and do not stall when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
