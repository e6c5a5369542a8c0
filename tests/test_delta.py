"""|Δ| against the paper's Table 2 (Flickr25K and COCO, 3 bits x 2 directions)."""

import pytest

from ppp.errors import ConfigError
from ppp.evaluation.delta import deltas, gap

# Table 2, rows 16-I2T, 16-T2I, 32-I2T, 32-T2I, 64-I2T, 64-T2I.
FLICKR = {
    "retrain_forget": [54.8, 47.9, 52.9, 47.6, 54.6, 46.5],
    "ssd_forget": [35.7, 43.6, 34.8, 43.6, 35.0, 46.7],
    "ppp_forget": [37.3, 43.7, 51.6, 47.7, 39.9, 45.8],
}
COCO = {
    "original_retain": [90.6, 91.1, 93.9, 94.2, 95.2, 95.4],
    "ppp_retain": [89.5, 90.4, 93.4, 93.6, 93.7, 94.7],
}


def test_abs_mean_matches_the_papers_printed_flickr_values():
    assert gap(FLICKR["ssd_forget"], FLICKR["retrain_forget"], "abs_mean") == pytest.approx(10.8167, abs=1e-3)
    assert gap(FLICKR["ppp_forget"], FLICKR["retrain_forget"], "abs_mean") == pytest.approx(6.3833, abs=1e-3)
    # printed: 10.8 and 6.37; the mean of absolute gaps is further from both
    assert gap(FLICKR["ssd_forget"], FLICKR["retrain_forget"], "mean_abs") == pytest.approx(10.8833, abs=1e-3)
    assert gap(FLICKR["ppp_forget"], FLICKR["retrain_forget"], "mean_abs") == pytest.approx(6.4167, abs=1e-3)


def test_coco_ppp_retain_gap_is_not_the_printed_066():
    """The paper prints 0.66; its own table gives 0.85 under either definition (all gaps share a sign)."""
    for definition in ("abs_mean", "mean_abs"):
        assert gap(COCO["ppp_retain"], COCO["original_retain"], definition) == pytest.approx(0.85, abs=1e-9)


def test_deltas_read_only_quality_metrics():
    metrics = {
        "forget/i2t_map": 0.30,
        "forget/t2i_map": 0.20,
        "retain/i2t_map": 0.88,
        "retain/t2i_map": 0.92,
        "forget/mia": 0.9,
        "retain/mia": 0.1,
        "forget/i2i_map": 0.6,
    }
    refs = {
        "retrain": {"forget/i2t_map": 0.25, "forget/t2i_map": 0.25, "forget/mia": 0.0},
        "original": {"retain/i2t_map": 0.90, "retain/t2i_map": 0.90, "retain/mia": 0.5},
    }
    out = deltas(metrics, refs, "retrieval", "abs_mean")
    assert out["delta/forget"] == pytest.approx(0.0)  # +0.05 and -0.05 cancel
    assert out["delta/retain"] == pytest.approx(0.0)
    out = deltas(metrics, refs, "retrieval", "mean_abs")
    assert out["delta/forget"] == pytest.approx(0.05)
    assert out["delta/retain"] == pytest.approx(0.02)
    assert out["objective/gap"] == pytest.approx(0.07)
    assert deltas(
        {"forget/acc": 0.1, "retain/acc": 0.9}, {"retrain": {"forget/acc": 0.0}}, "classification", "mean_abs"
    ) == {"delta/forget": pytest.approx(0.1)}  # no Original: no retain gap, no objective


def test_unknown_definition_is_a_config_error():
    with pytest.raises(ConfigError, match="abs_mean, mean_abs"):
        gap([1.0], [0.0], "median")


def test_chance_map_is_a_random_rankings_expected_ap():
    """Hand labels: query 0 has 2 of 4 items relevant, query 1 none (AP 0), query 2 three. The chance level
    equals the tie-averaged mAP of codes that tie every item (a random order) and is near the share R/N."""
    import torch

    from ppp.evaluation.map import average_precisions, chance_aps

    db = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 0]])
    queries = torch.tensor([[1, 0], [0, 0], [1, 1]])
    chance = chance_aps(queries, db)
    # R of N = 4: (R - 1)/(N - 1) + H(4)/4 * (N - R)/(N - 1), H(4) = 25/12
    assert chance.tolist() == pytest.approx([1 / 3 + 25 / 48 * 2 / 3, 0.0, 2 / 3 + 25 / 48 / 3])
    tied = average_precisions(torch.ones(3, 8), torch.ones(4, 8), queries, db, ties="average")
    assert chance.tolist() == pytest.approx(tied.tolist())
    big = torch.zeros(1000, 1)
    big[:100] = 1  # a share of 10 % relevant: chance close to it
    assert float(chance_aps(torch.ones(1, 1), big)) == pytest.approx(0.1, abs=0.01)


def test_oracle_free_objective_needs_only_original():
    """Forget quality to its chance level (1/C for accuracy, the evaluator's forget/chance_map for mAP) plus
    retain |Δ| to Original: present with references = {original}, no Retrain."""
    refs = {"original": {"retain/acc": 0.95, "forget/acc": 0.9}}
    out = deltas(
        {"forget/acc": 0.3, "retain/acc": 0.85, "forget/chance_acc": 1 / 10}, refs, "classification", "mean_abs"
    )
    assert out["delta/forget_chance"] == pytest.approx(0.2) and out["delta/retain"] == pytest.approx(0.1)
    assert out["objective/oracle_free"] == pytest.approx(0.3) and "objective/gap" not in out
    metrics = {"forget/i2t_map": 0.30, "forget/t2i_map": 0.10, "forget/chance_map": 0.2}
    metrics |= {"retain/i2t_map": 0.8, "retain/t2i_map": 0.8}
    refs = {"original": {"retain/i2t_map": 0.9, "retain/t2i_map": 0.9}}
    out = deltas(metrics, refs, "retrieval", "mean_abs")
    assert out["delta/forget_chance"] == pytest.approx(0.1) and out["objective/oracle_free"] == pytest.approx(0.2)
    assert "objective/oracle_free" not in deltas(metrics, {}, "retrieval", "mean_abs")  # no Original: none
