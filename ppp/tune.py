"""Optuna searches over a method's hyperparameters: `python -m ppp.tune hparams_search=NAME [overrides]`.

Optuna is driven directly; each setting's config is composed with Hydra's compose API once per process
and a trial sets its values on a copy (see docs/decisions.md, "Hyperparameter search"). A search file
(`ppp/conf/hparams_search/NAME.yaml`) sets the run config and a `tune` block: the space (`tune.params`,
keys of `method` by dotted path, e.g. `train.retrieval.lr`, written nested or dotted), the settings every trial evaluates (`tune.grid`, e.g. bits 16/32/64 on their cached
models, forget sets), the objective's aggregate, the sampler, pruner, storage and budget. The budget counts COMPLETE
trials across restarts and workers. A trial killed with its worker is failed and retried with the same
parameters: on RDB storages by Optuna's heartbeat, on every storage at start-up when its worker process
(host + pid in the trial's user attrs) is gone. Every trial records both objectives (`objective/gap`, to
Retrain; `objective/oracle_free`, without it) whichever is optimised: `python -m ppp.tune compare DIR...`
says which trial each would choose.
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
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ppp.cache import atomic_write
from ppp.config import compose_config, compose_with_choices, configs_initialised, group_options
from ppp.errors import ConfigError
from ppp.experiment import BenchmarkProvider, MemoisedBenchmarks, execute, objective_value, validate
from ppp.schema import Check, block, boolean, integer, parse, read, schema
from ppp.schema import setting as tune_key

log = logging.getLogger("ppp.tune")  # not __name__: `python -m ppp.tune` runs it as __main__

HOST = socket.gethostname()
PARAM_TYPES = ("float", "int", "categorical")
AGGREGATES = {"mean": lambda values: sum(values) / len(values), "sum": sum}
OBJECTIVES = ("objective/gap", "objective/oracle_free")  # recorded on every trial (user attrs), aggregated
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


def override_value(value) -> str:
    """A grid value as Hydra's override grammar writes it: a list as `[three,nine]`, nested lists likewise."""
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return str(value)


def settings(tune: DictConfig) -> list[list[str]]:
    """The overrides of every setting a trial evaluates: the product of `tune.grid`'s lists (a list value,
    e.g. a forget set, gives `forget=[three,nine]`)."""
    keys = list(tune.grid)
    return [
        [f"{k}={override_value(v)}" for k, v in zip(keys, values)]
        for values in itertools.product(*(tune.grid[k] for k in keys))
    ]


def setting_folder(setting: list[str]) -> str:
    """A setting's trial folder name: `bits16`, `bits16,forgetthree+nine`."""
    return ",".join(o.replace("=", "").replace("[", "").replace("]", "").replace(",", "+") for o in setting)


def is_param_spec(node) -> bool:
    """A `tune.params` leaf: a mapping with a string `type` (anything else is a group of nested method keys)."""
    return isinstance(node, (dict, DictConfig)) and isinstance(node.get("type"), str)


def flat_params(params) -> dict[str, DictConfig]:
    """`tune.params` by dotted path under `method`: `{train: {retrieval: {lr: SPEC}}}` (or the key
    `train.retrieval.lr: SPEC`) gives `{"train.retrieval.lr": SPEC}`."""
    out = {}
    for key, node in (params or {}).items():
        if is_param_spec(node):
            out[str(key)] = node
        elif isinstance(node, (dict, DictConfig)) and node:
            out.update({f"{key}.{name}": spec for name, spec in flat_params(node).items()})
        else:
            raise ConfigError(
                f"tune.params.{key}: give a parameter ({{type: float, low: .., high: ..}}) or a group of them"
            )
    return out


MISSING_KEY = object()


def method_value(cfg: DictConfig, name: str):
    """The value of `method.<dotted name>` in a composed config (MISSING_KEY when absent)."""
    return OmegaConf.select(cfg.method, name, default=MISSING_KEY)


