import math

import pytest
import torch
from omegaconf import OmegaConf
from tiny_contexts import make_context
from torch import nn

from ppp.data.base import carries_any
from ppp.fisher import batch_fisher
from ppp.methods.dampening import DampeningRule, apply_dampening, forget_and_reference_fisher
from ppp.methods.prototypes import class_prototypes, prototype_geometry


class Tiny(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(values))


def dampen(values, rule, i_f, i_r, i_n=None):
    net = Tiny(values)
    counts = apply_dampening(
        net, rule, {"w": torch.tensor(i_f)}, {"w": torch.tensor(i_r)}, None if i_n is None else {"w": torch.tensor(i_n)}
    )
    return net.w.detach(), counts


def test_ssd_rule_by_hand():
    # alpha = 10, lambda = 1: select I_f > 10 I_D, scale by min(I_D / I_f, 1)
    theta, counts = dampen(
        [1.0, 2.0, 3.0, 4.0], DampeningRule(alpha=10, lam=1), i_f=[5.0, 50.0, 0.0, 200.0], i_r=[1.0, 1.0, 1.0, 4.0]
    )
    assert theta.tolist() == pytest.approx([1.0, 2.0 * (1 / 50), 3.0, 4.0 * (4 / 200)])
    assert counts == {
        "n_shared": 2,
        "n_buffer": 2,
        "n_core": 0,
        "share_b": 1.0,
        "share_c": 0.0,
        **{f"factor_b_q{q}": pytest.approx(0.02) for q in (10, 50, 90)},
    }  # both factors 0.02


def test_ssd_lambda_clamps_at_one():
    theta, _ = dampen([1.0], DampeningRule(alpha=0.1, lam=100), i_f=[2.0], i_r=[1.0])
    assert theta.item() == pytest.approx(1.0)  # min(100 * 1 / 2, 1) = 1: weights never grow


def test_ppp_regions_weights_and_sign_inversion():
    rule = DampeningRule(alpha=2, lam=1, tau=3, lam_max=0.5, exponent=2, eps=0.0, gamma=4.0)
    # entry 0: I_f = 1 <= 2 * 1      -> S, unchanged
    # entry 1: I_f = 10 > 2, 10 < 3*5 -> B, w = min((1/10)^2, .5) = 0.01
    # entry 2: I_f = 10 > 2, 10 >= 3*1 -> C, -gamma * w = -0.04
    # entry 3: I_f = 3 > 2 * 1, I_n = 0 -> C, w = min((1/3)^2, .5) = 1/9
    # entry 4: I_f = 1.5 > 2 * 0.5, I_n = 1 -> B, w = min((0.5 / 1.5)^2, 0.5) = 1/9
    theta, counts = dampen(
        [1.0, 1.0, 1.0, 2.0, 3.0],
        rule,
        i_f=[1.0, 10.0, 10.0, 3.0, 1.5],
        i_r=[1.0, 1.0, 1.0, 1.0, 0.5],
        i_n=[0.0, 5.0, 1.0, 0.0, 1.0],
    )
    assert theta.tolist() == pytest.approx([1.0, 0.01, -0.04, -4.0 * 2.0 / 9, 3.0 / 9])
    assert {k: counts[k] for k in ("n_shared", "n_buffer", "n_core")} == {"n_shared": 1, "n_buffer": 2, "n_core": 2}
    assert counts["share_b"] == counts["share_c"] == 0.5
    # B's factors 0.01 and 1/9, C's -0.04 and -4/9: linear interpolation between the two
    assert counts["factor_b_q50"] == pytest.approx((0.01 + 1 / 9) / 2)
    assert counts["factor_b_q10"] == pytest.approx(0.01 + 0.1 * (1 / 9 - 0.01))
    assert counts["factor_c_q90"] == pytest.approx(-4 / 9 + 0.9 * (4 / 9 - 0.04))
    # without the sign flip the core keeps its magnitude gamma * w and its sign
    unflipped, _ = dampen(
        [1.0, 1.0, 1.0, 2.0, 3.0],
        DampeningRule(**{**rule.__dict__, "sign_flip": False}),
        i_f=[1.0, 10.0, 10.0, 3.0, 1.5],
        i_r=[1.0, 1.0, 1.0, 1.0, 0.5],
        i_n=[0.0, 5.0, 1.0, 0.0, 1.0],
    )
    assert unflipped.tolist() == pytest.approx([1.0, 0.01, 0.04, 4.0 * 2.0 / 9, 3.0 / 9])


