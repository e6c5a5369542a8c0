"""Attack metrics and membership statistics (issue 21) on hand inputs and one tiny memorising model."""

import math

import numpy as np
import pytest
import torch
from scipy.special import log_ndtr as scipy_log_ndtr

from ppp.evaluation.attack_metrics import attack_report, pooled_report, roc_auc, supported, tpr_at_fpr
from ppp.evaluation.membership_scores import (
    lira_offline,
    lira_online,
    logit_confidence,
    logit_of_probability,
    pair_cosine,
    pair_logit_similarity,
    rmia,
)

pytestmark = pytest.mark.usefixtures("single_thread")


# --- metrics ---------------------------------------------------------------------------------------------------


def test_perfectly_separated_scores():
    members, nonmembers = np.arange(100, 200.0), np.arange(0, 200.0) / 10  # 200 non-members: 0.01 supported
    r = attack_report(members, nonmembers, fprs=(0.1, 0.01, 0.001), n_boot=200, seed=0)
    assert r.auc == 1.0 and r.auc_ci == (1.0, 1.0)
    assert r.tpr[0.1] == 1.0 and r.tpr[0.01] == 1.0
    assert r.tpr_ci[0.01] == (1.0, 1.0)
    assert r.balanced_accuracy == 1.0 and r.threshold_from == "best"
    assert r.informative
    assert r.unsupported == (0.001,) and r.tpr[0.001] is None and r.tpr_ci[0.001] is None
    assert "200" in r.notes[0]
    m = r.metrics("mia")
    assert math.isnan(m["mia/tpr@0.001"]) and m["mia/tpr@0.01"] == 1.0 and m["mia/n_nonmembers"] == 200


def test_identical_distributions_are_not_informative():
    scores = np.random.default_rng(1).normal(size=1000)  # the same empirical distribution on both sides
    r = attack_report(scores, scores.copy(), n_boot=200, seed=3)
    assert r.auc == pytest.approx(0.5)
    assert r.auc_ci[0] < 0.5 < r.auc_ci[1]
    assert not r.informative


def test_unsupported_fpr_is_not_interpolated():
    assert not supported(0.01, 99) and supported(0.01, 100) and supported(0.1, 10)
    assert tpr_at_fpr([1.0, 2.0], np.zeros(50), 0.01) is None
    r = attack_report(np.ones(10), np.zeros(50), fprs=(0.1, 0.01), n_boot=20)
    assert r.unsupported == (0.01,) and r.tpr[0.01] is None and r.n_nonmembers == 50


def test_tpr_at_fpr_counts_at_most_k_false_positives():
    nonmembers = np.arange(10.0)  # k = 1 at FPR 0.1: threshold 8, strictly above it only 9
    assert tpr_at_fpr([8.0, 8.5, 9.5, 0.0], nonmembers, 0.1) == 0.5
    assert roc_auc([1.0], [1.0]) == 0.5  # a tie counts half


def test_seed_fixes_the_intervals_and_fit_threshold():
    rng = np.random.default_rng(0)
    m, n = rng.normal(0.5, 1, 300), rng.normal(0, 1, 300)
    a, b = attack_report(m, n, n_boot=100, seed=7), attack_report(m, n, n_boot=100, seed=7)
    assert a.auc_ci == b.auc_ci and a.tpr_ci == b.tpr_ci
    assert attack_report(m, n, n_boot=100, seed=8).auc_ci != a.auc_ci
    fitted = attack_report(m, n, n_boot=10, fit=(m + 100, n))  # a fit split whose threshold is far too low
    assert fitted.threshold_from == "fit" and fitted.balanced_accuracy < a.balanced_accuracy


