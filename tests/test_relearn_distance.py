"""Relearning and distance to Retrain (issue 21, "Beyond membership"): the distances on hand inputs, and
relearning on the tiny MLP: a class hidden by zeroing its head row comes back in a few steps on k forget
examples; the Retrain, which never learned it, does not within the same budget."""

import copy
import math

import pytest
import torch
from tiny_contexts import make_context
from torch import nn

from ppp.evaluation.classification import predict_proba
from ppp.evaluation.distance import (
    beside_floor,
    classification_distances,
    example_groups,
    grouped,
    js_divergence,
    retrieval_distances,
    similarity_distributions,
    topk_overlap,
)
from ppp.evaluation.relearn import k_shot, reached, relearn, weight_distance
from ppp.models.base import System

pytestmark = pytest.mark.usefixtures("single_thread")

FORGET = 6
K = 5
RECIPE = {"batch_size": K, "lr": 1e-3, "weight_decay": 0.0, "optimizer": "adamw"}
BUDGET, MARGIN = 12, 0.1


def test_js_divergence_on_hand_inputs():
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    q = torch.tensor([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert js_divergence(p, q).tolist() == [0.0, 1.0, 1.0]  # identical 0, disjoint one-hots 1 (exactly)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    # m = (3/4, 1/4): KL(a‖m) = log2(4/3); KL(b‖m) = ½ log2(2/3) + ½ log2(2)
    expected = 0.5 * (math.log2(4 / 3) + 0.5 * math.log2(2 / 3) + 0.5 * math.log2(2))
    assert float(js_divergence(a, b)) == pytest.approx(expected, abs=1e-7)
    assert expected == pytest.approx(0.3112781, abs=1e-7)
    r = torch.softmax(torch.randn(4, 7, generator=torch.Generator().manual_seed(0)), dim=1)
    s = torch.softmax(torch.randn(4, 7, generator=torch.Generator().manual_seed(1)), dim=1)
    assert torch.equal(js_divergence(r, s), js_divergence(s, r))
    assert bool(((js_divergence(r, s) > 0) & (js_divergence(r, s) < 1)).all())


def test_similarity_distributions_are_a_softmax_of_cosine_over_temperature():
    q = torch.tensor([[1.0, 1.0]])
    db = torch.tensor([[2.0, 2.0], [1.0, -1.0], [-3.0, -3.0]])  # cosines 1, 0, -1
    dist = similarity_distributions(q, db, T=0.5)
    e = torch.tensor([math.exp(2.0), 1.0, math.exp(-2.0)], dtype=torch.double)
    assert torch.allclose(dist[0], e / e.sum())
    with pytest.raises(ValueError):
        similarity_distributions(q, db, T=0.0)


def test_topk_overlap_on_hand_made_similarities():
    sim = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    assert topk_overlap(sim, sim, 3).tolist() == [1.0]
    reversed_ = sim.flip(1)  # ranking 5, 4, 3, 2, 1, 0 by index
    assert topk_overlap(sim, reversed_, 3).tolist() == [0.0]  # {0,1,2} vs {5,4,3}
    assert topk_overlap(sim, reversed_, 4).tolist() == [0.5]  # {0,1,2,3} vs {5,4,3,2}
    ties = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # ties go to the lower index: top-2 = {0, 1}
    assert topk_overlap(ties, torch.tensor([[0.0, 1.0, 0.5, 0.9]]), 2).tolist() == [0.5]


def test_grouped_means_and_floor_on_a_hand_case():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    groups = ["forget", "other", "forget", "neighbour", "other"]
    assert grouped(values, groups) == {"forget": (2.0, 2), "other": (6.0, 2), "neighbour": (4.0, 1)}
    report = beside_floor(values, torch.tensor([0.5, 1.0, 0.5, 1.0, 2.0]), groups)
    assert report["forget"] == {"distance": 2.0, "floor": 0.5, "excess": 1.5, "n": 2}
    assert report["other"] == {"distance": 6.0, "floor": 1.5, "excess": 4.5, "n": 2}
    labels = torch.tensor([6, 5, 1, 8, 6])
    assert example_groups(labels, [6], [5, 8]) == ["forget", "neighbour", "other", "neighbour", "forget"]
    multi = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1]])
    assert example_groups(multi, [0], [1]) == ["forget", "neighbour", "other"]


