import pytest
import torch

from ppp.evaluation import hamming_distance, mean_average_precision


def test_hamming():
    q = torch.tensor([[1.0, 1, 1, 1]])
    d = torch.tensor([[1.0, 1, 1, 1], [-1.0, 1, 1, 1], [-1.0, -1, -1, -1]])
    assert hamming_distance(q, d).tolist() == [[0.0, 1.0, 4.0]]


def test_map_hand_computed():
    q = torch.tensor([[1.0, 1, 1, 1]])
    db = torch.tensor([[1.0, 1, 1, 1], [1.0, 1, 1, -1], [1.0, 1, -1, -1], [-1.0, -1, -1, -1]])
    ql = torch.tensor([[1.0, 0]])
    dl = torch.tensor([[0.0, 1], [1.0, 1], [0.0, 1], [1.0, 0]])
    # ranking 0,1,2,3 -> relevant at ranks 2 and 4: AP = (1/2 + 2/4) / 2
    assert mean_average_precision(q, db, ql, dl) == pytest.approx(0.5)
    # top-2: one relevant item at rank 2 -> AP = 1/2
    assert mean_average_precision(q, db, ql, dl, topk=2) == pytest.approx(0.5)
    # top-1: no relevant item -> 0
    assert mean_average_precision(q, db, ql, dl, topk=1) == 0.0


def test_ties_broken_by_database_index():
    q = torch.tensor([[1.0, 1]])
    db = torch.tensor([[1.0, -1], [-1.0, 1], [1.0, -1]])  # all at distance 1
    ql = torch.tensor([[1.0]])
    dl = torch.tensor([[0.0], [1.0], [1.0]])
    # stable order 0,1,2 -> relevant at ranks 2,3: AP = (1/2 + 2/3) / 2
    assert mean_average_precision(q, db, ql, dl) == pytest.approx((0.5 + 2 / 3) / 2)


def test_query_without_relevant_items_counts_as_zero():
    q = torch.tensor([[1.0, 1], [1.0, 1]])
    db = torch.tensor([[1.0, 1], [-1.0, -1]])
    ql = torch.tensor([[1.0, 0], [0.0, 1]])
    dl = torch.tensor([[1.0, 0], [1.0, 0]])
    assert mean_average_precision(q, db, ql, dl) == pytest.approx(0.5)


def test_chunking_does_not_change_the_value():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(37, 16, generator=g)
    db = torch.randn(120, 16, generator=g)
    ql = (torch.rand(37, 5, generator=g) < 0.3).float()
    dl = (torch.rand(120, 5, generator=g) < 0.3).float()
    assert mean_average_precision(q, db, ql, dl, chunk=7) == pytest.approx(mean_average_precision(q, db, ql, dl))
