"""The served index after a deletion (issue 22): forgotten items leave it, an incremental re-encode equals a full
one, and the drift of the kept items is measured."""

import copy

import torch
from test_forget_set import composed

from ppp.data.base import root_indices
from ppp.evaluation import retrieval
from ppp.evaluation.retrieval import Encoder, encode
from ppp.experiment import build_context, execute
from ppp.index import MODALITIES, Index, changed_towers, index_drift, original_index, served_index


def test_an_incremental_reencode_equals_a_full_one_without_the_forgotten_items(tmp_path, single_thread):
    ctx = build_context(composed(tmp_path, ["forget_set=share", "forget_set.share=0.1"]))
    original, _ = ctx.trained()
    database, forgotten = ctx.bench.database, root_indices(ctx.forget_train)
    before = Index.encode(original, database, ctx.device)
    edited = copy.deepcopy(original)
    with torch.no_grad():
        edited.net.image_head[0].weight.mul_(-1)  # only the image tower changes
    towers = changed_towers(edited, original)
    assert towers == {"image"}
    incremental, _ = served_index(edited, before, database, forgotten, towers, ctx.device)
    full, _ = served_index(edited, before, database, forgotten, set(MODALITIES), ctx.device)
    assert torch.equal(incremental.ids, full.ids) and len(full.ids) == len(database) - len(forgotten)
    assert all(torch.equal(incremental.codes[m], full.codes[m]) for m in MODALITIES)
    assert not torch.isin(full.ids, forgotten).any()
    queries = Index.encode(edited, ctx.bench.query, ctx.device).codes
    assert not torch.isin(full.search(queries["image"], "text", 50), forgotten).any()
    kept = before.without(forgotten)
    assert torch.equal(full.codes["text"], kept.codes["text"]) and not torch.equal(
        full.codes["image"], kept.codes["image"]
    )


def test_drift_is_zero_for_an_unchanged_model_and_counts_flipped_bits():
    codes = {"image": torch.tensor([[1.0, 1], [1, -1], [-1, -1]]), "text": torch.tensor([[1.0, 1], [1, -1], [-1, -1]])}
    before = Index(torch.tensor([10, 11, 12]), codes)
    queries = {"image": torch.tensor([[1.0, 1]]), "text": torch.tensor([[-1.0, -1]])}
    same = index_drift(before, queries, before.without(torch.tensor([12])), queries, k=2)
    assert same["index/code_drift_image"] == 0 and same["index/i2t_top2_changed"] == 0.0
    flipped = Index(torch.tensor([10, 11]), {"image": codes["image"][:2], "text": -codes["text"][:2]})
    moved = index_drift(before, queries, flipped, queries, k=1)
    assert moved["index/code_drift_text"] == 1.0 and moved["index/code_drift_image"] == 0.0
    assert moved["index/i2t_top1_changed"] == 1.0  # item 10's text was nearest the image query; now item 11's is


def test_the_runner_reports_the_served_index(tmp_path, single_thread):
    result = execute(
        composed(tmp_path, ["method=ppp", "forget_set=share", "forget_set.share=0.1", "evaluator.index=true"])
    )
    metrics, original = result["metrics"], result["references"]["original"]
    assert metrics["index/forgotten_served"] == 0 and metrics["index/items"] == original["index/items"]
    assert original["index/code_drift_image"] == original["index/code_drift_text"] == 0.0
    assert (
        original["index/reencoded_modalities"] == 0
        and result["references"]["retrain"]["index/reencoded_modalities"] == 2
    )
    assert 0 <= metrics["index/i2t_top10_changed"] <= 1 and metrics["index/reencode_s"] > 0


def test_the_originals_index_is_encoded_once_and_read_back_the_same(tmp_path, single_thread, monkeypatch):
    """Every run over one Original reuses its cached codes (the database's and the queries')."""
    ctx = build_context(composed(tmp_path, ["forget_set=share", "forget_set.share=0.1"]))
    original, _ = ctx.trained()
    fresh = original_index(ctx, original, ctx.bench.database, ctx.device)
    encoded = []
    encode_codes = Index.encode.__func__
    monkeypatch.setattr(
        Index, "encode", classmethod(lambda cls, *a, **k: encoded.append(a[1]) or encode_codes(cls, *a, **k))
    )
    again = original_index(ctx, original, ctx.bench.database, ctx.device)
    assert encoded == [] and torch.equal(again.ids, fresh.ids)
    assert all(torch.equal(again.codes[m], fresh.codes[m]) for m in MODALITIES)
    assert again.codes["image"].shape == (len(ctx.bench.database), ctx.cfg.bits)
    queries = original_index(ctx, original, ctx.bench.query, ctx.device)  # other items: another entry
    assert encoded == [ctx.bench.query] and len(queries.ids) == len(ctx.bench.query)


def test_an_evaluations_encoder_encodes_each_dataset_once_and_gives_encodes_codes(tmp_path, single_thread, monkeypatch):
    """The database is asked for by the mAP, the item ranks, the index and the example statistics of one call."""
    ctx = build_context(composed(tmp_path, []))
    original, _ = ctx.trained()
    database, encoded = ctx.bench.database, []
    collect = retrieval.collect
    monkeypatch.setattr(
        retrieval, "collect", lambda system, data, *rest: encoded.append(data) or collect(system, data, *rest)
    )
    encoder = Encoder(original, ctx.device)
    codes, again, outputs = encoder(database), encoder(database), encoder(database, binary=False)
    assert encoded == [database]
    assert all(torch.equal(c, a) and torch.equal(c, torch.sign(o)) for c, a, o in zip(codes, again, outputs))
    assert all(torch.equal(c, e) for c, e in zip(codes, encode(original, database, ctx.device)))
    encoder(ctx.bench.query)
    assert encoded[1:] == [database, ctx.bench.query]  # `encode` has no memo; another dataset is encoded anew