def _at_least(low: int) -> Check:
    def check(path, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{path} must be an integer >= {low}, got '{value}'")

    return check


def _named(*names: str) -> Check:
    def check(path, value):
        if value not in names:
            raise ConfigError(f"{path} must be one of {', '.join(names)}; got '{value}'")

    return check


def _direction(path, value):
    if value not in ("minimize", "maximize"):
        raise ConfigError(f"{path} must be minimize or maximize, got '{value}'")


def _grid(path, value):
    if not value or not isinstance(value, dict) or any(not isinstance(v, list) or len(v) == 0 for v in value.values()):
        raise ConfigError(f"{path} must map config keys to non-empty lists, e.g. {{bits: [16, 32, 64]}}")


@schema
class SamplerSettings:
    """`tune.sampler`: its name and seed; the other keys are options of the Optuna sampler (declare one here
    to pass it)."""

    name: str = tune_key(_named(*SAMPLERS))
    seed: int = tune_key(integer(0))
    n_startup_trials: int | None = tune_key(integer(0, optional=True), default=None)


@schema
class PrunerSettings:
    """`tune.pruner`: its name; the median pruner's options (Optuna's defaults where absent)."""

    name: str = tune_key(_named(*PRUNERS))
    n_startup_trials: int | None = tune_key(integer(0, optional=True), default=None)
    n_warmup_steps: int | None = tune_key(integer(0, optional=True), default=None)
    interval_steps: int | None = tune_key(integer(1, optional=True), default=None)
    n_min_trials: int | None = tune_key(integer(1, optional=True), default=None)


@schema
class ParamSpec:
    """One searched `method` key: a float or int range (log scale optional) or categorical choices."""

    type: str = tune_key(_named(*PARAM_TYPES))
    low: float | None = tune_key(default=None)
    high: float | None = tune_key(default=None)
    log: bool = tune_key(boolean(), default=False)
    choices: list | None = tune_key(default=None)

    def check(self, path: str) -> None:
        if self.type == "categorical":
            if not self.choices:
                raise ConfigError(f"{path}: a categorical parameter needs a non-empty choices list")
        elif self.low is None or self.high is None or not self.low < self.high or (self.log and self.low <= 0):
            raise ConfigError(
                f"{path}: need low < high (and low > 0 on a log scale), got low={self.low}, high={self.high}"
            )


@schema
class TuneSettings:
    """A search's `tune` block (`hparams_search/*.yaml`)."""

    study_name: str = tune_key()
    dir: str = tune_key()
    storage: str = tune_key()
    direction: str = tune_key(_direction)
    n_trials: int = tune_key(_at_least(1))
    aggregate: str = tune_key(_named(*AGGREGATES))
    grid: dict = tune_key(_grid)
    sampler: SamplerSettings = block(SamplerSettings)
    pruner: PrunerSettings = block(PrunerSettings)
    heartbeat_interval: int = tune_key(_at_least(1))
    grace_period: int = tune_key(_at_least(1))
    max_retry: int = tune_key(_at_least(1))
    worker: int = tune_key(_at_least(0))
    params: dict = tune_key()

    def check(self, path: str) -> None:
        if not self.params:
            raise ConfigError(f"{path}.params is empty: nothing to search")
        for name, spec in flat_params(self.params).items():
            parse(ParamSpec, spec, f"{path}.params.{name}")


def param_spec(spec) -> ParamSpec:
    return read(ParamSpec, spec)


def check_search(cfg: DictConfig, overrides: list[str]) -> dict[str, tuple[DictConfig, dict]]:
    """Every `tune` value (its schema, `TuneSettings`), every searched key present in `method` (dotted paths
    followed), and the run config of every setting at both ends of every range, before any trial runs.
    Returns each setting's composed config and group choices by label (what the trials start from)."""
    tune = cfg.tune
    if cfg.evaluator.split != "val":
        raise ConfigError(
            f"a search optimises on the validation split: evaluator.split must be val, "
            f"got '{cfg.evaluator.split}' (report the best parameters with evaluator.split=test)"
        )
    parse(TuneSettings, tune, "tune")
    params = flat_params(tune.params)
    for name in params:
        value = method_value(cfg, name)
        if value is MISSING_KEY or isinstance(value, DictConfig):
            raise ConfigError(f"tune.params.{name}: method {cfg.method.name} has no key '{name}'")
    ends = [
        {n: s.choices[0] if s.type == "categorical" else s.low for n, s in params.items()},
        {n: s.choices[-1] if s.type == "categorical" else s.high for n, s in params.items()},
    ]
    composed = {}
    for setting in settings(tune):  # composed once per setting; the ends set on copies, as trials do
        composed[",".join(setting)] = compose_with_choices(overrides + setting)
        for end in ends:
            cfg_end = run_config(composed[",".join(setting)][0])
            for name, value in end.items():
                OmegaConf.update(cfg_end, f"method.{name}", value, merge=False)
            validate(cfg_end)
    return composed


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
        params = flat_params(tune.params)
        if not study.trials and all(within(method_value(cfg, n), spec) for n, spec in params.items()):
            study.enqueue_trial(
                {n: method_value(cfg, n) for n in params}, user_attrs={"start": "config values"}, skip_if_exists=True
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
    if spec.type == "categorical":
        return value in spec.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and spec.low <= value <= spec.high


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
def run_log(path: Path):
    """A trial run's messages (its `ppp.experiment` log and its printed table) go to `path`, not the terminal."""
    logger = logging.getLogger("ppp.experiment")
    with open(path, "w") as fh, contextlib.redirect_stdout(fh):
        handler = logging.StreamHandler(fh)
        logger.addHandler(handler)
        propagate, logger.propagate = logger.propagate, False
        try:
            yield
        finally:
            logger.propagate = propagate
            logger.removeHandler(handler)


def suggest(trial: optuna.Trial, params: DictConfig) -> dict[str, object]:
    """The trial's value of each searched `method` key, by dotted path (`alpha`, `train.retrieval.lr`)."""
    out = {}
    for name, spec in flat_params(params).items():
        log = bool(param_spec(spec).log)
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


def make_objective(cfg: DictConfig, overrides: list[str], benchmarks: BenchmarkProvider, composed: dict | None = None):
    """Trials differ in the method only: `benchmarks` (memoising) builds each dataset once per process.
    `composed`: each setting's (config, choices) by label, as `check_search` returns them (else composed here)."""
    tune = cfg.tune
    aggregate = AGGREGATES[tune.aggregate]
    composed = {} if composed is None else dict(composed)  # each setting's config, composed once per process

    def objective(trial: optuna.Trial) -> float:
        for key, value in {"host": HOST, "pid": os.getpid(), "pid_start": process_start(os.getpid())}.items():
            trial.set_user_attr(key, value)
        params = suggest(trial, tune.params)
        start, values = time.perf_counter(), []
        recorded = {name: [] for name in OBJECTIVES}  # both objectives, whichever is optimised (ppp.tune compare)
        for step, setting in enumerate(settings(tune)):
            label = ",".join(setting)
            out = Path(tune.dir) / "trials" / str(trial.number) / setting_folder(setting)
            if label not in composed:
                composed[label] = compose_with_choices(overrides + setting)
            run_cfg = trial_config(composed[label][0], params, out)
            out.mkdir(parents=True, exist_ok=True)
            with run_log(out / "log.txt"):
                result = execute(run_cfg, benchmarks, choices=composed[label][1])
            value = objective_value(run_cfg, result)
            if math.isnan(value):
                raise ValueError(f"run {result['run_hash']} has no '{run_cfg.optimized_metric}'")
            values.append(value)
            trial.set_user_attr(f"{run_cfg.optimized_metric}[{label}]", value)
            for name in OBJECTIVES:
                recorded[name].append(float(result["metrics"].get(name, math.nan)))
                trial.set_user_attr(f"{name}[{label}]", recorded[name][-1])
            for timing in ("time/unlearn_s", "time/evaluate_s"):  # what a trial costs beyond them: ppp.bench
                trial.set_user_attr(f"{timing}[{label}]", result["metrics"].get(timing))
            log.info("[tune] trial %d %s: %s=%.4f  (%s)", trial.number, label, run_cfg.optimized_metric, value, out)
            trial.report(aggregate(values), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("time/trial_s", time.perf_counter() - start)
        for name, per_setting in recorded.items():  # NaN where a run lacks it (e.g. references without retrain)
            trial.set_user_attr(name, aggregate(per_setting))
        return aggregate(values)

    return objective


# ---------------------------------------------------------------- outputs


def paste_overrides(overrides: list[str], choices: dict | None = None) -> list[str]:
    """The run config's own overrides (groups chosen by the search file first), for run.py. `choices`: the
    search config's group choices (composed here when not given)."""
    if choices is None:
        choices = compose_config(overrides, return_hydra_config=True).hydra.runtime.choices
    own = [o for o in overrides if not o.lstrip("+").startswith(("hparams_search=", "tune.", "evaluator.split="))]
    return [f"method={choices['method']}", f"dataset={choices['dataset']}"] + own


def param_overrides(params: dict[str, object], run_overrides: list[str]) -> list[str]:
    """`method.<dotted name>=value` for each parameter; `++method...` where the method's own config lacks the
    key (a search file may add one, e.g. a learning rate the method otherwise takes from the backbone)."""
    plain = compose_config(run_overrides)
    return [
        f"{'++' if method_value(plain, name) is MISSING_KEY else ''}method.{name}={value!r}"
        for name, value in params.items()
    ]


def best_trial(study: optuna.Study, direction: str = "minimize") -> optuna.trial.FrozenTrial | None:
    """The selection rule: the COMPLETE trial with the best (finite) aggregate on the validation split; a tie
    goes to the earliest trial (trial 0 is the config's own values, so a tie keeps the defaults). Failed trials
    (a run without the objective, or a NaN objective) are never chosen. Independent of the storage's order."""
    sign = 1.0 if direction == "minimize" else -1.0
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    return min(complete, key=lambda t: (sign * t.value, t.number)) if complete else None


def objective_choices(rows: list[dict], direction: str = "minimize") -> dict:
    """For each recorded objective (`OBJECTIVES`), the trial it would choose (the selection rule: best value,
    ties to the earliest trial) and both objectives' values there; `gap_cost_of_oracle_free` is how much larger
    the oracle's `objective/gap` is at the oracle-free choice than at its own. `rows`: one dict per COMPLETE
    trial with `number`, `params` and each objective's aggregate (NaN where a trial lacks it)."""
    sign = 1.0 if direction == "minimize" else -1.0
    out = {}
    for name in OBJECTIVES:
        scored = [r for r in rows if r.get(name) is not None and math.isfinite(r[name])]
        if not scored:
            out[name] = None
            continue
        best = min(scored, key=lambda r: (sign * r[name], r["number"]))
        out[name] = {"trial": int(best["number"]), **{k: best.get(k, math.nan) for k in OBJECTIVES}}
        out[name]["params"] = best.get("params", {})
    gap, free = (out[name] for name in OBJECTIVES)
    if gap and free:
        out["gap_cost_of_oracle_free"] = free["objective/gap"] - gap["objective/gap"]
    return out


def trial_rows(study: optuna.Study) -> list[dict]:
    return [
        {"number": t.number, "params": dict(t.params), **{k: t.user_attrs.get(k, math.nan) for k in OBJECTIVES}}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]


def frame_rows(frame) -> list[dict]:
    """`trial_rows` from a study's trials.csv (`trials_dataframe`: params_*, user_attrs_* columns)."""
    rows = []
    for _, row in frame[frame["state"] == "COMPLETE"].iterrows():
        params = {c[len("params_") :]: row[c] for c in frame.columns if c.startswith("params_")}
        values = {k: float(row.get(f"user_attrs_{k}", math.nan)) for k in OBJECTIVES}
        rows.append({"number": int(row["number"]), "params": params, **values})
    return rows


def compare(dirs: list[str]) -> str:
    """`python -m ppp.tune compare DIR...`: for each study folder (its trials.csv), the trial each objective
    chooses and both objectives there (validation, aggregated over the grid), as a Markdown table."""
    import pandas as pd

    lines = [
        "| study | chosen by | trial | objective/gap | objective/oracle_free | gap cost of oracle_free |",
        "|---|---|---|---|---|---|",
    ]
    for folder in dirs:
        choices = objective_choices(frame_rows(pd.read_csv(Path(folder) / "trials.csv")))
        for name in OBJECTIVES:
            c = choices[name]
            if c is None:
                lines.append(f"| {Path(folder).name} | {name} | - | - | - | - |")
                continue
            cost = choices.get("gap_cost_of_oracle_free", math.nan) if name == OBJECTIVES[1] else 0.0
            lines.append(
                f"| {Path(folder).name} | {name} | {c['trial']} | {100 * c['objective/gap']:.2f} "
                f"| {100 * c['objective/oracle_free']:.2f} | {100 * cost:.2f} |"
            )
    return "\n".join(lines)


def nested(params: dict[str, object]) -> dict:
    """Dotted names as a nested mapping: {"train.retrieval.lr": 1e-3} -> {"train": {"retrieval": {"lr": 1e-3}}}."""
    out: dict = {}
    for name, value in params.items():
        *groups, last = name.split(".")
        node = out
        for group in groups:
            node = node.setdefault(group, {})
        node[last] = value
    return out


def write_outputs(
    study: optuna.Study, cfg: DictConfig, overrides: list[str], choices: dict | None = None
) -> list[Path]:
    """trials.csv, best.yaml, best_overrides.txt, objectives.yaml and the plots (PNG) under tune.dir."""
    out = Path(cfg.tune.dir)
    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "params", "user_attrs", "datetime_start", "datetime_complete", "duration")
    )
    atomic_write(out / "trials.csv", frame.to_csv(index=False).encode())
    written = [out / "trials.csv"]
    best = best_trial(study, cfg.tune.direction)
    if best is None:
        return written
    run_overrides = paste_overrides(overrides, choices)
    method_overrides = param_overrides(best.params, run_overrides)
    atomic_write(out / "best_overrides.txt", (" ".join(run_overrides + method_overrides) + "\n").encode())
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
                "method": {"name": cfg.method.name, **nested(best.params)},
                "overrides": method_overrides,
            },
            sort_keys=False,
        ).encode(),
    )
    choices = objective_choices(trial_rows(study), cfg.tune.direction)
    atomic_write(out / "objectives.yaml", yaml.safe_dump(to_plain(choices), sort_keys=False).encode())
    written += [out / "best_overrides.txt", out / "best.yaml", out / "objectives.yaml"]
    return written + write_plots(study, cfg, out / "plots")


