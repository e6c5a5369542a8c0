"""The package installs anywhere: a wheel in a fresh virtual environment runs the default job outside the
checkout, with the configs it ships (not the checkout's)."""

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, TINY

from ppp.config import compose_config
from ppp.runs import run_hash

pytestmark = pytest.mark.slow


def build_wheel(out: Path) -> Path:
    """The project's wheel, built with the setuptools already installed (nothing downloaded)."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    subprocess.run([*command, str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("ppp-*.whl")
    return wheel


def fresh_environment(where: Path, wheel: Path) -> Path:
    """A new venv holding only the wheel; the test environment's dependencies (torch, open_clip, ...) are
    reached through a path entry, so nothing is downloaded again. A plain path entry does not run the
    test environment's own .pth files, so the checkout's editable install stays invisible."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(where)], check=True, timeout=300)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dependencies = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (Path(purelib) / "test_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return where / "bin"


def test_a_wheel_in_a_fresh_environment_runs_the_default_job_outside_the_checkout(tmp_path):
    bin_dir = fresh_environment(tmp_path / "venv", build_wheel(tmp_path / "wheel"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PPP_CACHE_DIR=str(tmp_path / "cache"), PPP_RUN_INDEX=str(tmp_path / "index"))

    found = subprocess.run(
        [bin_dir / "python", "-c", "import ppp.cache, ppp.config; print(ppp.config.CONF_DIR)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(found.stdout.strip()).is_relative_to(tmp_path / "venv")  # the shipped configs, not the checkout's

    overrides = [*TINY, "device=cpu"]
    proc = subprocess.run(
        [bin_dir / "ppp-run", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result["method"] == "ppp" and 0.0 <= result["metrics"]["forget/i2t_map"] <= 1.0
    assert result["run_hash"] == run_hash(compose_config(overrides))  # the same config as the checkout's
