"""Optuna searches over a method's hyperparameters: `python -m ppp.tune hparams_search=NAME [overrides]`.

Optuna is driven directly; each setting's config is composed with Hydra's compose API once per process
and a trial sets its values on a copy (see docs/decisions.md, "Hyperparameter search"). A search file
(`ppp/conf/hparams_search/NAME.yaml`) sets the run config and a `tune` block: the space (`tune.params`,
keys of `method`), the settings every trial evaluates (`tune.grid`, e.g. bits 16/32/64 on their cached
models), the objective's aggregate, the sampler, pruner, storage and budget. The budget counts COMPLETE
trials across restarts and workers. A trial killed with its worker is failed and retried with the same
parameters: on RDB storages by Optuna's heartbeat, on every storage at start-up when its worker process
(host + pid in the trial's user attrs) is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import math
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy.exc
import yaml
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

import ppp.experiment
from ppp.cache import atomic_write, content_key
from ppp.config import compose_config, compose_with_choices, configs_initialised, group_options
from ppp.errors import ConfigError
from ppp.experiment import execute, objective_value, validate

HOST = socket.gethostname()
PARAM_TYPES = ("float", "int", "categorical")
AGGREGATES = {"mean": lambda values: sum(values) / len(values), "sum": sum}
SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median")


# ---------------------------------------------------------------- configs


def search_overrides(argv: list[str]) -> list[str]:
    """The command line as compose overrides; `hparams_search=X` joins the defaults as `+hparams_search=X`."""
    overrides = ["+" + a if a.startswith("hparams_search=") else a for a in argv]
    if not any(a.startswith("+hparams_search=") for a in overrides):
        raise ConfigError(
            "name a search: python -m ppp.tune hparams_search=NAME, NAME one of "
            + ", ".join(group_options("hparams_search"))
        )
    return overrides


def run_config(cfg: DictConfig) -> DictConfig:
    """A composed search config without its `tune` block: what `execute` runs (and hashes)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "tune"])


def settings(tune: DictConfig) -> list[list[str]]:
    """The overrides of every setting a trial evaluates: the product of `tune.grid`'s lists."""
    keys = list(tune.grid)
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*(tune.grid[k] for k in keys))]


def check_search(cfg: DictConfig, overrides: list[str]) -> None:
    """Every `tune` value, and the run config at both ends of every range, before any trial runs."""
    tune = cfg.tune
    if cfg.evaluator.split != "val":
        raise ConfigError(
            f"a search optimises on the validation split: evaluator.split must be val, "
            f"got '{cfg.evaluator.split}' (report the best parameters with evaluator.split=test)"
        )
    if tune.direction not in ("minimize", "maximize"):
        raise ConfigError(f"tune.direction must be minimize or maximize, got '{tune.direction}'")
    if tune.aggregate not in AGGREGATES:
        raise ConfigError(f"tune.aggregate must be one of {', '.join(AGGREGATES)}; got '{tune.aggregate}'")
    if tune.sampler.name not in SAMPLERS:
        raise ConfigError(f"tune.sampler.name must be one of {', '.join(SAMPLERS)}; got '{tune.sampler.name}'")
    if tune.pruner.name not in PRUNERS:
        raise ConfigError(f"tune.pruner.name must be one of {', '.join(PRUNERS)}; got '{tune.pruner.name}'")
    if not tune.grid or any(not OmegaConf.is_list(v) or len(v) == 0 for v in tune.grid.values()):
        raise ConfigError("tune.grid must map config keys to non-empty lists, e.g. {bits: [16, 32, 64]}")
    for key, low in (("n_trials", 1), ("heartbeat_interval", 1), ("grace_period", 1), ("max_retry", 1), ("worker", 0)):
        if isinstance(tune[key], bool) or not isinstance(tune[key], int) or tune[key] < low:
            raise ConfigError(f"tune.{key} must be an integer >= {low}, got '{tune[key]}'")
    if not tune.params:
        raise ConfigError("tune.params is empty: nothing to search")
    for name, spec in tune.params.items():
        if name not in cfg.method:
            raise ConfigError(f"tune.params.{name}: method {cfg.method.name} has no key '{name}'")
        if spec.type not in PARAM_TYPES:
            raise ConfigError(f"tune.params.{name}.type must be one of {', '.join(PARAM_TYPES)}; got '{spec.type}'")
        if spec.type == "categorical":
            if not spec.get("choices"):
                raise ConfigError(f"tune.params.{name}: a categorical parameter needs a non-empty choices list")
        elif not spec.low < spec.high or (spec.get("log", False) and spec.low <= 0):
            raise ConfigError(
                f"tune.params.{name}: need low < high (and low > 0 on a log scale), "
                f"got low={spec.low}, high={spec.high}"
            )
    ends = [
        [f"method.{n}={end}" for n, end in corner]
        for corner in (
            ((n, s.choices[0] if s.type == "categorical" else s.low) for n, s in tune.params.items()),
            ((n, s.choices[-1] if s.type == "categorical" else s.high) for n, s in tune.params.items()),
        )
    ]
    for setting in settings(tune):
        for end in ends:
            validate(run_config(compose_config(overrides + setting + end)))


