"""PPP's mechanism flags (`method.sign_flip`, `method.gamma`, `method.neighbours`): the defaults are the
method as before; each flag changes only its own part."""

import pytest
import torch
from omegaconf import OmegaConf
from tiny_contexts import CONF, make_hashing_context

from ppp.errors import ConfigError
from ppp.methods import METHODS
from ppp.methods.prototypes import random_neighbours
from ppp.validation import check_config


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    # alpha 5, lam 60: a regime where w and gamma matter (w is not ~0 on the selected entries)
    return make_hashing_context(
        tmp_path_factory.mktemp("flags"),
        ["method.forget_samples=12", "method.alpha=5", "method.lam=60", "method.lam_max=0.25", "method.tau=0.5"],
    )


def unlearn(ctx, **flags):
    cfg = OmegaConf.merge(ctx.cfg.method, flags)
    model, diagnostics = METHODS.get("ppp")(ctx.trained()[0], ctx, cfg)
    return {k: v.detach().clone() for k, v in model.net.named_parameters()}, diagnostics


def test_defaults_equal_the_method_without_the_flags(ctx, single_thread):
    defaults, diag = unlearn(ctx)
    assert (
        ctx.cfg.method.sign_flip is True and ctx.cfg.method.gamma is None and ctx.cfg.method.neighbours == "prototype"
    )
    without = OmegaConf.create(
        {
            k: v
            for k, v in OmegaConf.to_container(ctx.cfg.method).items()
            if k not in ("sign_flip", "gamma", "neighbours")
        }
    )  # a config from before the flags
    model, _ = METHODS.get("ppp")(ctx.trained()[0], ctx, without)
    assert all(torch.equal(defaults[k], v) for k, v in model.net.named_parameters())
    same_gamma, _ = unlearn(ctx, gamma=diag["ppp/gamma"])  # the computed gamma, given explicitly
    assert all(torch.equal(defaults[k], same_gamma[k]) for k in defaults)
    assert diag["ppp/n_core"] > 0 and diag["ppp/share_c"] == pytest.approx(
        diag["ppp/n_core"] / (diag["ppp/n_core"] + diag["ppp/n_buffer"])
    )
    assert diag["ppp/factor_c_q10"] <= diag["ppp/factor_c_q50"] <= diag["ppp/factor_c_q90"] < 0


def test_sign_flip_and_gamma_act_on_the_core_only(ctx, single_thread):
    flipped, diag = unlearn(ctx)
    kept, diag_kept = unlearn(ctx, sign_flip=False)
    one, diag_one = unlearn(ctx, gamma=1.0)
    assert diag_one["ppp/gamma"] == 1.0 and diag["ppp/gamma"] != 1.0
    assert diag_kept["ppp/factor_c_q50"] == pytest.approx(-diag["ppp/factor_c_q50"])
    assert diag_one["ppp/factor_c_q50"] == pytest.approx(diag["ppp/factor_c_q50"] / diag["ppp/gamma"])
    differ = 0
    for name in flipped:  # the core entries change sign, nothing else moves
        moved = kept[name] != flipped[name]
        assert torch.equal(kept[name][moved], -flipped[name][moved])
        differ += int(moved.sum())
    assert 0 < differ <= diag["ppp/n_core"]


def test_random_neighbours_are_seeded_and_replace_the_prototype_ones(ctx, single_thread):
    _, diag = unlearn(ctx)
    _, diag_random = unlearn(ctx, neighbours="random")
    drawn = random_neighbours(10, ctx.forget_idx, 2, ctx.sample_seed)
    assert [ctx.bench.class_names[c] for c in drawn] == diag_random["ppp/neighbours"]
    assert drawn == random_neighbours(10, ctx.forget_idx, 2, ctx.sample_seed)
    assert drawn != random_neighbours(10, ctx.forget_idx, 2, ctx.sample_seed + 1) or drawn != random_neighbours(
        10, ctx.forget_idx, 2, ctx.sample_seed + 2
    )
    assert not set(drawn) & set(ctx.forget_idx) and len(drawn) == len(diag["ppp/neighbours"])
    assert diag_random["ppp/gamma"] == diag["ppp/gamma"]  # gamma still from the prototype geometry


@pytest.mark.parametrize(
    "override, message",
    [
        ({"sign_flip": "yes"}, "method.sign_flip must be one of True, False"),
        ({"gamma": -1}, "method.gamma must lie in [0, inf]"),
        ({"neighbours": "nearest"}, "method.neighbours must be one of prototype, random"),
    ],
)
def test_bad_flags_are_one_line_errors(override, message):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"method.{k}={v}" for k, v in override.items()])
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)
