"""Each baseline on a tiny MLP over 8-px digits (seconds), and once on the tiny CLIP hashing system."""

import pytest
import torch
from omegaconf import OmegaConf
from tiny_contexts import CONF, make_context, make_hashing_context

from ppp.config import compose_config
from ppp.data.base import carries_any
from ppp.evaluation.classification import evaluate_classification
from ppp.methods import METHODS, baselines
from ppp.methods.baselines import Concatenated, Relabelled, kl_divergence, random_wrong_labels, recipe

pytestmark = pytest.mark.usefixtures("single_thread")


def method_cfg(name: str, **classification) -> OmegaConf:
    """The method's shipped config with classification-recipe overrides that suit the tiny MLP."""
    cfg = OmegaConf.load(CONF / "method" / f"{name}.yaml")
    return OmegaConf.merge(cfg, {"train": {"classification": classification}})


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return make_context(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def original_acc(ctx):
    return evaluate_classification(ctx.trained()[0], ctx.bench, ctx.forget_idx, ctx.device)


@pytest.fixture
def trained_on(monkeypatch):
    """Records the data set of every call of the shared training loop made by a baseline."""
    seen = []

    def recording_train(system, data, *args, **kwargs):
        seen.append(data)
        return train(system, data, *args, **kwargs)

    train = baselines.train
    monkeypatch.setattr(baselines, "train", recording_train)
    return seen


def run(name, ctx, cfg):
    model, _ = METHODS.get(name)(ctx.trained()[0], ctx, cfg)
    return evaluate_classification(model, ctx.bench, ctx.forget_idx, ctx.device)


def assert_forgets(after, before):
    """The forget classes' test accuracy falls by at least 30 points, the retained classes' by at most 5."""
    assert after["forget/acc"] <= before["forget/acc"] - 0.3
    assert after["retain/acc"] >= before["retain/acc"] - 0.05


def test_original_is_accurate(original_acc):
    assert original_acc["forget/acc"] > 0.85 and original_acc["retain/acc"] > 0.85  # 0.89 / 0.90 (data version 2)


def test_retrain_never_sees_the_forget_class(ctx):
    model, _ = ctx.trained(exclude_forget=True)
    assert evaluate_classification(model, ctx.bench, ctx.forget_idx, ctx.device)["forget/acc"] == 0.0


def test_finetune_trains_on_retain_only(ctx, original_acc, trained_on):
    after = run("finetune", ctx, method_cfg("finetune", lr=0.1, weight_decay=0.02))
    (data,) = trained_on
    assert len(data) == len(ctx.retain_train) and not carries_any(data.labels, ctx.forget_idx).any()
    assert_forgets(after, original_acc)


def test_amnesiac_relabels_forget_samples_as_retained_classes(ctx, original_acc, trained_on):
    after = run("amnesiac", ctx, method_cfg("amnesiac", lr=1e-3, batch_size=32))
    (data,) = trained_on
    assert len(data) == len(ctx.retain_train) + len(ctx.forget_train)
    assert not carries_any(data.labels, ctx.forget_idx).any()
    assert_forgets(after, original_acc)


def test_bad_teacher_distils_a_random_model_on_forget_samples(ctx, original_acc, trained_on):
    after = run("bad_teacher", ctx, method_cfg("bad_teacher", lr=3e-4, batch_size=16))
    (data,) = trained_on
    assert carries_any(data.labels, ctx.forget_idx).sum() == len(ctx.forget_train)
    assert (~carries_any(data.labels, ctx.forget_idx)).sum() == round(0.3 * len(ctx.retain_train))
    assert_forgets(after, original_acc)


@pytest.fixture
def optimiser_steps():
    """Counts every optimiser step taken while the test runs."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps = []
    handle = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: steps.append(optimizer))
    yield steps
    handle.remove()


def test_bad_teacher_takes_the_official_number_of_steps(ctx, original_acc, optimiser_steps):
    """The shipped recipe (batch 256, Adam 1e-4, 1 epoch) is one batch per epoch here; `min_steps` (60, the
    official run's count) raises the epochs so that 60 optimiser steps are taken, and forgetting follows
    (a single step left forget accuracy where it was)."""
    # the shipped recipe (Adam's from train_recipe/adam.yaml), not digit_scenes' own (method_defaults/)
    cfg = compose_config(["method=bad_teacher", "~method_defaults"]).method
    assert cfg.min_steps == 60 and cfg.train.classification.batch_size == 256 and cfg.train.classification.lr == 1e-4
    model, diagnostics = METHODS.get("bad_teacher")(ctx.trained()[0], ctx, cfg)
    assert len(optimiser_steps) == 60 and diagnostics == {"bad_teacher/epochs": 60, "bad_teacher/steps": 60}
    after = evaluate_classification(model, ctx.bench, ctx.forget_idx, ctx.device)
    assert after["forget/acc"] <= original_acc["forget/acc"] - 0.15  # 0.89 -> 0.72 (data version 2)
    assert after["retain/acc"] >= original_acc["retain/acc"] - 0.05


def test_bad_teacher_keeps_the_epochs_that_already_take_enough_steps(ctx, optimiser_steps):
    """Where the recipe's epochs already take min_steps, they stay: 4 epochs of 25 batches of 16 = 100 steps."""
    cfg = method_cfg("bad_teacher", batch_size=16, epochs=4)
    _, diagnostics = METHODS.get("bad_teacher")(ctx.trained()[0], ctx, cfg)
    per_epoch = (len(ctx.forget_train) + round(0.3 * len(ctx.retain_train))) // 16
    assert diagnostics == {"bad_teacher/epochs": 4, "bad_teacher/steps": 4 * per_epoch}
    assert len(optimiser_steps) == 4 * per_epoch


def test_incompetent_teacher_is_untrained(ctx):
    teacher = baselines.incompetent_teacher(
        ctx, OmegaConf.create({"teacher_seed_offset": 1, "incompetent_pretrained": False})
    )
    accuracy = evaluate_classification(teacher, ctx.bench, ctx.forget_idx, ctx.device)["retain/acc"]
    assert accuracy < 0.5


def test_recipe_is_the_backbone_recipe_with_task_overrides(ctx):
    cfg = compose_config(["method=amnesiac"]).method  # with its shared optimiser recipe (train_recipe/adam.yaml)
    settings = recipe(ctx.trained()[0], ctx, cfg)
    assert settings.lr == 1e-4 and settings.epochs == 3 and list(settings.betas) == [0.9, 0.999]
    assert settings.batch_size == 128 and settings.warmup == 0.0


def test_random_wrong_labels():
    single = torch.tensor([6, 6, 6, 6, 6, 6])
    wrong = random_wrong_labels(single, [6], 10, seed=0)
    assert wrong.dtype == torch.long and not (wrong == 6).any()
    assert torch.equal(wrong, random_wrong_labels(single, [6], 10, seed=0))
    multi = torch.tensor([[0, 1, 0, 0, 0, 0, 1, 0, 0, 0]] * 50, dtype=torch.float32)
    swapped = random_wrong_labels(multi, [6], 10, seed=1)
    assert (swapped[:, 6] == 0).all() and (swapped[:, 1] == 1).all() and (swapped.sum(1) == 2).all()
    assert len(swapped.argmax(1).unique()) > 1  # the new label varies between samples


def test_relabelled_concatenation_keeps_item_format(ctx):
    forget = ctx.forget_train
    data = Concatenated(ctx.retain_train, Relabelled(forget, torch.zeros(len(forget), dtype=torch.long)))
    image, label = data[len(ctx.retain_train)]
    assert torch.equal(image, forget[0][0]) and label == 0
    assert torch.equal(data[3][0], ctx.retain_train[3][0]) and len(data) == len(data.labels)


def test_kl_reductions():
    log_student = torch.log_softmax(torch.randn(4, 5), dim=1)
    target = torch.softmax(torch.randn(4, 5), dim=1)
    assert torch.isclose(
        kl_divergence(log_student, target, "batchmean"), 5 * kl_divergence(log_student, target, "mean")
    )


def test_baselines_on_the_hashing_system(tmp_path):
    """Each baseline runs on CLIP hashing with the DSPH loss / proxy-cosine distillation and moves the net
    (Bad Teacher with 3 of its 60 minimum steps, to stay fast: its epochs are raised on this task too)."""
    ctx = make_hashing_context(tmp_path)
    before = ctx.trained()[0].net.image_head[0].weight.detach().clone()
    for name in ("finetune", "amnesiac", "bad_teacher"):
        method = OmegaConf.merge(
            OmegaConf.load(CONF / "method" / f"{name}.yaml"), {"train": {"retrieval": {"epochs": 1}}}
        )
        if name == "bad_teacher":
            method.min_steps = 3
        model, diagnostics = METHODS.get(name)(ctx.trained()[0], ctx, method)
        assert not torch.allclose(model.net.image_head[0].weight, before), name
        if name == "bad_teacher":
            assert diagnostics["bad_teacher/steps"] >= 3