def test_the_cluster_bootstrap_counts_sources_not_copies():
    """Three copies of every example: resampling the copies as if independent narrows the interval; resampling
    sources gives exactly the interval of the examples without copies (the same draws, each tripled)."""
    rng = np.random.default_rng(4)
    m, n = rng.normal(0.3, 1, 80), rng.normal(0, 1, 60)
    single = attack_report(m, n, n_boot=300, seed=1)
    m3, n3 = np.repeat(m, 3), np.repeat(n, 3)
    copies = attack_report(m3, n3, n_boot=300, seed=1)
    sources = attack_report(
        m3,
        n3,
        n_boot=300,
        seed=1,
        member_groups=np.repeat(np.arange(80), 3),
        nonmember_groups=np.repeat(np.arange(60), 3),
    )
    assert copies.auc == sources.auc == pytest.approx(single.auc)
    assert sources.auc_ci == pytest.approx(single.auc_ci)
    width = lambda r: r.auc_ci[1] - r.auc_ci[0]  # noqa: E731
    assert width(copies) < 0.7 * width(sources)
    with pytest.raises(ValueError, match="one group id per example"):
        attack_report(m, n, n_boot=10, member_groups=np.arange(3))
    # pooled over targets: a source keeps its examples of every target together
    pooled = pooled_report(
        [(m3, n3)] * 2, n_boot=300, seed=1, groups=[(np.repeat(np.arange(80), 3), np.repeat(np.arange(60), 3))] * 2
    )
    assert pooled.auc_ci == pytest.approx(single.auc_ci)


def test_pooled_report_reaches_lower_fprs():
    rng = np.random.default_rng(2)
    pairs = [(rng.normal(1, 1, 50), rng.normal(0, 1, 50)) for _ in range(4)]
    one = attack_report(*pairs[0], fprs=(0.01,), n_boot=10)
    pooled = pooled_report(pairs, fprs=(0.01,), n_boot=10)
    assert one.unsupported == (0.01,) and pooled.unsupported == () and pooled.n_nonmembers == 200
    assert pooled.n_targets == 4


# --- statistics ------------------------------------------------------------------------------------------------


def test_logit_confidence():
    assert logit_of_probability(0.5) == pytest.approx(0.0)
    p = np.linspace(0.01, 0.99, 50)
    assert np.all(np.diff(logit_of_probability(p)) > 0)
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [200.0, 0.0], [1.0, 2.0]])
    phi = logit_confidence(logits, torch.tensor([0, 0, 0, 0]))
    assert phi[0] == pytest.approx(0.0) and phi[1] == pytest.approx(2.0)
    assert phi[2] == pytest.approx(200.0)  # finite where p_y rounds to 1
    probs = torch.softmax(torch.tensor([[1.0, 2.0, 0.5]]), 1)
    want = logit_of_probability(probs[0, 1].item())
    assert logit_confidence(torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([1]))[0] == pytest.approx(want, abs=1e-6)


def test_pair_statistics_prefer_the_nearest_caption():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = torch.tensor([[1.0, 0.05], [1.0, 0.2], [-1.0, 1.0]])  # pair 0's caption is its image's nearest
    phi = pair_logit_similarity(image, text)
    assert phi[0] > phi[1] and phi[0] > phi[2]
    cos = pair_cosine(image, text)
    assert cos[0] == pytest.approx(1 / math.sqrt(1 + 0.05**2))
    # a sharper temperature widens the gap; a given gallery is all "others"
    assert pair_logit_similarity(image, text, temperature=0.1)[0] > phi[0]
    gallery = torch.tensor([[0.0, 1.0]])
    assert pair_logit_similarity(image[:1], text[:1], gallery=gallery)[0] == pytest.approx(
        cos[0]
    )  # cos(image_0, gallery) = 0


# --- attacks on reference models ------------------------------------------------------------------------------


