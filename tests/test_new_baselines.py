"""NegGrad+, SCRUB and SalUn: each one's update rule on the tiny MLP, and one run per method and path
through the runner (classification on digits, retrieval on digit scenes with clip_tiny)."""

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from omegaconf import OmegaConf
from tiny_contexts import CONF, RECIPE, TinyClassifier, make_context

from ppp.config import compose_config
from ppp.experiment import execute
from ppp.methods import METHODS
from ppp.methods.baselines import recipe
from ppp.methods.recent_baselines import (
    Stepper,
    distill_kl,
    neggrad_plus_objective,
    saliency,
    scrub_objectives,
    top_fraction_mask,
    trainable,
)
from ppp.train import make_loader

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"epochs": 1, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


def method_cfg(name: str, classification=None, **keys) -> OmegaConf:
    """The method's shipped config with top-level and classification-recipe overrides."""
    cfg = OmegaConf.load(CONF / "method" / f"{name}.yaml")
    return OmegaConf.merge(cfg, keys, {"train": {"classification": classification or {}}})


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return make_context(tmp_path_factory.mktemp("cache"))


def first_batch(ctx, data, size=64):
    return next(iter(make_loader(data, ctx.trained()[0], size)))


def mean_loss(system, ctx, data) -> float:
    system.eval()
    with torch.no_grad():
        return sum(system.loss(b).item() for b in make_loader(data, system, 1000))


# ---------------------------------------------------------------------------------------------- NegGrad+


def test_neggrad_plus_with_beta_1_is_finetuning_step_for_step(ctx):
    finetuned, _ = METHODS.get("finetune")(ctx.trained()[0], ctx, method_cfg("finetune", SMALL))
    negged, _ = METHODS.get("neggrad_plus")(ctx.trained()[0], ctx, method_cfg("neggrad_plus", SMALL, beta=1.0))
    for (name, a), b in zip(finetuned.state_dict().items(), negged.state_dict().values()):
        assert torch.equal(a, b), name


def test_neggrad_plus_with_beta_0_raises_the_forget_loss(ctx):
    before = mean_loss(ctx.trained()[0], ctx, ctx.forget_train)
    model, _ = METHODS.get("neggrad_plus")(ctx.trained()[0], ctx, method_cfg("neggrad_plus", SMALL, beta=0.0))
    assert mean_loss(model, ctx, ctx.forget_train) > before + 1.0


def test_neggrad_plus_objective_weights_retain_descent_and_forget_ascent(ctx):
    system = ctx.trained()[0]
    retain, forget = first_batch(ctx, ctx.retain_train), first_batch(ctx, ctx.forget_train)
    loss = neggrad_plus_objective(0.7, iter([forget]))(system, retain)
    assert torch.isclose(loss, 0.7 * system.loss(retain) - 0.3 * system.loss(forget))


# ------------------------------------------------------------------------------------------------- SCRUB


def perturbed(system, scale=0.05):
    """A student near the teacher: at the teacher itself the KL's gradient is zero."""
    student = copy.deepcopy(system).train()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(scale * torch.randn_like(p))
    return student


def one_step(student, objective, batch):
    settings = OmegaConf.create({"optimizer": "sgd", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "warmup": 0})
    Stepper(student, settings, total=1)(objective(student, batch))


def test_scrub_max_step_raises_the_forget_kl_and_min_step_lowers_the_retain_kl(ctx):
    teacher = ctx.trained()[0].eval()
    maximise, minimise = scrub_objectives(teacher, temperature=4.0, alpha=1.0, gamma=0.0)
    forget, retain = first_batch(ctx, ctx.forget_train), first_batch(ctx, ctx.retain_train)

    student = perturbed(teacher)
    before = distill_kl(student, teacher, forget, 4.0).item()
    one_step(student, maximise, forget)
    assert distill_kl(student, teacher, forget, 4.0).item() > before * 1.05

    student = perturbed(teacher)
    before = distill_kl(student, teacher, retain, 4.0).item()
    one_step(student, minimise, retain)
    assert distill_kl(student, teacher, retain, 4.0).item() < before * 0.95


def test_scrub_min_step_is_gamma_task_loss_plus_alpha_kl(ctx):
    teacher = ctx.trained()[0].eval()
    student, retain = perturbed(teacher), first_batch(ctx, ctx.retain_train)
    _, minimise = scrub_objectives(teacher, temperature=4.0, alpha=0.3, gamma=0.6)
    expected = 0.6 * student.loss(retain) + 0.3 * distill_kl(student, teacher, retain, 4.0)
    assert torch.isclose(minimise(student, retain), expected)
    log_s, t = F.log_softmax(student.logits(retain) / 4, 1), F.softmax(teacher.logits(retain) / 4, 1)
    assert torch.isclose(distill_kl(student, teacher, retain, 4.0), 16 * (t * (t.log() - log_s)).sum(1).mean())


def test_scrub_runs_max_passes_only_in_the_first_msteps_epochs(ctx):
    fast = {**SMALL, "batch_size": 64, "forget_batch_size": 64, "epochs": 1}
    _, with_max = METHODS.get("scrub")(ctx.trained()[0], ctx, method_cfg("scrub", fast, msteps=1))
    _, without = METHODS.get("scrub")(ctx.trained()[0], ctx, method_cfg("scrub", fast, msteps=0))
    assert with_max["scrub/max_kl"] >= 0 and "scrub/min_loss" in with_max
    assert "scrub/max_kl" not in without


