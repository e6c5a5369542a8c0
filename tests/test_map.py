import itertools

import pytest
import torch
from tiny_contexts import make_hashing_context

from ppp.errors import ConfigError
from ppp.evaluation import average_precisions, evaluate_retrieval, hamming_distance, mean_average_precision
from ppp.evaluation.map import check_map_settings


def test_hamming():
    q = torch.tensor([[1.0, 1, 1, 1]])
    d = torch.tensor([[1.0, 1, 1, 1], [-1.0, 1, 1, 1], [-1.0, -1, -1, -1]])
    assert hamming_distance(q, d).tolist() == [[0.0, 1.0, 4.0]]


def test_map_hand_computed():
    q = torch.tensor([[1.0, 1, 1, 1]])
    db = torch.tensor([[1.0, 1, 1, 1], [1.0, 1, 1, -1], [1.0, 1, -1, -1], [-1.0, -1, -1, -1]])
    ql = torch.tensor([[1.0, 0]])
    dl = torch.tensor([[0.0, 1], [1.0, 1], [0.0, 1], [1.0, 0]])
    # ranking 0,1,2,3 -> relevant at ranks 2 and 4: AP = (1/2 + 2/4) / 2; no ties, so both rules agree
    for ties in ("stable", "average"):
        assert mean_average_precision(q, db, ql, dl, ties=ties) == pytest.approx(0.5)
    # top-2: one relevant item at rank 2 -> AP = 1/2
    assert mean_average_precision(q, db, ql, dl, topk=2, ties="stable") == pytest.approx(0.5)
    # top-1: no relevant item -> 0
    assert mean_average_precision(q, db, ql, dl, topk=1, ties="stable") == 0.0


def test_ties_broken_by_database_index_or_averaged():
    q = torch.tensor([[1.0, 1]])
    db = torch.tensor([[1.0, -1], [-1.0, 1], [1.0, -1]])  # all at distance 1
    ql = torch.tensor([[1.0]])
    dl = torch.tensor([[0.0], [1.0], [1.0]])
    # stable order 0,1,2 -> relevant at ranks 2,3: AP = (1/2 + 2/3) / 2
    assert mean_average_precision(q, db, ql, dl, ties="stable") == pytest.approx((0.5 + 2 / 3) / 2)
    # the three distinct orders of (irrelevant, relevant, relevant): AP 1, (1 + 2/3)/2, (1/2 + 2/3)/2
    expected = (1 + (1 + 2 / 3) / 2 + (0.5 + 2 / 3) / 2) / 3
    assert mean_average_precision(q, db, ql, dl, ties="average") == pytest.approx(expected, abs=1e-12)


def test_query_without_relevant_items_counts_as_zero():
    q = torch.tensor([[1.0, 1], [1.0, 1]])
    db = torch.tensor([[1.0, 1], [-1.0, -1]])
    ql = torch.tensor([[1.0, 0], [0.0, 1]])
    dl = torch.tensor([[1.0, 0], [1.0, 0]])
    for ties in ("stable", "average"):
        assert average_precisions(q, db, ql, dl, ties=ties).tolist() == pytest.approx([1.0, 0.0], abs=1e-12)


def random_case(n_query, n_db, bits, n_labels, seed, label_prob=0.3):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_query, bits, generator=g),
        torch.randn(n_db, bits, generator=g),
        (torch.rand(n_query, n_labels, generator=g) < label_prob).float(),
        (torch.rand(n_db, n_labels, generator=g) < label_prob).float(),
    )


def ap_of_ranking(relevant: torch.Tensor, k: int) -> float:
    """AP of one ranked 0/1 relevance vector cut at k, as hashing code writes it (count / position)."""
    hit_positions = torch.nonzero(relevant[:k]).flatten().double() + 1
    if hit_positions.numel() == 0:
        return 0.0
    return float((torch.arange(1, hit_positions.numel() + 1, dtype=torch.float64) / hit_positions).mean())


def argsort_aps(q, db, ql, dl, topk=None):
    """The straightforward reference: one stable argsort of float distances per query."""
    k = db.shape[0] if topk is None else topk
    relevant = (ql @ dl.T > 0).float()
    dist = hamming_distance(q, db)
    return torch.tensor(
        [ap_of_ranking(relevant[i][torch.sort(dist[i], stable=True).indices], k) for i in range(q.shape[0])],
        dtype=torch.float64,
    )