def _gaussian_world(seed=0, n=200, r=16):
    """Per-example OUT means vary; IN shifts φ up by 2. Example 0 is a planted member of the target."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 3, n)
    out = mu[:, None] + rng.normal(0, 1, (n, r))
    ins = mu[:, None] + 2 + rng.normal(0, 1, (n, r))
    target = mu + rng.normal(0, 1, n)
    target[0] = mu[0] + 6  # far above its own OUT distribution, though not the largest raw φ
    return target, ins, out


def test_lira_ranks_a_planted_member_first():
    target, ins, out = _gaussian_world()
    assert np.argmax(target) != 0  # the raw statistic does not find it
    assert np.argmax(lira_offline(target, out)) == 0
    assert np.argmax(lira_online(target, ins, out)) == 0
    assert np.argmax(lira_offline(target, out, per_example_std_from=2)) == 0
    big = lira_offline(np.array([100.0]), np.zeros((1, 4)) + np.arange(4))
    assert np.isfinite(big).all() and big[0] > 100  # no saturation


def test_missing_references_are_nan_and_leave_the_others_as_they_were():
    target, ins, out = _gaussian_world(n=50, r=4)
    padded_out = np.c_[out, np.full((50, 2), np.nan)]
    padded_in = np.c_[np.full((50, 1), np.nan), ins]
    assert np.allclose(lira_offline(target, padded_out), lira_offline(target, out))
    assert np.allclose(lira_online(target, padded_in, padded_out), lira_online(target, ins, out))
    ragged = out.copy()
    ragged[0, 1:] = np.nan  # example 0 has one OUT reference: its mean is that one, the pooled std the rest's
    mu0 = out[0, 0]
    sigma = np.sqrt(((out[1:] - out[1:].mean(1, keepdims=True)) ** 2).sum() / (49 * 3))
    expected = -scipy_log_ndtr(-(target[0] - mu0) / sigma)
    assert lira_offline(target, ragged)[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one reference"):
        lira_offline(target, np.c_[np.full((50, 1), np.nan)])


def test_a_gallery_row_can_be_left_out_per_pair():
    torch.manual_seed(0)
    image, text, gallery = torch.randn(5, 8), torch.randn(5, 8), torch.randn(6, 8)
    gallery[2] = text[3]  # pair 3's own caption sits in the gallery
    exclude = torch.tensor([-1, -1, -1, 2, -1])
    phi = pair_logit_similarity(image, text, gallery, exclude=exclude)
    kept = gallery[[0, 1, 3, 4, 5]]
    assert phi[3] == pytest.approx(pair_logit_similarity(image[3:4], text[3:4], kept)[0])
    assert np.allclose(phi[[0, 1, 2, 4]], pair_logit_similarity(image, text, gallery)[[0, 1, 2, 4]])


def test_rmia_on_a_synthetic_case():
    rng = np.random.default_rng(0)
    n, m, r = 50, 400, 4
    hardness = rng.uniform(0.2, 0.9, n)  # how likely an example is under any model
    refs = np.clip(hardness[:, None] + rng.normal(0, 0.02, (n, r)), 1e-3, 1)
    target = hardness.copy()
    target[0] = min(1.0, hardness[0] * 1.5)  # the target fits example 0 better than the references do
    pop_h = rng.uniform(0.2, 0.9, m)
    pop_refs = np.clip(pop_h[:, None] + rng.normal(0, 0.02, (m, r)), 1e-3, 1)
    score = rmia(target, refs, pop_h, pop_refs, gamma=1.0)
    assert score.shape == (n,) and np.argmax(score) == 0 and score[0] > 0.95
    assert np.all(rmia(target, refs, pop_h, pop_refs, gamma=2.0) <= score)
    assert rmia(target, refs, pop_h, pop_refs, offline_a=0.3).shape == (n,)


# --- end to end ------------------------------------------------------------------------------------------------


def test_a_memorising_model_is_detected_and_an_untrained_one_is_not():
    torch.manual_seed(0)
    d, classes = 16, 4
    members, nonmembers = torch.randn(40, d), torch.randn(40, d)
    y_in, y_out = torch.randint(0, classes, (40,)), torch.randint(0, classes, (40,))  # random labels
    net = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, classes))
    with torch.no_grad():
        untrained = (logit_confidence(net(members), y_in), logit_confidence(net(nonmembers), y_out))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(members), y_in).backward()
        opt.step()
    with torch.no_grad():
        trained = (logit_confidence(net(members), y_in), logit_confidence(net(nonmembers), y_out))
    memorised = attack_report(*trained, n_boot=300, seed=0)
    assert memorised.auc >= 0.8 and memorised.informative
    assert memorised.unsupported == (0.01, 0.001)  # 40 non-members support only FPR 0.1
    fresh = attack_report(*untrained, n_boot=300, seed=0)
    assert not fresh.informative and fresh.auc_ci[0] < 0.5 < fresh.auc_ci[1]