def to_plain(value):
    """Floats and ints as YAML writes them (numpy scalars from a CSV included); NaN as null."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_plots(study: optuna.Study, cfg: DictConfig, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    from optuna.visualization import matplotlib as ovm

    params = list(flat_params(cfg.tune.params))
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


def tune(argv: list[str], benchmarks: BenchmarkProvider | None = None) -> optuna.Study:
    """Run (or resume, or join) the search named on the command line; returns the study. `benchmarks`
    gives each trial's benchmark (default: each dataset built once in this process)."""
    overrides = search_overrides(argv)
    with configs_initialised():
        cfg, choices = compose_with_choices(overrides)
        OmegaConf.resolve(cfg.tune)
        composed = check_search(cfg, overrides)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger().setLevel(logging.ERROR)  # as run.py's job_logging: open_clip warns on every build
        study = open_study(cfg)
        retried = recover_dead_trials(study, cfg.tune.max_retry)
        if retried:
            log.info("[tune] trials %s lost their worker: failed and queued again", retried)
        done, budget = n_complete(study), cfg.tune.n_trials
        log.info("[tune] study '%s' in %s: %d/%d trials complete", study.study_name, cfg.tune.storage, done, budget)
        if done < budget:
            study.optimize(
                make_objective(cfg, overrides, MemoisedBenchmarks() if benchmarks is None else benchmarks, composed),
                callbacks=[optuna.study.MaxTrialsCallback(budget, states=(TrialState.COMPLETE,))],
            )
        written = write_outputs(study, cfg, overrides, choices)
    best = best_trial(study, cfg.tune.direction)
    if best is not None:
        log.info(
            "[tune] best trial %d: %s (%s) = %.4f", best.number, cfg.optimized_metric, cfg.tune.aggregate, best.value
        )
        log.info("[tune] paste: python run.py %s", (Path(cfg.tune.dir) / "best_overrides.txt").read_text().strip())
    log.info("[tune] wrote %s", ", ".join(str(p) for p in written))
    return study


def main(argv: list[str] | None = None) -> None:
    # `python -m ppp.tune` has no Hydra job_logging: the search's own messages (logger `ppp`, INFO) go to
    # stdout here, as run.py's do; `tune` lowers the root logger to ERROR for open_clip's chatter.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("ppp")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a library's basicConfig on the root logger would print each message twice
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["compare"]:
            print(compare(argv[1:]))
            return
        tune(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)  # the command's one-line answer, as ppp-run's
        raise SystemExit(2) from None
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


if __name__ == "__main__":
    main()