# ---------------------------------------------------------------- storage and study


def open_storage(tune: DictConfig):
    """`journal:PATH` (several local workers), or an RDB URL (sqlite, postgresql, ...) with a heartbeat."""
    url = str(tune.storage)
    if url.startswith("journal:"):
        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(
            f"tune.storage must be an RDB URL (sqlite:///PATH, postgresql://...) or journal:PATH; got '{url}'"
        )
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)

    def rdb():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=tune.heartbeat_interval,
                grace_period=tune.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=tune.max_retry
                ),
            )

    try:
        return rdb()
    except sqlalchemy.exc.IntegrityError:  # a worker on another machine created the schema at this moment
        return rdb()


def make_sampler(spec: DictConfig, worker_seed: int):
    options = {k: v for k, v in spec.items() if k not in ("name", "seed")}
    sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[spec.name]
    return sampler(seed=worker_seed, **options)


def make_pruner(spec: DictConfig):
    options = {k: v for k, v in spec.items() if k != "name"}
    return optuna.pruners.MedianPruner(**options) if spec.name == "median" else optuna.pruners.NopPruner()


@contextlib.contextmanager
def file_lock(path: Path):
    """Serialises schema and study creation between the workers of one machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def open_study(cfg: DictConfig) -> optuna.Study:
    """Create or load the study; a new one starts with the config's own values (the method's defaults),
    so the search never ends worse than them on the validation split."""
    tune = cfg.tune
    with file_lock(Path(tune.dir) / ".study.lock"):  # schema and study creation race between workers
        storage = open_storage(tune)
        study = optuna.create_study(
            study_name=tune.study_name, storage=storage, direction=tune.direction, load_if_exists=True
        )
        if not study.trials and all(within(cfg.method[n], spec) for n, spec in tune.params.items()):
            study.enqueue_trial(
                {n: cfg.method[n] for n in tune.params}, user_attrs={"start": "config values"}, skip_if_exists=True
            )
    # Each worker's seed comes from (the search's seed, tune.worker, trials already there): a resumed
    # worker does not replay its first proposals and concurrent workers (distinct tune.worker) differ.
    entropy = [int(tune.sampler.seed), int(tune.worker), len(study.trials)]
    seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    return optuna.load_study(
        study_name=tune.study_name,
        storage=storage,
        sampler=make_sampler(tune.sampler, seed),
        pruner=make_pruner(tune.pruner),
    )


def within(value, spec: DictConfig) -> bool:
    return value in spec.choices if spec.type == "categorical" else spec.low <= value <= spec.high


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart), None off Linux."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_alive(trial: optuna.trial.FrozenTrial) -> bool:
    """False only when the trial's worker ran on this host and its process is gone."""
    attrs = trial.user_attrs
    if attrs.get("host") != HOST or "pid" not in attrs:
        return True
    try:
        os.kill(attrs["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = attrs.get("pid_start")
    return start is None or process_start(attrs["pid"]) in (None, start)


def recover_dead_trials(study: optuna.Study, max_retry: int) -> list[int]:
    """Fail the RUNNING trials whose worker process on this host is gone and enqueue their params again.

    The journal storage has no heartbeat; this is its equivalent (and, on RDB storages, it retries a
    local worker's trial at once instead of after the grace period). Two workers starting together
    cannot both retry one trial: the second one's state change raises.
    """
    retried = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker_alive(trial):
            continue
        try:  # Optuna has no public call to finish another process's trial
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        retries = int(trial.user_attrs.get("retries", 0)) + 1
        if trial.params and retries <= max_retry:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "retries": retries})
        retried.append(trial.number)
    return retried


