"""The competition's per-example ε, forget and final score, and U-LiRA (issue 23) on hand-made distributions."""

import math

import numpy as np
import pytest
import torch

from ppp.evaluation.forgetting_quality import (
    DELTA,
    EPSILON_MAX,
    competition_score,
    epsilon_cap,
    example_epsilons,
    final_score,
    forgetting_score,
    score_buckets,
    ulira,
    ulira_report,
)

pytestmark = pytest.mark.usefixtures("single_thread")

RETRAINED = [0.0, 1.0, 2.0, 3.0]


def column(values):
    return torch.tensor(values, dtype=torch.float64)[:, None]


# --- the competition's ε ---------------------------------------------------------------------------------------


def test_identical_distributions_give_zero_epsilon_and_the_best_score():
    stats = torch.from_numpy(np.random.default_rng(0).normal(size=(16, 5)))
    eps = example_epsilons(stats, stats.clone())
    assert eps.tolist() == [0.0] * 5
    assert forgetting_score(eps, 16) == 1.0


def test_one_point_on_both_sides_is_indistinguishable():
    # every rule has (FPR, FNR) = (1, 0) or (0, 1), so every rule is discarded: nothing tells the two apart
    assert example_epsilons(torch.zeros(4, 1), torch.zeros(4, 1)).item() == 0.0


def test_hand_computed_overlap():
    # retrained 0, 1, 2, 3 vs unlearned 0.5, 1.5, 2.5, 3.5 (upper: unlearned, larger median). Single thresholds
    # "unlearned if s ≥ t": t in (1, 1.5]: FNR = 1/4 (0.5 below), FPR = 2/4 (2, 3 above) ->
    # max(log(1 − δ − 1/2) − log(1/4), log(1 − δ − 1/4) − log(1/2)) = log(2 − 4δ); t in (2, 2.5]: FNR = 2/4,
    # FPR = 1/4, the same; t in (1.5, 2]: FNR = FPR = 2/4 -> 0; t ≤ 0.5 or > 3: FNR or FPR = 0, discarded.
    # Intervals around the retrained values cannot do better: any three of them enclose two unlearned values.
    eps = example_epsilons(column([0.5, 1.5, 2.5, 3.5]), column(RETRAINED))
    assert eps.item() == pytest.approx(math.log(2 - 4 * DELTA), abs=1e-12)
    assert eps.item() == pytest.approx(math.log(1 - DELTA - 0.5) - math.log(0.25), abs=1e-12)


def test_one_model_overlap_reaches_the_cap():
    # unlearned 1.5, 4, 5, 6 vs retrained 0, 1, 2, 3: t in (2, 3] gives FNR = 1/4 (1.5 below) and FPR = 1/4
    # (3 above), the smallest non-zero rates, so ε = log(1 − δ − 1/4) − log(1/4) = log(3 − 4δ) = the cap for
    # N = 4; 1.5 sits among the retrained values, so no rule separates the two
    eps = example_epsilons(column([1.5, 4.0, 5.0, 6.0]), column(RETRAINED))
    assert eps.item() == pytest.approx(math.log(3 - 4 * DELTA), abs=1e-12)
    assert eps.item() == pytest.approx(epsilon_cap(4), abs=1e-12)


@pytest.mark.parametrize("n", [4, 32, 512])
def test_perfect_separation_is_reported_as_separated_above_the_cap(n):
    retrained = torch.arange(n, dtype=torch.float64)[:, None].repeat(1, 3)
    eps = example_epsilons(retrained + n + 5, retrained)
    assert eps.tolist() == [EPSILON_MAX] * 3
    assert epsilon_cap(n) == pytest.approx(math.log(n - 1 - n * DELTA))
    assert EPSILON_MAX > epsilon_cap(n)
    assert forgetting_score(eps, n) == 0.0


def test_a_too_peaky_distribution_gets_the_published_maximum():
    # unlearned spread 0.001 against retrained spread 3: below 1 %, ε = 50 whatever the overlap
    eps = example_epsilons(column([1.0, 1.0005, 1.0, 1.001]), column(RETRAINED))
    assert eps.item() == EPSILON_MAX