def test_default_rule_is_the_formula_of_eq_7():
    """sign_flip=True (the default) gives exactly the factor the rule had before the flag existed."""
    g = torch.Generator().manual_seed(1)
    i_f, i_r, i_n = (torch.rand(5000, generator=g) ** 4 for _ in range(3))
    rule = DampeningRule(alpha=2.0, lam=3.0, tau=1.5, lam_max=0.25, exponent=2.0, eps=1e-12, gamma=4.2)
    factor, buffer, core = rule.factors(i_f, i_r, i_n)
    selected = i_f > 2.0 * i_r
    w = (3.0 * i_r / torch.where(selected, i_f + 1e-12, torch.ones_like(i_f))).pow(2.0).clamp(max=0.25)
    expected = torch.where(buffer, w, torch.where(core, -4.2 * w, torch.ones_like(w)))
    assert torch.equal(factor, expected) and int(core.sum()) > 0 and int(buffer.sum()) > 0


def test_lambda_max_caps_w():
    rule = DampeningRule(alpha=0, lam=10, tau=math.inf, lam_max=0.3, exponent=2)
    theta, _ = dampen([1.0], rule, i_f=[2.0], i_r=[1.0])
    assert theta.item() == pytest.approx(0.3)


def test_ppp_reduces_to_ssd():
    """Exponent 1, lambda_max 1, eps 0 and tau so large that C is empty: PPP's update is SSD's."""
    g = torch.Generator().manual_seed(0)
    i_f, i_r, i_n = (torch.rand(1000, generator=g) ** 3 for _ in range(3))
    theta = torch.randn(1000, generator=g)
    ssd, _ = dampen(theta.tolist(), DampeningRule(alpha=1.5, lam=0.7), i_f.tolist(), i_r.tolist())
    ppp, counts = dampen(
        theta.tolist(),
        DampeningRule(alpha=1.5, lam=0.7, tau=1e30, lam_max=1.0, exponent=1.0, eps=0.0, gamma=123.0),
        i_f.tolist(),
        i_r.tolist(),
        i_n.tolist(),
    )
    assert counts["n_core"] == 0 and counts["n_buffer"] > 0
    assert torch.allclose(ssd, ppp)


def test_prototypes_multi_label_mean():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    protos = class_prototypes(features, labels, 3)
    assert protos.tolist() == [[1.0, 0.5], [0.5, 1.0], [0.0, 0.0]]
    single = class_prototypes(features, torch.tensor([0, 1, 1]), 2)
    assert single.tolist() == [[1.0, 0.0], [0.5, 1.0]]


def test_neighbours_and_gamma():
    # class 0 forgotten; classes 1, 2 at distance 1 and 2; classes 3, 4 at distance 6
    protos = torch.tensor([[0.0], [1.0], [-2.0], [6.0], [-6.0]])
    geometry = prototype_geometry(protos, [0], k=2)
    assert geometry.neighbours == [1, 2]
    assert geometry.mu_n == pytest.approx(1.5) and geometry.mu_rest == pytest.approx(6.0)
    assert geometry.gamma == pytest.approx(16.0)
    assert prototype_geometry(protos, [0], k=2, gamma_max=5.0).gamma == 5.0


def test_neighbours_of_several_forget_classes():
    protos = torch.tensor([[0.0], [1.0], [10.0], [11.5], [5.0]])
    geometry = prototype_geometry(protos, [0, 2], k=1)
    assert geometry.neighbours == [1, 3]  # each forget class's own nearest retained class
    assert geometry.mu_n == pytest.approx((1.0 + 1.5) / 2)
    assert geometry.mu_rest == pytest.approx((5.0 + 5.0) / 2)


def test_ssd_reference_batches_follow_the_official_loader(tmp_path):
    """SSD (batch mode, batch_order auto): D's batches are D_r then D_f, each in class order, as the
    official loader builds them; batch_order=dataset keeps dataset order. The two differ."""
    ctx = make_context(tmp_path)
    system = ctx.fresh_system()
    cfg = OmegaConf.create(
        {
            "name": "ssd",
            "reference": "full",
            "forget_samples": None,
            "reference_samples": None,
            "fisher_mode": "batch",
            "fisher_batch_size": 64,
            "batch_order": "auto",
            "fisher_chunk": 32,
            "fisher_context_size": 64,
        }
    )
    _, i_d, _ = forget_and_reference_fisher(system, ctx, cfg)

    train = ctx.bench.train
    forget = carries_any(train.labels, ctx.forget_idx)
    positions = torch.arange(len(train))
    ordered = torch.cat([positions[~forget][torch.sort(train.labels[~forget], stable=True).indices], positions[forget]])
    official = batch_fisher(system, train.subset(ordered), "cpu", 64)
    dataset = batch_fisher(system, train, "cpu", 64)
    for name in official:
        assert torch.allclose(i_d[name], official[name], rtol=1e-5, atol=0)
    assert not torch.allclose(official["fc.weight"], dataset["fc.weight"], rtol=0.1)

    _, i_d_dataset, _ = forget_and_reference_fisher(system, ctx, OmegaConf.merge(cfg, {"batch_order": "dataset"}))
    assert all(torch.allclose(i_d_dataset[n], dataset[n], rtol=1e-5, atol=0) for n in dataset)