def n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


# ---------------------------------------------------------------- trials


@contextlib.contextmanager
def cached_benchmarks():
    """Build each dataset once per process: trials differ in the method only (keyed by the dataset
    config's content hash; runs never modify a benchmark)."""
    build, built = ppp.experiment.build_benchmark, {}

    def cached(dataset_cfg, cache_dir=None):
        key = content_key(dataset_cfg)
        if key not in built:
            built[key] = build(dataset_cfg, cache_dir)
        return built[key]

    ppp.experiment.build_benchmark = cached
    try:
        yield
    finally:
        ppp.experiment.build_benchmark = build


def suggest(trial: optuna.Trial, params: DictConfig) -> dict[str, object]:
    """The trial's value of each searched `method` key."""
    out = {}
    for name, spec in params.items():
        log = bool(spec.get("log", False))
        if spec.type == "float":
            out[name] = trial.suggest_float(name, spec.low, spec.high, log=log)
        elif spec.type == "int":
            out[name] = trial.suggest_int(name, spec.low, spec.high, log=log)
        else:
            out[name] = trial.suggest_categorical(name, list(spec.choices))
    return out


def trial_config(setting_cfg: DictConfig, params: dict[str, object], out: Path) -> DictConfig:
    """A setting's composed config with the trial's method values and run folder: the config that composing
    with `method.NAME=value out_dir=OUT` gives, without composing again (Hydra's composition was over half
    of a warm trial's time beyond its runs' unlearning and evaluation)."""
    cfg = run_config(setting_cfg)
    for name, value in params.items():
        OmegaConf.update(cfg, f"method.{name}", value, merge=False)
    OmegaConf.update(cfg, "out_dir", str(out), merge=False)
    return cfg


def make_objective(cfg: DictConfig, overrides: list[str]):
    tune = cfg.tune
    aggregate = AGGREGATES[tune.aggregate]
    composed = {}  # each setting's config, composed once per process

    def objective(trial: optuna.Trial) -> float:
        for key, value in {"host": HOST, "pid": os.getpid(), "pid_start": process_start(os.getpid())}.items():
            trial.set_user_attr(key, value)
        params = suggest(trial, tune.params)
        start, values = time.perf_counter(), []
        for step, setting in enumerate(settings(tune)):
            label = ",".join(setting)
            out = Path(tune.dir) / "trials" / str(trial.number) / label.replace("=", "")
            if label not in composed:
                composed[label] = compose_with_choices(overrides + setting)
            run_cfg = trial_config(composed[label][0], params, out)
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "log.txt", "w") as log, contextlib.redirect_stdout(log):
                result = execute(run_cfg, choices=composed[label][1])
            value = objective_value(run_cfg, result)
            if math.isnan(value):
                raise ValueError(f"run {result['run_hash']} has no '{run_cfg.optimized_metric}'")
            values.append(value)
            trial.set_user_attr(f"{run_cfg.optimized_metric}[{label}]", value)
            for timing in ("time/unlearn_s", "time/evaluate_s"):  # what a trial costs beyond them: ppp.bench
                trial.set_user_attr(f"{timing}[{label}]", result["metrics"].get(timing))
            print(f"[tune] trial {trial.number} {label}: {run_cfg.optimized_metric}={value:.4f}  ({out})")
            trial.report(aggregate(values), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("time/trial_s", time.perf_counter() - start)
        return aggregate(values)

    return objective


# ---------------------------------------------------------------- outputs


def paste_overrides(overrides: list[str]) -> list[str]:
    """The run config's own overrides (groups chosen by the search file first), for run.py."""
    choices = compose_config(overrides, return_hydra_config=True).hydra.runtime.choices
    own = [o for o in overrides if not o.lstrip("+").startswith(("hparams_search=", "tune.", "evaluator.split="))]
    return [f"method={choices.method}", f"dataset={choices.dataset}"] + own


def write_outputs(study: optuna.Study, cfg: DictConfig, overrides: list[str]) -> list[Path]:
    """trials.csv, best.yaml, best_overrides.txt and the plots (PNG) under tune.dir."""
    out = Path(cfg.tune.dir)
    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "params", "user_attrs", "datetime_start", "datetime_complete", "duration")
    )
    atomic_write(out / "trials.csv", frame.to_csv(index=False).encode())
    written = [out / "trials.csv"]
    if n_complete(study) == 0:
        return written
    best = study.best_trial
    line = " ".join(paste_overrides(overrides) + [f"method.{k}={v!r}" for k, v in best.params.items()])
    atomic_write(out / "best_overrides.txt", (line + "\n").encode())
    atomic_write(
        out / "best.yaml",
        yaml.safe_dump(
            {
                "study": study.study_name,
                "trial": best.number,
                "objective": cfg.optimized_metric,
                "aggregate": cfg.tune.aggregate,
                "value": best.value,
                "split": "val",
                "grid": OmegaConf.to_container(cfg.tune.grid),
                "method": {"name": cfg.method.name, **best.params},
            },
            sort_keys=False,
        ).encode(),
    )
    written += [out / "best_overrides.txt", out / "best.yaml"]
    return written + write_plots(study, cfg, out / "plots")