@pytest.mark.parametrize("bits, topk", [(4, None), (8, None), (8, 25), (16, None)])
def test_stable_equals_a_stable_argsort_with_many_ties(bits, topk):
    q, db, ql, dl = random_case(40, 300, bits, 6, seed=bits)
    assert hamming_distance(q, db).unique().numel() <= bits + 1  # every rank sits in a tie
    ours = average_precisions(q, db, ql, dl, topk=topk, ties="stable", chunk=9)
    torch.testing.assert_close(ours, argsort_aps(q, db, ql, dl, topk), rtol=0, atol=1e-12)


def brute_force_tie_average(q, db, ql, dl) -> torch.Tensor:
    """Mean AP over every order of the tied items (all permutations within each distance group)."""
    dist, relevant = hamming_distance(q, db), (ql @ dl.T > 0).float()
    out = []
    for i in range(q.shape[0]):
        groups = [torch.nonzero(dist[i] == v).flatten().tolist() for v in dist[i].unique().tolist()]
        orders = itertools.product(*(itertools.permutations(g) for g in groups))
        aps = [ap_of_ranking(relevant[i][torch.tensor(sum(map(list, o), []))], db.shape[0]) for o in orders]
        out.append(sum(aps) / len(aps))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(4))
def test_average_is_the_mean_over_every_order_of_tied_items(seed):
    q, db, ql, dl = random_case(6, 8, 3, 3, seed=seed, label_prob=0.4)  # 8 items over 4 distances
    torch.testing.assert_close(
        average_precisions(q, db, ql, dl, ties="average"), brute_force_tie_average(q, db, ql, dl), rtol=0, atol=1e-12
    )


def test_average_does_not_depend_on_the_database_order():
    q, db, ql, dl = random_case(30, 500, 8, 5, seed=3)
    perm = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    same = average_precisions(q, db[perm], ql, dl[perm], ties="average")
    torch.testing.assert_close(average_precisions(q, db, ql, dl, ties="average"), same, rtol=0, atol=1e-12)
    assert not torch.equal(
        average_precisions(q, db, ql, dl, ties="stable"), average_precisions(q, db[perm], ql, dl[perm], ties="stable")
    )


@pytest.mark.parametrize("ties", ["stable", "average"])
def test_per_query_shape_and_chunking_does_not_change_the_values(ties):
    q, db, ql, dl = random_case(37, 120, 16, 5, seed=0)
    whole = average_precisions(q, db, ql, dl, ties=ties)
    assert whole.shape == (37,) and whole.dtype == torch.float64
    torch.testing.assert_close(average_precisions(q, db, ql, dl, ties=ties, chunk=7), whole, rtol=0, atol=1e-12)
    assert mean_average_precision(q, db, ql, dl, ties=ties) == pytest.approx(float(whole.mean()))
    assert average_precisions(q[:0], db, ql[:0], dl, ties=ties).shape == (0,)


def test_average_is_the_same_when_float32_matmuls_may_run_in_reduced_precision():
    q, db, ql, dl = random_case(50, 300, 32, 6, seed=5)
    exact = average_precisions(q, db, ql, dl, ties="average")
    torch.set_float32_matmul_precision("high")  # offsets are then added after the product, in float32
    try:
        torch.testing.assert_close(average_precisions(q, db, ql, dl, ties="average"), exact, rtol=0, atol=0)
    finally:
        torch.set_float32_matmul_precision("highest")


def test_bad_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="ties must be one of stable, average"):
        check_map_settings("random", None)
    with pytest.raises(ConfigError, match="topk must be a positive integer"):
        check_map_settings("stable", 0)
    with pytest.raises(ConfigError, match="mAP@all only"):
        check_map_settings("average", 100)
    check_map_settings("stable", 100)


def test_evaluate_retrieval_returns_each_querys_ap(tmp_path, single_thread):
    ctx = make_hashing_context(tmp_path)
    system = ctx.trained()[0]
    out = {
        ties: evaluate_retrieval(system, ctx.bench, ctx.forget_idx, ctx.device, ties=ties)
        for ties in ("stable", "average")
    }
    for metrics in out.values():
        for split in ("forget", "retain"):
            for direction in ("i2t", "t2i"):
                ap = metrics[f"per_query/{split}/{direction}_map"]
                assert ap.shape == (metrics[f"count/{split}_queries"],)
                assert metrics[f"{split}/{direction}_map"] == pytest.approx(float(ap.mean()))
    # an untrained-ish 16-bit model has many ties: the two rules differ, but only slightly
    gap = (out["stable"]["per_query/retain/i2t_map"] - out["average"]["per_query/retain/i2t_map"]).abs()
    assert 0 < gap.max() < 0.2
