"""A stream of deletion requests (issue 22): the split into requests, the model each request starts from, what
its caches key, and the deletion record each request writes."""

import json
from dataclasses import replace

import pytest
import torch
from test_forget_set import composed

from ppp.data.base import root_indices
from ppp.errors import ConfigError
from ppp.experiment import build_context, execute
from ppp.forget_set import ForgetSet, requests
from ppp.stream import lineage, request_sets
from ppp.validation import check_config


def test_requests_partition_the_items_and_know_what_came_before(tmp_path):
    ctx = build_context(composed(tmp_path, ["forget_set=share", "forget_set.share=0.15", "forget_set.requests=3"]))
    parts = request_sets(ctx)
    assert [len(p.root) for p in parts] == [6, 6, 6]
    assert torch.equal(torch.cat([p.root for p in parts]).sort().values, ctx.forget_set.root.sort().values)
    assert parts[0].earlier is None and torch.equal(parts[2].earlier, torch.cat([parts[0].root, parts[1].root]))
    third = replace(ctx, forget_set=parts[2])
    assert len(third.forget_train) == 6 and len(third.retain_train) == 120 - 18  # earlier requests stay deleted
    assert not torch.isin(root_indices(third.retain_train), ctx.forget_set.root).any()
    # request 3's Retrain is the Retrain of one request deleting the same 18 items
    assert third.model_key(exclude_forget=True) == ctx.model_key(exclude_forget=True)
    assert replace(ctx, forget_set=parts[0]).model_key(exclude_forget=True) != ctx.model_key(exclude_forget=True)


def test_a_contributor_stream_deletes_one_contributor_a_request():
    positions = torch.arange(8)
    owner = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    whole = ForgetSet("contributor", [], positions, positions + 100)
    parts = requests(whole, 2, 0, [1, 0], owner)
    assert [p.positions.tolist() for p in parts] == [[1, 4, 7], [0, 3, 6]]
    assert parts[1].earlier.tolist() == [101, 104, 107]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["forget_set.requests=2"], "forget_set.requests=2: a stream of requests deletes items"),
        (
            ["forget_set=contributor", "forget_set.contributors=[0,1,2]", "forget_set.requests=2"],
            "deletes one contributor a request; forget_set.contributors names 3",
        ),
    ],
)
def test_a_stream_that_cannot_be_split_is_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(composed(tmp_path, overrides))


def test_a_later_request_keys_its_caches_by_the_model_it_starts_from(tmp_path):
    ctx = build_context(composed(tmp_path, ["forget_set=share", "forget_set.share=0.15", "forget_set.requests=3"]))
    model, _ = ctx.trained()
    second = replace(ctx, forget_set=request_sets(ctx)[1], after=(model, lineage("run", 1)))
    assert second.original_key != ctx.original_key  # its Fisher and prototypes are not the Original's
    assert second.trained()[0] is not model and second.model_key(exclude_forget=True)["excluded"]["count"] == 12


def test_a_stream_runs_end_to_end_and_files_a_record_per_request(tmp_path, single_thread):
    overrides = ["method=amnesiac", "forget_set=share", "forget_set.share=0.15", "forget_set.requests=3"]
    overrides += ["~method_defaults"]  # the mechanics of a stream, at the plain method's 3 epochs (not 8)
    result = execute(composed(tmp_path, [*overrides, "evaluator.index=true"]))
    records = result["requests"]
    assert [r["request"] for r in records] == [1, 2, 3] and [r["deleted_so_far"] for r in records] == [6, 12, 18]
    items = [set(r["items"]["root_ids"]) for r in records]
    assert not (items[0] & items[1] or items[1] & items[2]) and len(result["forget_set"]["positions"]) == 18
    for r in records:
        on_disk = json.loads((tmp_path / "out" / "requests" / f"request_{r['request']}.json").read_text())
        assert on_disk == json.loads(json.dumps(r))
        assert r["figures"]["model"]["index/forgotten_served"] == 0
        assert set(r["figures"]) == {"model", "original", "retrain"}
        assert r["changed_towers"] == ["image", "text"] and r["time"]["unlearn_s"] > 0
    assert (
        "deleted/i2t_r10" in records[2]["figures"]["model"] and "deleted/i2t_r10" not in records[0]["figures"]["model"]
    )
    # every request is compared with the Original: its retained quality is the same model's in every record
    assert len({r["figures"]["original"]["retain/i2t_map"] for r in records}) == 1
