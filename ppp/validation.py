"""Every config value is checked before any work starts, with a one-line error naming the valid range.

`RULES` maps a dotted config path to a check; a path absent from the composed config is skipped (each
method or evaluator has its own keys), so a rule can be declared once for every group that uses it.
Checks that need the benchmark (e.g. `method.k` against the number of retained classes) live in
`check_against_benchmark`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ppp.data.digits import DOMAINS
from ppp.errors import ConfigError
from ppp.evaluation.map import TIES, check_map_settings
from ppp.fisher import BATCH_ORDERS, MODES, REFERENCES
from ppp.methods.clip_side import PARADIGMS, PROTOTYPES
from ppp.methods.cliperase import FORGET_LOSSES
from ppp.methods.projection import VARIANTS

CLIP_METHODS = ("ccup", "clip_nullspace", "cliperase")  # methods that act in CLIP's own space

Check = Callable[[str, Any], None]


def _number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path} must be a number, got '{value}'") from None
    return float(value)


def integer(low: int | None = None, optional: bool = False) -> Check:
    def check(path, value):
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{path} must be an integer{'' if low is None else f' >= {low}'}"
                f"{' or null' if optional else ''}, got '{value}'"
            )
        if low is not None and value < low:
            raise ConfigError(f"{path} must be >= {low}, got {value}")

    return check


def number(low: float = -math.inf, high: float = math.inf, low_open: bool = False, optional: bool = False) -> Check:
    def check(path, value):
        if value is None and optional:
            return
        x = _number(path, value)
        if math.isnan(x) or x < low or x > high or (low_open and x == low):
            bound = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise ConfigError(f"{path} must lie in {bound}, got {value}")

    return check


def one_of(*choices: Any, optional: bool = False) -> Check:
    def check(path, value):
        if value is None and optional:
            return
        if value not in choices:
            raise ConfigError(f"{path} must be one of {', '.join(map(str, choices))}; got '{value}'")

    return check


def subset_of(*choices: str) -> Check:
    def check(path, value):
        unknown = [v for v in (value or []) if v not in choices]
        if unknown:
            raise ConfigError(f"{path}: unknown value(s) {', '.join(map(str, unknown))}; valid: {', '.join(choices)}")

    return check


def distinct_subset_of(*choices: str, optional: bool = False) -> Check:
    def check(path, value):
        if value is None and optional:
            return
        if not isinstance(value, list) or not value:
            raise ConfigError(
                f"{path} must be a non-empty list of {', '.join(choices)}{' or null' if optional else ''}; "
                f"got '{value}'"
            )
        subset_of(*choices)(path, value)
        if len(set(value)) != len(value):
            raise ConfigError(f"{path} names a value twice: {value}")

    return check


def prompt_template(*slots: str) -> Check:
    """A prompt template (or a list of them) that holds exactly one `{}` slot besides the named `slots`."""

    def check(path, value):
        for template in value if isinstance(value, list) else [value]:
            try:
                ok = (
                    isinstance(template, str)
                    and template.count("{}") == 1
                    and template.format("x", **{s: "y" for s in slots}) is not None
                )
            except (IndexError, KeyError, ValueError):
                ok = False
            if not ok or any("{" + s + "}" not in template for s in slots):
                wanted = " and ".join(["one {} slot", *(f"a {{{s}}} slot" for s in slots)])
                raise ConfigError(f"{path}: the prompt template '{template}' must hold {wanted} and no other braces")
        if isinstance(value, list) and not value:
            raise ConfigError(f"{path} must list at least one prompt template")

    return check


RULES: dict[str, Check] = {
    "seed": integer(0),
    "sample_seed": integer(0),
    "bits": integer(1),
    "num_workers": integer(0),
    "delta": one_of("mean_abs", "abs_mean"),
    "save_model": one_of(True, False),
    "skip_finished": one_of(True, False),
    # datasets
    "dataset.surface_forms": one_of(True, False),
    "dataset.mention_prob": number(0, 1, low_open=True),
    "dataset.domains": distinct_subset_of(*DOMAINS, optional=True),
    # backbones
    "backbone.loss.contrastive_weight": number(0),
    # dampening methods (ppp, ssd, fisher)
    "method.alpha": number(0),
    "method.lam": number(0),
    "method.lam_max": number(0),
    "method.tau": number(0, low_open=True),
    "method.exponent": number(0, low_open=True),
    "method.eps": number(0),
    "method.k": integer(1),
    "method.gamma_max": number(0, low_open=True, optional=True),
    "method.gamma": number(0, optional=True),
    "method.sign_flip": one_of(True, False),
    "method.neighbours": one_of("prototype", "random"),
    "method.reference": one_of(*REFERENCES),
    "method.fisher_mode": one_of(*MODES),
    "method.batch_order": one_of(*BATCH_ORDERS),
    "method.fisher_context_size": integer(1),
    "method.fisher_batch_size": integer(1),
    "method.fisher_chunk": integer(1),
    "method.fisher_memory_mb": number(0, low_open=True, optional=True),
    "method.forget_samples": integer(1, optional=True),
    "method.neighbour_samples": integer(1, optional=True),
    "method.retain_samples": integer(1, optional=True),
    "method.reference_samples": integer(1, optional=True),
    "method.prototype_modality": one_of("image", "text", "mean"),
    "method.retain_excludes_neighbours": one_of(True, False),
    # CLIP-side methods (ccup, clip_nullspace, cliperase); method.alpha in [0, 1] is checked with the method
    "method.templates": prompt_template(),
    "method.domain_template": prompt_template("domain"),
    "method.variant": one_of(*VARIANTS),
    "method.ridge_lambda": number(0),
    "method.ridge_mu": number(0, low_open=True),
    "method.paradigm": one_of(*PARADIGMS),
    "method.domains": subset_of(*DOMAINS),
    "method.prototypes": one_of(*PROTOTYPES),
    "method.gap_images": integer(1),
    "method.forget_loss": one_of(*FORGET_LOSSES),
    "method.forget_weight": number(0),
    "method.retain_weight": number(0),
    "method.consistency_weight": number(0),
    # training baselines
    "method.kl_reduction": one_of("mean", "batchmean"),
    "method.retain_fraction": number(0, 1, low_open=True),
    "method.temperature.classification": number(0, low_open=True),
    "method.temperature.retrieval": number(0, low_open=True),
    "method.beta": number(0, 1),
    "method.msteps": integer(0),
    "method.mask_fraction": number(0, 1, low_open=True),
    "method.train.classification.forget_batch_size": integer(1, optional=True),
    "method.train.retrieval.forget_batch_size": integer(1, optional=True),
    # evaluators
    "evaluator.forget_relevance": one_of("forget_classes", "any_label"),
    "evaluator.topk": integer(1, optional=True),
    "evaluator.batch_size": integer(1),
    "evaluator.mia": subset_of("entropy_lr", "shokri"),
    "evaluator.mia_settings.fit_fraction": number(0, 1, low_open=True),
    "evaluator.mia_settings.n_shadow": integer(1),
    "evaluator.mia_settings.attack": one_of("mlp", "lr"),
    "evaluator.density": one_of(True, False),
    "evaluator.residual": one_of(True, False),
    "evaluator.ties": one_of(*TIES),
    "evaluator.zeroshot": one_of(True, False),
    "evaluator.zeroshot_settings.templates": prompt_template(),
    "evaluator.zeroshot_settings.domain_template": prompt_template("domain"),
    "evaluator.zeroshot_settings.per_class": integer(1),
    "evaluator.zeroshot_settings.seed": integer(0),
}


def check_config(cfg: DictConfig) -> None:
    """Apply every rule whose path the config holds; raise the first ConfigError. The CLIP-side methods
    come first: their method.alpha lies in [0, 1], where the dampening methods' rule allows any alpha >= 0."""
    method = OmegaConf.select(cfg, "method.name")
    if method in CLIP_METHODS:
        check_clip_method(cfg, method)
    for path, check in RULES.items():
        value = OmegaConf.select(cfg, path, default="<absent>")
        if not (isinstance(value, str) and value == "<absent>"):
            check(path, OmegaConf.to_object(value) if OmegaConf.is_config(value) else value)
    check_combinations(cfg)


