"""Optuna searches (`ppp.tune`): search files, a miniature search, kill -9 and resume, two workers on a
journal file and on a PostgreSQL server started here. Tiny data, 16 bits, a few trials, one thread."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import ROOT, TINY
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.trial import TrialState

from ppp.config import CONF_DIR
from ppp.data import build_benchmark
from ppp.errors import ConfigError
from ppp.experiment import MemoisedBenchmarks
from ppp.runs import run_hash
from ppp.tune import check_search, main, run_config, search_overrides, trial_config, tune

SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One model cache and run index for the module: the tiny models are trained once."""
    return tmp_path_factory.mktemp("tune_shared")


def search_args(study_dir, n_trials, *extra):
    return [
        "hparams_search=ppp_digit_scenes",
        *TINY,
        "tune.grid.bits=[16]",
        f"tune.n_trials={n_trials}",
        "tune.sampler.n_startup_trials=2",
        f"tune.dir={study_dir}",
        *extra,
    ]


def worker(shared, args):
    env = dict(
        os.environ,
        PPP_CACHE_DIR=str(shared / "cache"),
        PPP_RUN_INDEX=str(shared / "index"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "ppp.tune", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc, timeout=400):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def trials(storage, state=None):
    study = optuna.load_study(study_name="ppp_digit_scenes", storage=storage)
    return [t for t in study.get_trials() if state is None or t.state == state]


def assert_distinct_params(complete):
    keys = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("name", SEARCHES)
def test_every_search_file_composes_and_validates(name):
    """Both ends of every range pass the run validation; lambda reaches well above alpha."""
    overrides = search_overrides([f"hparams_search={name}"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
        check_search(cfg, overrides)
        with pytest.raises(ConfigError, match="evaluator.split must be val"):
            check_search(compose("config", overrides=overrides + ["evaluator.split=test"]), overrides)
        with pytest.raises(ConfigError, match="low > 0 on a log scale"):
            check_search(compose("config", overrides=overrides + ["tune.params.alpha.low=0"]), overrides)
    assert cfg.method.name == name.split("_")[0] and cfg.evaluator.split == "val"
    assert set(cfg.tune.params) >= {"alpha", "lam"} and list(cfg.tune.grid.bits) == [16, 32, 64]
    assert cfg.tune.params.lam.log and cfg.tune.params.lam.high >= 10 * cfg.tune.params.alpha.high


def test_a_trial_config_is_the_composed_config_with_its_values(tmp_path):
    """Trials compose each setting once and set their values on a copy: the same config, and run hash, as
    composing with the values as overrides (the setting's composed config is left as it was)."""
    overrides = search_overrides(["hparams_search=ppp_digit_scenes", *TINY])
    params = {"alpha": 3.2500000000000004, "tau": 0.5, "lam": 120.0, "lam_max": 0.01}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        setting = compose("config", overrides=overrides + ["bits=32"])
        expected = run_config(
            compose(
                "config",
                overrides=overrides
                + ["bits=32", f"out_dir={tmp_path}"]
                + [f"method.{k}={v!r}" for k, v in params.items()],
            )
        )
    cfg = trial_config(setting, params, tmp_path)
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(expected) and run_hash(cfg) == run_hash(expected)
    assert setting.method.alpha == yaml.safe_load((CONF_DIR / "method" / "ppp.yaml").read_text())["alpha"]


def test_bad_search_values_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["hparams_search=ppp_digit_scenes", "tune.direction=up"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "error: tune.direction must be minimize or maximize, got 'up'"
    with pytest.raises(ConfigError, match="method ppp has no key 'beta'"):
        tune(["hparams_search=ppp_digit_scenes", "+tune.params.beta={type: float, low: 1, high: 2}"])
    with pytest.raises(ConfigError, match="name a search"):
        tune(["method=ppp"])


@pytest.mark.slow
def test_miniature_search_end_to_end(shared, tmp_path, monkeypatch):
    monkeypatch.setenv("PPP_CACHE_DIR", str(shared / "cache"))
    monkeypatch.setenv("PPP_RUN_INDEX", str(shared / "index"))
    builds = []
    benchmarks = MemoisedBenchmarks(lambda cfg, cache_dir=None: builds.append(1) or build_benchmark(cfg, cache_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        study = tune(search_args(tmp_path, 3), benchmarks)
    finally:
        torch.set_num_threads(threads)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len(builds) == 1  # the benchmark is built once for every trial
    defaults = yaml.safe_load((CONF_DIR / "method" / "ppp.yaml").read_text())
    assert complete[0].params == {k: defaults[k] for k in ("alpha", "tau", "lam", "lam_max")}  # starts there
    assert_distinct_params(complete)
    for t in complete:  # the objective is the run's objective/gap on the validation split
        run = yaml.safe_load((tmp_path / "trials" / str(t.number) / "bits16" / "metrics.json").read_text())
        assert run["config"]["evaluator"]["split"] == "val"
        assert t.value == pytest.approx(run["metrics"]["objective/gap"])
        assert {k: run["config"]["method"][k] for k in t.params} == pytest.approx(t.params)
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["value"] == min(t.value for t in complete) == study.best_value
    line = (tmp_path / "best_overrides.txt").read_text().split()
    assert line[:2] == ["method=ppp", "dataset=digit_scenes"] and TINY[0] in line
    assert {f"method.{k}={v!r}" for k, v in best["method"].items() if k != "name"} <= set(line)
    csv = (tmp_path / "trials.csv").read_text().splitlines()
    assert len(csv) == 4 and {"params_alpha", "params_lam", "params_tau", "params_lam_max"} <= set(csv[0].split(","))
    for plot in ("history", "importances", "contour_alpha_lam", "slice"):
        png = (tmp_path / "plots" / f"{plot}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    again = tune(search_args(tmp_path, 3))  # a finished search resumes to nothing
    assert len(again.trials) == 3


@pytest.mark.slow
def test_kill_9_mid_search_then_rerun_completes_exactly_n(shared, tmp_path):
    n, storage = 4, f"sqlite:///{tmp_path}/study.db"
    # skip_finished=false: a trial whose runs another test already finished would end in milliseconds,
    # before the kill lands
    args = search_args(tmp_path, n, "skip_finished=false")
    proc = worker(shared, args)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:  # never create the schema here: the worker does, under its lock
            seen = trials(optuna.storages.RDBStorage(storage, skip_table_creation=True))
        except Exception:  # no study yet
            seen = []
        # kill once a trial is running with every parameter drawn (a kill between two draws retries the
        # drawn ones and draws the rest anew, which the last assertion would not see as the same trial)
        if (
            any(t.state == TrialState.COMPLETE for t in seen)
            and seen[-1].state == TrialState.RUNNING
            and len(seen[-1].params) == 4
        ):
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    killed = trials(storage, TrialState.RUNNING)
    assert len(killed) == 1
    out = finish(worker(shared, args))
    assert f"trials [{killed[0].number}] lost their worker" in out
    complete = trials(storage, TrialState.COMPLETE)
    assert len(complete) == n
    assert_distinct_params(complete)
    assert [t.state for t in trials(storage) if t.number == killed[0].number] == [TrialState.FAIL]
    retry = [t for t in complete if t.user_attrs.get("retry_of") == killed[0].number]
    assert len(retry) == 1 and retry[0].params == killed[0].params


def run_two_workers(shared, tmp_path, storage, n=10):
    """Both workers start together and must each run trials: the budget outlasts the later one's start-up
    (with 4 trials of a few tenths of a second, one worker sometimes finished the study alone)."""
    args = search_args(tmp_path, n, f'tune.storage="{storage}"')
    procs = [worker(shared, args + [f"tune.worker={i}"]) for i in range(2)]
    for proc in procs:
        finish(proc)
    url = storage
    if storage.startswith("journal:"):
        url = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage[len("journal:") :]))
    complete = trials(url, TrialState.COMPLETE)
    assert n <= len(complete) <= n + 1  # MaxTrialsCallback may overshoot by workers - 1
    assert_distinct_params(complete)
    assert {t.user_attrs["pid"] for t in trials(url)} == {p.pid for p in procs}


@pytest.mark.slow
def test_two_workers_share_a_journal_file(shared, tmp_path):
    run_two_workers(shared, tmp_path, f"journal:{tmp_path}/study.journal")


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (initdb refuses root: run it as nobody)."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on PATH")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install -e '.[tune]'")
    folder = Path(tempfile.mkdtemp(prefix="ppp-pg-"))
    prefix = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody")
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    subprocess.run(
        [*prefix, "initdb", "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
        cwd=folder,
    )
    subprocess.run(
        [
            *prefix,
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(folder / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
        ],
        check=True,
        capture_output=True,
        cwd=folder,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.postgresql
@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(shared, tmp_path, postgres):
    run_two_workers(shared, tmp_path, postgres)
