"""Figure 1's distances: group sizes, and forget samples nearest to the forget prototype."""

import numpy as np
import pytest
import torch
from tiny_contexts import make_context, make_hashing_context

from ppp.data.base import carries_any
from ppp.evaluation.density import GROUPS, original_neighbours, prototype_distances
from ppp.methods.prototypes import system_features, system_prototypes

pytestmark = pytest.mark.usefixtures("single_thread")


def evaluated(ctx):
    """What the evaluators score by default: the test split (retrieval: the test queries)."""
    return ctx.bench.evaluation_split("test")


def expected_sizes(labels, forget_idx, neighbours):
    is_forget = carries_any(labels, forget_idx)
    is_neighbour = carries_any(labels, neighbours) & ~is_forget
    return {
        "forget": int(is_forget.sum()),
        "neighbour": int(is_neighbour.sum()),
        "other": int((~is_forget & ~is_neighbour).sum()),
    }


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return make_context(tmp_path_factory.mktemp("cache"))


def test_classifier_groups_and_forget_samples_nearest(ctx):
    original, _ = ctx.trained()
    neighbours = original_neighbours(original, ctx, k=2)
    assert len(neighbours) == 2 and not set(neighbours) & set(ctx.forget_idx)

    distances = prototype_distances(original, ctx, neighbours, evaluated(ctx))
    test = ctx.bench.test
    assert list(distances) == list(GROUPS)
    assert {g: len(d) for g, d in distances.items()} == expected_sizes(test.labels, ctx.forget_idx, neighbours)
    assert sum(len(d) for d in distances.values()) == len(test)
    # a trained classifier puts its forget-class test samples closest to the forget prototype
    assert np.median(distances["forget"]) < np.median(distances["neighbour"]) < np.median(distances["other"])

    # the distances are to the training-set prototype of the forget class, in the evaluation set's order
    prototype = system_prototypes(original, ctx.bench.train, ctx.device, ctx.bench.num_classes)[ctx.forget_idx[0]]
    features = system_features(original, test, ctx.device)
    is_forget = carries_any(test.labels, ctx.forget_idx)
    np.testing.assert_allclose(distances["forget"], (features[is_forget] - prototype).norm(dim=1).numpy(), rtol=1e-5)


def test_neighbour_list_fixes_the_groups(ctx):
    """Before and after unlearning share groups: they come from the given list, not from the model."""
    chosen = [c for c in range(ctx.bench.num_classes) if c not in ctx.forget_idx][:3]
    distances = prototype_distances(ctx.fresh_system(seed=7), ctx, chosen, evaluated(ctx))
    assert {g: len(d) for g, d in distances.items()} == expected_sizes(ctx.bench.test.labels, ctx.forget_idx, chosen)
    assert all(np.isfinite(d).all() and (d >= 0).all() for d in distances.values())


def test_retrieval_uses_the_query_set_and_multi_label_precedence(tmp_path):
    ctx = make_hashing_context(tmp_path)
    original, _ = ctx.trained()
    neighbours = original_neighbours(original, ctx, k=2)
    distances = prototype_distances(original, ctx, neighbours, evaluated(ctx))
    query = evaluated(ctx)
    assert query is ctx.bench.query
    # a query carrying both a forget and a neighbour class counts as forget only
    assert {g: len(d) for g, d in distances.items()} == expected_sizes(query.labels, ctx.forget_idx, neighbours)
    assert sum(len(d) for d in distances.values()) == len(query)
    # the tanh codes live in [-1, 1]^bits, so no distance exceeds the cube's diagonal
    bound = 2 * np.sqrt(int(ctx.cfg.bits))
    assert all((d <= bound).all() for d in distances.values())
    assert torch.isfinite(torch.as_tensor(np.concatenate(list(distances.values())))).all()