def test_epsilon_does_not_depend_on_which_side_is_which():
    rng = np.random.default_rng(1)
    u, r = rng.normal(0.7, 1, size=(32, 6)), rng.normal(0, 1.5, size=(32, 6))
    assert torch.equal(example_epsilons(u, r), example_epsilons(r, u))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="N >= 2"):
        example_epsilons(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="same"):
        example_epsilons(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2 models"):
        epsilon_cap(1)
    with pytest.raises(ValueError, match="at least 3 models"):
        forgetting_score([0.0], 2)


# --- forget and final score --------------------------------------------------------------------------------------


def test_buckets_end_at_the_first_integer_above_log_n_minus_1():
    assert [score_buckets(n) for n in (4, 32, 512)] == [4, 8, 14]  # ε < 2, < 4, < 7


def test_forgetting_score_halves_per_bucket():
    # N = 4: buckets [0, .5) [.5, 1) [1, 1.5) [1.5, 2) worth 1, 1/2, 1/4, 1/8; 2 and above 0
    assert forgetting_score([0.0, 0.49, 0.5, 1.0986, 1.5, 2.0, EPSILON_MAX], 4) == pytest.approx(
        (1 + 1 + 0.5 + 0.25 + 0.125 + 0 + 0) / 7
    )
    assert forgetting_score([6.99], 512) == pytest.approx(2.0**-13)
    assert forgetting_score([7.0], 512) == 0.0


def test_final_score_multiplies_the_quality_ratios():
    assert final_score(0.5, 0.8, 0.9, 0.6, 0.75) == pytest.approx(0.5 * (0.8 / 0.9) * (0.6 / 0.75))
    # per-model qualities: their means, as the competition's main.py takes them
    assert final_score(1.0, [0.7, 0.9], [0.8, 0.8], torch.tensor([0.5, 0.7]), [0.6]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        final_score(1.0, 0.8, 0.0, 0.6, 0.6)


def test_competition_score_reports_what_the_models_cap():
    u = torch.tensor([[0.5, 1.5], [1.5, 4.0], [2.5, 5.0], [3.5, 6.0]], dtype=torch.float64)
    r = column(RETRAINED).repeat(1, 2)
    s = competition_score(u, r, 0.8, 0.8, 0.45, 0.5)
    assert s.epsilons == pytest.approx([math.log(2 - 4 * DELTA), epsilon_cap(4)])
    assert s.forget_score == pytest.approx((0.5 + 0.25) / 2)  # ε 0.69 -> 1/2, ε 1.10 -> 1/4
    assert s.final_score == pytest.approx(s.forget_score * 0.9)
    m = s.metrics()
    assert m["fq/n_models"] == 4 and m["fq/buckets"] == 4 and m["fq/separated"] == 0.0
    assert m["fq/epsilon_cap"] == pytest.approx(math.log(3 - 4 * DELTA))


# --- U-LiRA ------------------------------------------------------------------------------------------------------


def gaussian_models(seed, shift, n_shadow=16, n_target=8, n_examples=20):
    """Per-example centres; unlearned models at centre + shift, retrained at the centre, unit noise."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(0, 3, size=n_examples)

    def draw(n, offset):
        return centre + offset + rng.normal(size=(n, n_examples))

    return draw(n_target, shift), draw(n_target, 0.0), draw(n_shadow, shift), draw(n_shadow, 0.0)


def test_ulira_is_the_per_example_gaussian_likelihood_ratio():
    u = torch.tensor([[1.0], [3.0]], dtype=torch.float64)  # μ_u = 2, σ_u = √2
    r = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)  # μ_r = 0, σ_r = √2
    # at s = 1 both densities are equal; at s = 2: −0 − (−(2²)/(2·2)) = 1
    assert ulira(torch.tensor([1.0, 2.0])[:, None], u, r)[:, 0] == pytest.approx([0.0, 1.0])


def test_ulira_separates_separated_gaussians():
    report = ulira_report(*gaussian_models(0, shift=4.0), n_boot=50)
    assert report.auc > 0.99
    assert report.tpr[0.1] > 0.9
    assert report.n_members == report.n_nonmembers == 8 * 20
    assert report.unsupported == (0.001,)  # 160 retrained target scores: FPR 0.001 needs 1000
    assert "16 unlearned and 16 retrained shadow models" in report.notes[-1]


def test_ulira_is_at_chance_on_identical_gaussians():
    report = ulira_report(*gaussian_models(0, shift=0.0), n_boot=50)
    assert report.auc == pytest.approx(0.5, abs=0.08)
    assert report.auc_ci[0] < 0.5 < report.auc_ci[1]
    assert not report.informative


def test_ulira_refuses_mismatched_examples():
    with pytest.raises(ValueError, match="one E"):
        ulira(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(4, 2))


# --- devices -----------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_same_numbers_on_cuda():
    u = torch.tensor([[0.5, 1.5], [1.5, 4.0], [2.5, 5.0], [3.5, 6.0]], dtype=torch.float64)
    r = column(RETRAINED).repeat(1, 2)
    eps = example_epsilons(u.cuda(), r.cuda())
    assert eps.device.type == "cuda"
    assert torch.allclose(eps.cpu(), example_epsilons(u, r), rtol=0, atol=1e-12)
    models = [torch.from_numpy(a).cuda() for a in gaussian_models(0, shift=4.0)]
    assert ulira(*models[:1], *models[2:]) == pytest.approx(ulira(*(m.cpu() for m in models[:1] + models[2:])))
