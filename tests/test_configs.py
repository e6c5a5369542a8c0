"""Every config file composes and validates; every experiment's whole grid does; a miniature
experiment runs end to end and the report renders its table."""

import json
from pathlib import Path

import pytest
from conftest import ROOT, TINY
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ppp.config import CONF_DIR as CONF
from ppp.errors import ConfigError
from ppp.experiment import validate
from ppp.report.load import flatten
from ppp.runs import run_hash

GROUPS = ("dataset", "backbone", "method", "evaluator", "forget_set")
NAMED_BY = {"forget_set": "kind"}  # the key that names a group's option (default `name`)
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def compose_with(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def valid(cfg):
    """Config-level validation, as the runner does before building anything (no data is read)."""
    validate(cfg)
    return cfg


# Options the default setting (digit_scenes on clip_tiny) cannot run, with a setting they can.
SETTING_FOR = {("method", "fisher"): ["dataset=digits"]}  # Golatkar's Fisher forgetting needs a class head


def named(group: str, option: str) -> str:
    """The name an option's section carries: the file's name, unless the option is a variant (its defaults start from
    another option of its group, e.g. method/ssd_tuned from method/ssd) that keeps the name of the option it varies."""
    config = OmegaConf.load(CONF / group / f"{option}.yaml")
    parents = [d for d in config.get("defaults") or [] if isinstance(d, str) and (CONF / group / f"{d}.yaml").exists()]
    return named(group, parents[0]) if parents and NAMED_BY.get(group, "name") not in config else option


@pytest.mark.parametrize("group, name", [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_group_option_composes_and_validates(group, name):
    cfg = valid(compose_with([f"{group}={name}", *SETTING_FOR.get((group, name), [])]))
    assert cfg[group][NAMED_BY.get(group, "name")] == named(group, name)


def test_ssd_tuned_row_takes_its_values_per_dataset_and_refuses_a_dataset_without_them():
    """method=ssd_tuned is SSD at the alpha and lambda chosen on a dataset's validation split; where none were
    chosen, the run stops before any work with a one-line error instead of running SSD's published values."""
    for dataset in ("digit_scenes", "digits"):
        own = OmegaConf.load(CONF / "method_defaults" / f"ssd_tuned_{dataset}.yaml").method
        cfg = valid(compose_with(["method=ssd_tuned", f"dataset={dataset}"]))
        assert (cfg.method.name, cfg.method.alpha, cfg.method.lam) == ("ssd", own.alpha, own.lam)
        assert cfg.method.alpha not in (10.0, None)
        same = compose_with(["method=ssd", f"dataset={dataset}", f"method.alpha={own.alpha}", f"method.lam={own.lam}"])
        run_keys = [key for key in cfg if key != "hydra"]
        # the row's runs are those of SSD at the tuned values
        assert run_hash(OmegaConf.masked_copy(cfg, run_keys)) == run_hash(OmegaConf.masked_copy(same, run_keys))
    with pytest.raises(ConfigError, match=r"^method.alpha has no value \(null\): give one on the command line"):
        valid(compose_with(["method=ssd_tuned", "dataset=coco"]))
    assert valid(compose_with(["method=ssd_tuned", "dataset=coco", "method.alpha=3", "method.lam=1"])).method.alpha == 3


def test_digit_scenes_composes_with_contributors():
    """The opt-in contributors (issue 22) validate in `dataset/digit_scenes.yaml`; a held-out count that leaves
    no contributor for training does not."""
    on = ["dataset=digit_scenes", "dataset.contributors=12", "dataset.held_out_contributors=3"]
    cfg = valid(compose_with(on))
    assert (cfg.dataset.contributors, cfg.dataset.held_out_contributors, cfg.dataset.hand_colour_prob) == (12, 3, 0.8)
    with pytest.raises(ConfigError, match=r"^dataset.held_out_contributors=12 must be < dataset.contributors=12"):
        valid(compose_with([*on, "dataset.held_out_contributors=12"]))


def test_every_config_file_is_covered():
    files = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    covered = {f"{g}/{p.stem}.yaml" for g in GROUPS for p in (CONF / g).glob("*.yaml")}
    covered |= {f"experiment/{e}.yaml" for e in EXPERIMENTS} | {"config.yaml", "mia/default.yaml"}
    # blocks other configs pull in through their defaults (composed with them above)
    covered |= {
        "method/fisher_estimate/default.yaml",
        "method/projection/default.yaml",
        "method/train_recipe/adam.yaml",
        "hparams_search/base/tune.yaml",
        "experiment/setting/clip_side.yaml",
        "experiment/setting/audit.yaml",  # through experiment=audit_digits and audit_digit_scenes
        "experiment/setting/deletion.yaml",  # through experiment=deletion_*
        "backbone_weights/imagenet1k.yaml",
        "prompts/digits.yaml",
        "prompts/digits_eval.yaml",
        "zeroshot/default.yaml",
        "audit/membership.yaml",
        "audit/relearn.yaml",
        "audit/distance.yaml",
    }

    covered |= {f"hparams_search/{p.name}" for p in (CONF / "hparams_search").glob("*.yaml")}  # tests/test_tune.py
    covered |= {f"method_defaults/{p.name}" for p in METHOD_DEFAULTS}  # composed below
    covered |= {f"study/{g}/{p.name}" for g in MECHANISM_GROUPS for p in (STUDY / g).glob("*.yaml")}  # composed below
    assert files == covered, f"config files no test composes: {sorted(files - covered)}"


METHOD_DEFAULTS = sorted((CONF / "method_defaults").glob("*.yaml"))  # <method>_<dataset>.yaml


@pytest.mark.parametrize("path", METHOD_DEFAULTS, ids=lambda p: p.stem)
def test_method_defaults_apply_to_their_method_and_dataset_only(path):
    """A per-dataset defaults file sets its method's keys when both are chosen, and only then; a command-line value,
    `~method_defaults` and the item deletions' setting (whose results predate the file) still win over it."""
    own = flatten(OmegaConf.to_container(OmegaConf.load(path).method))
    # the longest method name the file's name starts with (`bad_teacher_digits` is Bad Teacher's, not Bad's)
    method = max((m.stem for m in (CONF / "method").glob("*.yaml") if path.stem.startswith(m.stem + "_")), key=len)
    dataset = path.stem[len(method) + 1 :]

    def method_values(cfg):
        return {key: OmegaConf.select(cfg.method, key) for key in own}

    def composed(*overrides):
        return valid(compose_with([f"method={method}", *overrides]))

    chosen = composed(f"dataset={dataset}")
    assert chosen.hydra.runtime.choices.method_defaults == path.stem
    assert method_values(chosen) == own
    # unvalidated: a variant that takes its values only from these files (method/ssd_tuned) has none without them
    plain = method_values(compose_with([f"method={method}", f"dataset={dataset}", "~method_defaults"]))
    repeated = [key for key in own if own[key] == plain[key]]
    assert not repeated, f"{path.name} repeats method/{method}.yaml's {repeated}"
    # the settings below are composed unvalidated: Fisher forgetting cannot run on retrieval, its values still compose
    deletions = compose_with([f"method={method}", "experiment=deletion_share"])
    if deletions.dataset.name == dataset:  # the item deletions' setting runs on one dataset
        assert method_values(deletions) == plain
    key = next(iter(own))
    assert (
        OmegaConf.select(compose_with([f"method={method}", f"dataset={dataset}", f"method.{key}=1.5"]).method, key)
        == 1.5
    )
    other = next(
        d for d in ("digits", "digit_scenes", "coco") if not (CONF / "method_defaults" / f"{method}_{d}.yaml").exists()
    )
    assert method_values(compose_with([f"method={method}", f"dataset={other}"])) == plain


def consecutive(numbers: list[int]) -> bool:
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def sweep_values(params) -> list[str]:
    """Every single override of a sweep's grid, e.g. ['method=bad', 'method=ssd', 'bits=16', ...]. A run of
    consecutive integers (seeds: 32 of them in the forgetting-quality experiments) is represented by its two ends:
    every value between composes the same way, and the schema's range checks are decided at the ends."""
    out = []
    for key, values in params.items():
        (override,) = OverridesParser.create().parse_overrides([f"{key}={values}"])
        grid = list(override.sweep_string_iterator())
        if len(grid) > 2 and all(v.lstrip("-").isdigit() for v in grid) and consecutive(sorted(map(int, grid))):
            grid = [min(grid, key=int), max(grid, key=int)]
        out += [f"{key}={v}" if not isinstance(v, list) else f"{key}=[{','.join(map(str, v))}]" for v in grid]
    return out


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_and_each_grid_value_composes_and_validates(experiment):
    cfg = valid(compose_with([f"experiment={experiment}"]))
    params = cfg.hydra.sweeper.params
    assert params, f"{experiment} sets no grid"
    assert cfg.hydra.sweep.dir == f"outputs/experiments/{experiment}"
    for value in sweep_values(params):
        valid(compose_with([f"experiment={experiment}", value]))


MECHANISM_GROUPS = ("mechanism_variant", "mechanism_setting")  # the bundles of experiment=mechanism_variants
STUDY = CONF / "study"  # study-only groups, found under their own names through hydra.searchpath


@pytest.mark.parametrize(
    "group, name", [(g, p.stem) for g in MECHANISM_GROUPS for p in sorted((STUDY / g).glob("*.yaml"))]
)
def test_every_mechanism_variant_and_setting_composes_and_validates(group, name):
    cfg = valid(compose_with(["experiment=mechanism_variants", f"{group}={name}"]))
    assert cfg.evaluator.name == ("classification" if name == "classification" else "retrieval")
    if name.startswith("ppp_best"):
        assert cfg.method.lam == cfg.mechanism_best.lam and cfg.method.lam_max == cfg.mechanism_best.lam_max
    if name == "harder":
        assert cfg.backbone.name == "clip_small" and cfg.dataset.surface_forms and cfg.dataset.mention_prob == 0.7


def test_real_data_experiments_pick_the_papers_backbones():
    imagenet = compose_with(["experiment=table1_imagenet100"]).backbone
    assert imagenet.name == "resnet50" and imagenet.weights == "IMAGENET1K_V1"
    assert compose_with(["experiment=table2_coco"]).backbone.pretrained == "openai"
    assert compose_with(["method=ppp"]).method.fisher_context_size > 0  # the shared Fisher block
    assert compose_with(["experiment=table1_digits"]).evaluator.name == "classification"
    assert compose_with(["experiment=fig3_coco"]).bits == 64


def test_miniature_experiment_runs_and_reports(cli, tmp_path):
    """`-m experiment=...` restricted to one grid point on tiny data, then the report on its folder."""
    import subprocess
    import sys

    cli(
        ["-m", "experiment=table2_digit_scenes", "method=ppp", "bits=16", "seed=0", "method.forget_samples=12", *TINY]
    )  # the helper points hydra.sweep.dir at tmp_path/multi
    (result_file,) = list(Path(tmp_path / "multi").glob("*/metrics.json"))
    result = json.loads(result_file.read_text())
    assert result["method"] == "ppp" and set(result["references"]) == {"original", "retrain"}
    report = subprocess.run(
        [sys.executable, "-m", "ppp.report", str(tmp_path / "multi"), "--out", str(tmp_path / "rep"), "--no-figures"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "rep" / "table2.md").read_text()
    assert "16-I2T" in table and "PPP" in table and "Retrain" in table


def test_shared_blocks_are_inherited_not_copied():
    """clip_small is clip_tiny with another image tower; the searches share one tune block, which is no search."""
    from ppp.config import group_options

    small, tiny = compose_with(["backbone=clip_small"]).backbone, compose_with(["backbone=clip_tiny"]).backbone
    assert {k: v for k, v in small.items() if k not in ("name", "arch")} == {
        k: v for k, v in tiny.items() if k not in ("name", "arch")
    }
    searches = group_options("hparams_search")
    assert "base" not in searches and {"ppp_digit_scenes", "ssd_digit_scenes", "ppp_digits"} <= set(searches)
    for method in ("amnesiac", "bad_teacher"):
        train = compose_with([f"method={method}"]).method.train
        assert train.classification.optimizer == "adamw" and train.retrieval.warmup == 0.0
