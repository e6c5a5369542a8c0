"""Every config value is checked before any work starts, with a one-line error naming the valid range.

Each config section is parsed through its typed schema (`ppp.schema`), declared beside the code that owns
the section: the run's own keys here (`RunSettings`), a method's with its registry entry
(`ppp.methods.METHODS.schema(name)`), likewise the evaluators, datasets and backbones (by `backbone.kind`).
`check_sections` parses them all; the checks that span sections (`check_combinations`) follow. Checks
that need the benchmark (e.g. `method.k` against the number of retained classes) live in
`check_against_benchmark`, run once the benchmark is built.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ppp import identity
from ppp.data import DATASETS
from ppp.errors import ConfigError
from ppp.evaluation import EVALUATORS
from ppp.forget_set import ForgetSetSettings
from ppp.methods import METHODS
from ppp.methods.fisher_forgetting import NEEDS_CLASS_HEAD
from ppp.methods.registry import CLASS_HEAD, CLIP_SPACE, FORGET_CLASSES
from ppp.models import BACKBONES
from ppp.schema import (  # noqa: F401  (the check builders, importable from here as before)
    Check,
    block,
    boolean,
    distinct_subset_of,
    integer,
    mapping,
    number,
    one_of,
    parse,
    prompt_template,
    schema,
    setting,
    subset_of,
)

CLASS_FORGET_SET = parse(ForgetSetSettings, identity.NEUTRAL_DEFAULTS["forget_set"], "forget_set")
SECTIONS = {"dataset": DATASETS, "backbone": BACKBONES, "method": METHODS, "evaluator": EVALUATORS}
NOT_RUN_KEYS = ("hydra", "tune")  # Hydra's own node (return_hydra_config); a search's block (ppp.tune.TuneSettings)


def positive_integer() -> Check:
    def check(path, value):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{path} must be a positive integer, got '{value}'")

    return check


def class_names() -> Check:
    def check(path, value):
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list of class names, e.g. {path}=[six]; got '{value}'")

    return check


@schema
class RunSettings:
    """The run's own keys (`config.yaml`); the sections are parsed with their own schemas."""

    bits: int = setting(positive_integer())
    seed: int = setting(integer(0))
    sample_seed: int = setting(integer(0))
    device: str = setting()
    forget: list[str] = setting(class_names())
    forget_set: ForgetSetSettings = block(ForgetSetSettings, default=CLASS_FORGET_SET)  # what a request deletes
    data_root: str = setting()
    cache_dir: str = setting()
    num_workers: int = setting(integer(0))
    references: list[str] | None = setting()
    delta: str = setting(one_of("mean_abs", "abs_mean"))
    out_dir: str | None = setting()
    optimized_metric: str = setting()
    run_index: str = setting()
    skip_finished: bool = setting(boolean())
    save_model: bool = setting(boolean())
    # Values an experiment file shares between its bundles through interpolation (absent elsewhere):
    pareto_alpha: float | None = setting(number(0, optional=True), default=None)  # experiment=mechanism_pareto
    mechanism_best: dict | None = setting(
        mapping(optional=True), default=None
    )  # PPP's point (mechanism_variant/ppp_best*)
    mechanism_ssd: dict | None = setting(mapping(optional=True), default=None)  # SSD's alpha (mechanism_variant/ssd*)


def section_schema(cfg: DictConfig, section: str) -> type:
    """The schema of `cfg.<section>`, found by its name (a backbone: by its kind)."""
    node = cfg[section]
    key = "kind" if section == "backbone" else "name"
    if not OmegaConf.is_dict(node) or key not in node:
        raise ConfigError(f"{section} must be a config section with a `{key}`; got '{node}'")
    return SECTIONS[section].schema(node[key])


def check_sections(cfg: DictConfig, complete: bool = True) -> dict[str, Any]:
    """Every section parsed through its schema (`complete`: unknown and missing keys are errors; without it
    only the values present are checked, for partial configs). Returns the parsed settings by section."""
    run = {k: v for k, v in (cfg.items() if OmegaConf.is_config(cfg) else []) if k not in (*SECTIONS, *NOT_RUN_KEYS)}
    parsed = {"run": parse(RunSettings, run, "", complete)}
    for section in SECTIONS:
        if section in cfg:
            parsed[section] = parse(section_schema(cfg, section), cfg[section], section, complete)
    return parsed