def test_weight_distance_over_shared_parameters_equals_a_hand_computation():
    a, b = nn.Linear(2, 1), nn.Sequential()
    b.add_module("weight_holder", nn.Linear(2, 1))
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[1.0, 2.0]]))
        a.bias.fill_(0.0)
    c = nn.Linear(2, 1)
    with torch.no_grad():
        c.weight.copy_(torch.tensor([[4.0, -2.0]]))
        c.bias.fill_(12.0)
    assert weight_distance(a, c) == pytest.approx(math.sqrt(3**2 + 4**2 + 12**2))  # 13
    assert weight_distance(a, b) == 0.0  # no parameter shared by name
    assert weight_distance(a, a) == 0.0


def test_reached_from_either_side():
    assert reached(0.85, start=0.0, target=0.9, margin=0.1) and not reached(0.79, 0.0, 0.9, 0.1)
    assert reached(1.0, 0.0, 0.9, 0.1)  # overshooting counts as back
    assert reached(0.35, start=0.9, target=0.3, margin=0.1) and not reached(0.41, 0.9, 0.3, 0.1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Original and Retrain of the tiny MLP (8 epochs: enough to tell them apart), the 'hidden' model
    (the Original with the forget class's head row and bias zeroed) and the forget quality: forget-class
    accuracy on the test split."""
    torch.set_num_threads(1)
    ctx = make_context(tmp_path_factory.mktemp("cache"), epochs=8)
    original, _ = ctx.trained()
    retrain, _ = ctx.trained(exclude_forget=True)
    hidden = copy.deepcopy(original)
    with torch.no_grad():
        hidden.net.fc.weight[FORGET] = 0.0
        hidden.net.fc.bias[FORGET] = 0.0
    test = ctx.bench.test
    forget_test = test.subset(torch.nonzero(test.labels == FORGET).flatten())

    def quality(model) -> float:
        return float((predict_proba(model, forget_test, ctx.device).argmax(dim=1) == FORGET).float().mean())

    return ctx, original, retrain, hidden, quality


def test_k_shot_draws_k_forget_examples_by_seed(tiny):
    ctx = tiny[0]
    draw = k_shot(ctx.forget_train, K, seed=0)
    assert len(draw) == K and bool((draw.labels == FORGET).all())
    assert torch.equal(draw.root_indices(), k_shot(ctx.forget_train, K, seed=0).root_indices())
    assert not torch.equal(draw.root_indices(), k_shot(ctx.forget_train, K, seed=1).root_indices())
    with pytest.raises(ValueError):
        k_shot(ctx.forget_train, len(ctx.forget_train) + 1, seed=0)


def test_a_hidden_class_relearns_in_few_steps_and_a_never_learned_one_does_not(tiny):
    ctx, original, retrain, hidden, quality = tiny
    target = quality(original)
    assert target > 0.8 and quality(hidden) < 0.1 and quality(retrain) < 0.1
    data = k_shot(ctx.forget_train, K, seed=0)
    before = copy.deepcopy(hidden.state_dict())
    run = lambda model: relearn(  # noqa: E731
        model, data, RECIPE, quality, target, MARGIN, BUDGET, 1, seed=0, device=ctx.device, reference=original
    )
    back, never = run(hidden), run(retrain)
    assert back.steps is not None and back.steps <= 10  # 9 on this CPU (7 on version 1 of the digit data)
    assert never.steps is None
    # the step is the first evaluated one that is back, counted exactly
    assert [s for s, _ in back.curve] == list(range(BUDGET + 1))
    assert back.steps == next(s for s, q in back.curve if q >= target - MARGIN)
    assert back.curve[0] == (0, quality(hidden))
    # distances to the Original: the hidden model starts at its head row's norm; the Retrain far away
    row = torch.cat([original.net.fc.weight[FORGET], original.net.fc.bias[FORGET : FORGET + 1]]).detach()
    assert back.distance_start == pytest.approx(float(row.norm()), rel=1e-5)
    assert back.distance_start < never.distance_start
    # seeded and deterministic; the given system is left as it was
    again = run(hidden)
    assert again == back
    assert all(torch.equal(v, hidden.state_dict()[k]) for k, v in before.items())


def test_steps_are_counted_at_the_evaluations(tiny):
    """A quality that counts its calls: with eval_every=2 the k-th call is at step 2k; the last step is scored."""
    ctx, _, _, hidden, _ = tiny
    calls = []

    def counting(model) -> float:
        calls.append(None)
        return float(len(calls) - 1)

    result = relearn(hidden, k_shot(ctx.forget_train, K, 0), RECIPE, counting, 3.0, 0.0, 7, 2, 0, ctx.device)
    assert result.curve == [(0, 0.0), (2, 1.0), (4, 2.0), (6, 3.0), (7, 4.0)]
    assert result.steps == 6 and result.distance_start is None and result.distance_end is None
    calls.clear()
    assert (
        relearn(hidden, k_shot(ctx.forget_train, K, 0), RECIPE, counting, 9.0, 0.5, 7, 2, 0, ctx.device).steps is None
    )


def test_distance_to_retrain_per_group_beside_the_floor(tiny):
    ctx, original, retrain, hidden, _ = tiny
    test = ctx.bench.test
    groups = example_groups(test.labels, ctx.forget_idx, [5, 8])
    d = classification_distances(hidden, retrain, test, ctx.device)
    assert d.shape == (len(test),) and bool(((d >= 0) & (d <= 1)).all())
    assert float(classification_distances(retrain, retrain, test, ctx.device).abs().max()) == 0.0
    report = beside_floor(d, classification_distances(original, retrain, test, ctx.device), groups)
    assert set(report) == {"forget", "neighbour", "other"}
    assert sum(r["n"] for r in report.values()) == len(test)


class FixedCodes(System):
    """A retrieval system whose codes are its inputs times `sign` (no training): items are (image code,
    text code, label) vectors."""

    task = "retrieval"

    def __init__(self, sign: float):
        super().__init__()
        self.net, self.sign = nn.Identity(), sign

    def transform(self, image):
        return image

    def collate(self, items):
        return {"image": torch.stack([i[0] for i in items]), "text": torch.stack([i[1] for i in items])}

    def codes(self, batch):
        return batch["image"], self.sign * batch["text"]


def test_retrieval_distances_per_query_in_both_directions():
    g = torch.Generator().manual_seed(0)
    queries = [(torch.randn(8, generator=g), torch.randn(8, generator=g), 0) for _ in range(5)]
    database = [(torch.randn(8, generator=g), torch.randn(8, generator=g), 0) for _ in range(9)]
    same = retrieval_distances(FixedCodes(1.0), FixedCodes(1.0), queries, database, "cpu", T=0.1, k=3)
    assert set(same) == {"i2t/js", "i2t/topk", "t2i/js", "t2i/topk"}
    assert all(float(v.abs().max()) == 0.0 for k, v in same.items() if k.endswith("js"))
    assert all(v.tolist() == [1.0] * 5 for k, v in same.items() if k.endswith("topk"))
    # flipping the text codes reverses every i2t ranking: the top 3 of 9 and the bottom 3 are disjoint
    flipped = retrieval_distances(FixedCodes(1.0), FixedCodes(-1.0), queries, database, "cpu", T=0.1, k=3)
    assert flipped["i2t/topk"].tolist() == [0.0] * 5
    assert bool(((flipped["i2t/js"] > 0) & (flipped["i2t/js"] <= 1)).all())
    with pytest.raises(ValueError):
        retrieval_distances(FixedCodes(1.0), FixedCodes(1.0), queries, database, "cpu", T=0.0, k=3)


def test_relearning_on_retained_data_only(tiny):
    """Case (a): the same function on D_r; the hidden class gets no forget examples to come back from."""
    ctx, original, _, hidden, quality = tiny
    retained = ctx.retain_train.sample(64, seed=0)
    result = relearn(
        hidden, retained, {**RECIPE, "batch_size": 16}, quality, quality(original), MARGIN, 4, 2, 0, ctx.device
    )
    assert [s for s, _ in result.curve] == [0, 2, 4] and result.steps is None
