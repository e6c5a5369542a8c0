import math

import pytest
import torch

from ppp.errors import ConfigError
from ppp.losses import DSPHLoss, dsph_margin


def loss_with(proxies, delta=0.0, weight=0.8):
    loss = DSPHLoss(num_classes=proxies.shape[0], bits=proxies.shape[1], delta=delta, irrelevant_weight=weight)
    with torch.no_grad():
        loss.proxies.copy_(proxies)
    return loss


P = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def test_positive_and_negative_terms_by_hand():
    loss = loss_with(P, delta=0.1)
    img = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # cos to proxies: [.707, .707, -.707], [1, 0, -1]
    txt = torch.tensor([[0.0, 3.0], [1.0, 0.0]])  # cos: [0, 1, 0], [1, 0, -1]
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t = loss.terms(img, txt, labels)
    r = 1 / math.sqrt(2)
    assert t["pos_img"].item() == pytest.approx(((1 - r) + 0) / 2)
    assert t["neg_img"].item() == pytest.approx((r - 0.1) / 4)  # only cos .707 exceeds delta
    assert t["pos_txt"].item() == pytest.approx((1 + 0) / 2)
    assert t["neg_txt"].item() == pytest.approx((1 - 0.1) / 4)
    # no sample has two labels: the irrelevant terms vanish
    assert t["irr_img"].item() == t["irr_txt"].item() == t["irr_cross"].item() == 0.0
    assert loss(img, txt, labels).item() == pytest.approx(sum(v.item() for v in t.values()))


def test_irrelevant_pair_terms_by_hand():
    loss = loss_with(torch.eye(4), delta=0.0, weight=0.8)
    labels = torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 1.0, 1.0], [1.0, 0, 1.0, 0], [1.0, 0, 0, 0]])
    img = torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [5.0, 5.0, 5.0, 5.0]])
    txt = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0]])
    t = loss.terms(img, txt, labels)
    # multi-label samples: 0, 1, 2; pairs sharing no label: (0,1) and (1,0)
    r = 1 / math.sqrt(2)
    assert t["irr_img"].item() == pytest.approx(0.8 * (r + r) / 2)
    assert t["irr_txt"].item() == pytest.approx(0.0)  # cos = -1, below delta
    # cross: img0.txt1 = -1 -> 0 ; img1.txt0 = .707
    assert t["irr_cross"].item() == pytest.approx(0.8 * r / 2)


def test_gradients_flow_to_codes_and_proxies():
    loss = DSPHLoss(num_classes=5, bits=16)
    img = torch.randn(8, 16, requires_grad=True)
    txt = torch.randn(8, 16, requires_grad=True)
    labels = (torch.rand(8, 5) < 0.4).float()
    labels[:, 0] = 1
    loss(img, txt, labels).backward()
    assert img.grad.abs().sum() > 0 and loss.proxies.grad.abs().sum() > 0


def test_margin_table():
    assert dsph_margin(16, 80) == 0.25 and dsph_margin(32, 80) == 0.125 and dsph_margin(64, 80) == 0.0
    assert dsph_margin(16, 24) == 0.0 and dsph_margin(64, 10) == 0.0
    with pytest.raises(ConfigError):
        dsph_margin(16, 1000)


def test_proxy_init_is_seeded():
    a, b = DSPHLoss(10, 16, proxy_seed=0), DSPHLoss(10, 16, proxy_seed=0)
    assert torch.equal(a.proxies, b.proxies)
    assert not torch.equal(a.proxies, DSPHLoss(10, 16, proxy_seed=1).proxies)
