"""Reference rows' metrics are cached: keyed by everything they depend on, identical when reused."""

import io
import json

import numpy as np
import pytest
from test_runner import composed
from tiny_contexts import make_hashing_context

from ppp.cache import Cache, source_digest
from ppp.evaluation import EVALUATORS
from ppp.experiment import execute, reference_metrics
from ppp.runs import split_arrays


@pytest.fixture
def counted_evaluators():
    """The retrieval evaluator, counting its calls: (the calls, the evaluator to pass to `execute`)."""
    calls, evaluate = [], EVALUATORS.get("retrieval")

    def counting(system, ctx, cfg):
        calls.append(ctx.cfg.method.name)
        return evaluate(system, ctx, cfg)

    return calls, counting


def test_warm_run_reuses_reference_rows_without_evaluating_them(tmp_path, counted_evaluators, single_thread):
    calls, counting = counted_evaluators
    overrides = [
        "method=fisher_zero",
        "references=[original,retrain,bad]",
        "evaluator.density=true",
        "skip_finished=false",
    ]
    first = execute(composed(tmp_path, overrides), evaluator=counting)
    assert len(calls) == 4  # the method and three references
    cold = {name: (tmp_path / "out" / f).read_bytes() for name, f in (("json", "metrics.json"), ("npz", "arrays.npz"))}
    second = execute(composed(tmp_path, overrides), evaluator=counting)
    assert len(calls) == 5  # the method only
    assert second["references"] == first["references"]
    assert set(first["references"]) == {"original", "retrain", "bad"}
    assert (
        json.loads(cold["json"])["references"]
        == json.loads((tmp_path / "out" / "metrics.json").read_text())["references"]
    )
    with np.load(tmp_path / "out" / "arrays.npz") as warm:
        with np.load(io.BytesIO(cold["npz"])) as before:
            reference_arrays = [k for k in before.files if not k.startswith("method/")]
            assert {k.split("/")[0] for k in reference_arrays} == {"original", "retrain", "bad"}
            assert any("per_query" in k for k in reference_arrays) and any("density" in k for k in reference_arrays)
            assert sorted(warm.files) == sorted(before.files)
            for k in reference_arrays:
                assert warm[k].dtype == before[k].dtype and np.array_equal(warm[k], before[k], equal_nan=True)
    deltas = {k: v for k, v in first["metrics"].items() if k.startswith("delta/")}
    assert deltas and deltas == {k: v for k, v in second["metrics"].items() if k.startswith("delta/")}


# Each input of a reference row's metrics, changed alone, must miss the cache; sample_seed only matters
# when the evaluator draws its forget queries with it.
CHANGES = [
    ("evaluator.split=val", True),
    ("evaluator.ties=stable", True),
    ("evaluator.forget_relevance=any_label", True),
    ("evaluator.mia=[entropy_lr]", True),
    ("evaluator.audit.attacks=[baseline]", True),
    ("evaluator.forget_queries=sampled", True),
    ("forget=[one]", True),
    ("bits=32", True),
    ("seed=1", True),
    ("dataset.n_total=300", True),
    ("backbone.train.epochs=2", True),
    ("sample_seed=5", False),
    ("num_workers=1", False),
]


def test_reference_key_changes_with_each_input(tmp_path, single_thread):
    calls = []

    def stub(system, ctx, cfg):  # what it returns identifies the call
        calls.append(1)
        return {"retain/calls": float(len(calls))}

    def row(*overrides):
        ctx = make_hashing_context(tmp_path / "cache", overrides)
        return reference_metrics(ctx, stub, ["original"], ctx.fresh_system())["original"]["retain/calls"]

    base = row()
    assert row() == base and len(calls) == 1  # reused
    for change, keyed in CHANGES:
        before = len(calls)
        value = row(change)
        assert (len(calls) == before + 1 and value != base) if keyed else (len(calls) == before and value == base), (
            change
        )
    drawn = row("evaluator.forget_queries=sampled", "sample_seed=5")  # now the draw depends on it
    assert len(calls) == 1 + sum(keyed for _, keyed in CHANGES) + 1 and drawn != base
    relearn = row("evaluator.relearn=true")  # relearning draws its k forget examples with the sample seed
    assert row("evaluator.relearn=true", "sample_seed=5") not in (relearn, base)
    assert len(calls) == 1 + sum(keyed for _, keyed in CHANGES) + 3


def test_reference_rows_change_with_the_models(tmp_path, single_thread):
    """Retrain and Bad are keyed apart from Original; the real evaluator's numbers come back unchanged."""
    ctx = make_hashing_context(tmp_path / "cache")
    original = ctx.trained()[0]
    evaluate = EVALUATORS.get("retrieval")
    cold = reference_metrics(ctx, evaluate, ["original", "retrain", "bad"], original)
    assert cold["original"]["retain/i2t_map"] != cold["bad"]["retain/i2t_map"]
    assert len({p.name for p in (tmp_path / "cache" / "reference_metrics").glob("*.pt")}) == 3
    ctx.cache = Cache(tmp_path / "cache")
    warm = reference_metrics(ctx, lambda *a: pytest.fail("evaluated again"), ["original", "retrain", "bad"], original)
    assert warm.keys() == cold.keys()
    for name in cold:
        (warm_scalars, warm_arrays), (cold_scalars, cold_arrays) = split_arrays(warm[name]), split_arrays(cold[name])
        assert json.dumps(warm_scalars) == json.dumps(cold_scalars)  # what metrics.json would hold
        assert warm_arrays.keys() == cold_arrays.keys()
        for key, value in cold_arrays.items():
            assert warm_arrays[key].dtype == value.dtype and np.array_equal(warm_arrays[key], value, equal_nan=True)
    assert all(entry["reused"] for entry in ctx.cache.used if entry["kind"] == "reference_metrics")


def test_source_digest_follows_every_edit(tmp_path):
    package = tmp_path / "evaluation"
    package.mkdir()
    (package / "map.py").write_text("X = 1\n")
    before = source_digest(package)
    (package / "map.py").write_text("X = 2\n")
    source_digest.cache_clear()
    assert source_digest(package) != before
    source_digest.cache_clear()