# ------------------------------------------------------------------------------------------------- SalUn


def test_top_fraction_mask_holds_the_highest_scores_globally():
    scores = {"a": torch.tensor([[5.0, 1.0], [0.5, 9.0]]), "b": torch.tensor([3.0, 2.0, 7.0, 0.0])}
    mask = top_fraction_mask(scores, 0.5)
    assert mask["a"].tolist() == [[True, False], [False, True]] and mask["b"].tolist() == [True, False, True, False]


def test_salun_updates_exactly_the_masked_weights(ctx):
    cfg = method_cfg("salun", {**SMALL, "epochs": 2})
    original = ctx.trained()[0]
    settings = recipe(original, ctx, cfg)
    scores = saliency(original, ctx.forget_train, trainable(original, settings), settings.batch_size, ctx)
    mask = top_fraction_mask(scores, float(cfg.mask_fraction))
    flat_scores = torch.cat([s.flatten() for s in scores.values()])
    flat_mask = torch.cat([m.flatten() for m in mask.values()])
    assert flat_mask.sum() == int(0.5 * len(flat_mask))
    assert flat_scores[flat_mask].min() >= flat_scores[~flat_mask].max()

    model, diagnostics = METHODS.get("salun")(ctx.trained()[0], ctx, cfg)
    after = dict(model.named_parameters())
    for name, before in original.named_parameters():
        m = mask[name]
        assert torch.equal(after[name][~m], before[~m]), name  # unmasked: bit-identical (weight decay too)
        assert (after[name][m] != before[m]).float().mean() > 0.9, name  # masked: moved
    assert diagnostics["salun/mask_share"] == pytest.approx(0.5, abs=1e-6)


# ------------------------------------------------------------------------------------------- the runner


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One cache (so each path's original trains once) and one run index for the runner tests."""
    return tmp_path_factory.mktemp("runner")


def tiny_classifier(cfg, num_classes, bits, seed):
    """The runner's network for the classification runs: the tiny MLP in place of the ResNet (seconds, not
    half a minute), handed to the runner as a factory."""
    torch.manual_seed(seed)
    return TinyClassifier(num_classes, image_size=8, hidden=64)


def run(shared, overrides, system_factory=None):
    cfg = compose_config(
        [
            f"cache_dir={shared / 'cache'}",
            f"run_index={shared / 'index'}",
            f"out_dir={shared / 'out'}",
            "device=cpu",
            "references=[original]",
            "skip_finished=false",
            *overrides,
        ]
    )
    return execute(cfg, system_factory=system_factory)


# The resnet18 config on 8-px digits; `tiny_classifier` builds the network in its place: seconds a run.
TINY_CLASSIFIER = [
    "dataset=digits",
    "dataset.size=8",
    "dataset.per_class=180",
    *(f"backbone.train.{k}={v}" for k, v in RECIPE.items()),
]


@pytest.mark.parametrize(
    "method, overrides",
    [
        # the official lr 5e-4 barely moves the MLP in 3 epochs; the first max-pass starts at the KL's minimum.
        # The official values, not digits' own (method_defaults/scrub_digits.yaml, chosen for ResNet-18)
        ("scrub", ["~method_defaults", "method.train.classification.lr=0.05"]),
        ("salun", []),
        ("neggrad_plus", []),
    ],
)
def test_classification_run_through_the_runner(shared, method, overrides):
    result = run(shared, [*TINY_CLASSIFIER, f"method={method}", *overrides], tiny_classifier)
    m, original = result["metrics"], result["references"]["original"]
    for key in ("forget/acc", "retain/acc", "forget/mia", "retain/mia", "time/unlearn_s"):
        assert key in m, key
    assert m["forget/acc"] <= original["forget/acc"] - 0.3
    assert m["retain/acc"] >= original["retain/acc"] - 0.1


@pytest.mark.parametrize("method", ["scrub", "salun", "neggrad_plus"])
def test_retrieval_run_through_the_runner(shared, method):
    """The tiny CLIP's forget mAP is near chance after TINY's one epoch, so only its movement is asserted."""
    result = run(shared, [*TINY, f"method={method}", "method.train.retrieval.epochs=1"])
    m, original = result["metrics"], result["references"]["original"]
    for key in ("forget/i2t_map", "forget/t2i_map", "retain/i2t_map", "retain/t2i_map", "time/unlearn_s"):
        assert 0.0 <= m[key] <= 1.0 or key.startswith("time/"), key
    forget = m["forget/i2t_map"] + m["forget/t2i_map"]
    assert abs(forget - original["forget/i2t_map"] - original["forget/t2i_map"]) > 1e-4


@pytest.mark.parametrize(
    "override, message",
    [
        ("method=neggrad_plus method.beta=1.5", "method.beta must lie in [0, 1]"),
        ("method=scrub method.msteps=-1", "method.msteps must be >= 0"),
        ("method=scrub method.temperature.classification=0", "method.temperature.classification must lie in (0"),
        ("method=scrub method.train.classification.forget_batch_size=0", "forget_batch_size must be >= 1"),
        ("method=salun method.mask_fraction=0", "method.mask_fraction must lie in (0, 1]"),
    ],
)
def test_new_keys_are_validated(override, message):
    from ppp.errors import ConfigError
    from ppp.validation import check_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_config(override.split()))