def check_combinations(cfg: DictConfig) -> None:
    """Values that are valid alone but not together."""
    if OmegaConf.select(cfg, "evaluator.ties") is not None:
        check_map_settings(cfg.evaluator.ties, cfg.evaluator.get("topk"))
    if OmegaConf.select(cfg, "evaluator.zeroshot") or OmegaConf.select(cfg, "evaluator.name") == "zeroshot":
        check_clip_space(cfg, "zero-shot evaluation")


def require_clip_backbone(cfg: DictConfig, what: str) -> None:
    if OmegaConf.select(cfg, "backbone.kind") != "clip_hashing":
        raise ConfigError(
            f"{what} needs a CLIP backbone (backbone.kind=clip_hashing); got backbone={cfg.backbone.name}"
        )


def check_clip_method(cfg: DictConfig, method: str) -> None:
    """A CLIP backbone; a strength in [0, 1]; the nullspace's chosen domains among the data's."""
    require_clip_backbone(cfg, f"method={method}")
    if "alpha" in cfg.method:
        number(0, 1)("method.alpha", cfg.method.alpha)
    if method == "clip_nullspace" and cfg.method.paradigm in ("domain", "complete"):
        chosen, available = list(cfg.method.domains), list(OmegaConf.select(cfg, "dataset.domains") or [])
        if not chosen:
            raise ConfigError(
                f"method.paradigm={cfg.method.paradigm} needs method.domains, e.g. method.domains=[negative]"
            )
        missing = [d for d in chosen if d not in available]
        if missing:
            raise ConfigError(f"method.domains: {', '.join(missing)} not among dataset.domains ({available or 'none'})")


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