def write_plots(study: optuna.Study, cfg: DictConfig, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    from optuna.visualization import matplotlib as ovm

    params = list(cfg.tune.params)
    plots = {"history": lambda: ovm.plot_optimization_history(study)}
    if n_complete(study) >= 2 and len(params) >= 2:
        plots["importances"] = lambda: ovm.plot_param_importances(study)
    if {"alpha", "lam"} <= set(params) and n_complete(study) >= 2:
        plots["contour_alpha_lam"] = lambda: ovm.plot_contour(study, params=["alpha", "lam"])
    plots["slice"] = lambda: ovm.plot_slice(study, params=params)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in plots.items():
            axes = plot()
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            for ax in figure.axes:  # log axes label their minor ticks, which overlap
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.yaxis.set_minor_formatter(NullFormatter())
            if name == "slice":
                figure.set_size_inches(4 * len(params) + 2, 4.5)
            figure.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(figure)
            written.append(out / f"{name}.png")
    return written


# ---------------------------------------------------------------- entry point


def tune(argv: list[str]) -> optuna.Study:
    """Run (or resume, or join) the search named on the command line; returns the study."""
    overrides = search_overrides(argv)
    with configs_initialised():
        cfg = compose_config(overrides)
        OmegaConf.resolve(cfg.tune)
        check_search(cfg, overrides)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger().setLevel(logging.ERROR)  # as run.py's job_logging: open_clip warns on every build
        study = open_study(cfg)
        retried = recover_dead_trials(study, cfg.tune.max_retry)
        if retried:
            print(f"[tune] trials {retried} lost their worker: failed and queued again")
        done, budget = n_complete(study), cfg.tune.n_trials
        print(f"[tune] study '{study.study_name}' in {cfg.tune.storage}: {done}/{budget} trials complete")
        if done < budget:
            with cached_benchmarks():
                study.optimize(
                    make_objective(cfg, overrides),
                    callbacks=[optuna.study.MaxTrialsCallback(budget, states=(TrialState.COMPLETE,))],
                )
        written = write_outputs(study, cfg, overrides)
    if n_complete(study):
        best = study.best_trial
        print(f"[tune] best trial {best.number}: {cfg.optimized_metric} ({cfg.tune.aggregate}) = {best.value:.4f}")
        print(f"[tune] paste: python run.py {(Path(cfg.tune.dir) / 'best_overrides.txt').read_text().strip()}")
    print(f"[tune] wrote {', '.join(str(p) for p in written)}")
    return study


def main(argv: list[str] | None = None) -> None:
    try:
        tune(sys.argv[1:] if argv is None else argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