def check_config(cfg: DictConfig) -> None:
    """The values a (possibly partial) config holds, each against its schema, then the cross-section
    checks; raise the first ConfigError. The CLIP-side methods' backbone comes first."""
    check_clip_method_backbone(cfg)
    check_sections(cfg, complete=False)
    check_combinations(cfg)


def check_combinations(cfg: DictConfig) -> None:
    """Values that are valid alone but not together (within a section: the schema's own `check`)."""
    needs = method_needs(cfg)
    if CLIP_SPACE in needs:
        require_clip_backbone(cfg, f"method={cfg.method.name}")
    if CLASS_HEAD in needs and OmegaConf.select(cfg, "backbone.task") == "retrieval":
        raise ConfigError(NEEDS_CLASS_HEAD)
    if OmegaConf.select(cfg, "method.name") is not None:
        METHODS.schema(cfg.method.name).check_run(cfg)
    check_item_forget_set(cfg, needs)
    if OmegaConf.select(cfg, "evaluator.zeroshot") or OmegaConf.select(cfg, "evaluator.name") == "zeroshot":
        check_clip_space(cfg, "zero-shot evaluation")


# Evaluator keys whose measure is defined by the forget classes (prototypes, class probes, class prompts, k-shot
# examples of a class, class groups): an item forget set (issue 22) has none.
CLASS_ONLY_EVALUATION = ("density", "residual", "zeroshot", "relearn", "distance")


def check_item_forget_set(cfg: DictConfig, needs: frozenset[str]) -> None:
    """An item forget set (forget_set.kind other than classes) needs a method and measures that do not
    forget or measure by class."""
    kind = OmegaConf.select(cfg, "forget_set.kind", default="classes")
    if kind == "classes":
        return
    if FORGET_CLASSES in needs:
        usable = ", ".join(n for n in METHODS.names() if FORGET_CLASSES not in METHODS.schema(n).needs)
        raise ConfigError(
            f"method={cfg.method.name} forgets whole classes; forget_set={kind} deletes items: use one of {usable}"
        )
    for key in CLASS_ONLY_EVALUATION:
        if OmegaConf.select(cfg, f"evaluator.{key}"):
            raise ConfigError(
                f"evaluator.{key} measures by the forget classes; forget_set={kind} deletes items: turn it off"
            )


def require_clip_backbone(cfg: DictConfig, what: str) -> None:
    if OmegaConf.select(cfg, "backbone.kind") != "clip_hashing":
        raise ConfigError(
            f"{what} needs a CLIP backbone (backbone.kind=clip_hashing); got backbone={cfg.backbone.name}"
        )


def method_needs(cfg: DictConfig) -> frozenset[str]:
    """What the config's method needs of the model (`MethodSettings.needs`; none without a method)."""
    method = OmegaConf.select(cfg, "method.name")
    return frozenset() if method is None else METHODS.schema(method).needs


def check_clip_method_backbone(cfg: DictConfig) -> None:
    """First, before the sections: a CLIP-space method's keys mean nothing on another backbone."""
    if CLIP_SPACE in method_needs(cfg):
        require_clip_backbone(cfg, f"method={cfg.method.name}")


def check_clip_space(cfg: DictConfig, what: str) -> None:
    """Zero-shot evaluation needs a CLIP backbone, and one-digit images drawn by the digit_scenes
    generator (its class words and domains)."""
    require_clip_backbone(cfg, what)
    if OmegaConf.select(cfg, "dataset.name") != "digit_scenes":
        raise ConfigError(
            f"{what} draws its one-digit test images with the digit_scenes generator; got dataset={cfg.dataset.name}"
        )


def check_against_benchmark(cfg: DictConfig, num_classes: int, forget_idx: list[int]) -> None:
    """Values whose valid range depends on the benchmark."""
    retained = num_classes - len(forget_idx)
    k = OmegaConf.select(cfg, "method.k")
    if k is not None and k > retained - 1:
        raise ConfigError(
            f"method.k={k}: at most {retained - 1} neighbours, since {retained} classes are retained "
            f"and at least one must stay outside the neighbour set"
        )
