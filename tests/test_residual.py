"""Per-tower residual knowledge (`evaluator.residual`): unimodal mAP and the linear probes."""

import math

import pytest
import torch
from tiny_contexts import make_hashing_context

from ppp.evaluation import evaluate_retrieval, mean_average_precision
from ppp.evaluation.delta import deltas
from ppp.evaluation.residual import linear_probe_auc
from ppp.evaluation.retrieval import encode, forget_split_labels


def test_probe_auc_separates_a_linear_target_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    codes = torch.sign(torch.randn(400, 16, generator=gen))
    target = codes[:, 3] > 0  # one bit carries the class
    assert linear_probe_auc(codes[:200], target[:200], codes[200:], target[200:]) == 1.0
    noise = torch.rand(400, generator=gen) > 0.5  # independent of the codes
    assert abs(linear_probe_auc(codes[:200], noise[:200], codes[200:], noise[200:]) - 0.5) < 0.12
    assert math.isnan(linear_probe_auc(codes[:200], torch.zeros(200, dtype=torch.bool), codes[200:], target[200:]))


def test_residual_metrics_on_the_retrieval_codes(tmp_path, single_thread):
    ctx = make_hashing_context(tmp_path)
    system, bench = ctx.trained()[0], ctx.bench
    plain = evaluate_retrieval(system, bench, ctx.forget_idx, ctx.device)
    full = evaluate_retrieval(system, bench, ctx.forget_idx, ctx.device, residual=True)
    assert not any(k.endswith(("i2i_map", "t2t_map")) or k.startswith("probe/") for k in plain)
    for key, value in plain.items():  # the cross-modal numbers do not change
        assert torch.equal(full[key], value) if torch.is_tensor(value) else full[key] == value
    # i2i / t2t: the same codes, image (text) queries against the database images (texts)
    q_img, q_txt = encode(system, bench.query, ctx.device)
    d_img, d_txt = encode(system, bench.database, ctx.device)
    is_forget = bench.query.labels[:, ctx.forget_idx].sum(1) > 0
    ql, dl = forget_split_labels(bench.query.labels[is_forget], bench.database.labels, ctx.forget_idx, "forget_classes")
    assert full["forget/i2i_map"] == pytest.approx(mean_average_precision(q_img[is_forget], d_img, ql, dl))
    assert full["forget/t2t_map"] == pytest.approx(mean_average_precision(q_txt[is_forget], d_txt, ql, dl))
    assert full["retain/t2t_map"] == pytest.approx(
        mean_average_precision(q_txt[~is_forget], d_txt, bench.query.labels[~is_forget], bench.database.labels)
    )
    assert full["per_query/forget/i2i_map"].shape == (int(is_forget.sum()),)
    db_forget = bench.database.labels[:, ctx.forget_idx].sum(1) > 0
    for modality, q, d in (("image", q_img, d_img), ("text", q_txt, d_txt)):
        assert full[f"probe/{modality}_auc"] == linear_probe_auc(d, db_forget, q, is_forget)
        assert 0.0 <= full[f"probe/{modality}_auc"] <= 1.0


def test_residual_metrics_stay_out_of_delta():
    quality = {"forget/i2t_map": 0.3, "forget/t2i_map": 0.2, "retain/i2t_map": 0.7, "retain/t2i_map": 0.6}
    refs = {"retrain": dict(quality), "original": dict(quality)}
    residual = {"forget/i2i_map": 0.9, "forget/t2t_map": 0.1, "probe/image_auc": 1.0, "probe/text_auc": 0.5}
    assert deltas({**quality, **residual}, refs, "retrieval", "mean_abs") == deltas(
        quality, refs, "retrieval", "mean_abs"
    )
    assert deltas({**quality, **residual}, refs, "retrieval", "mean_abs")["objective/gap"] == 0.0
