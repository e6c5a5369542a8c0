"""Item forget sets (issue 22): which items, the Retrain they key, the methods that take them or refuse, and the
measures of a forgotten pair (partner rank and recall, ties broken at random)."""

import pytest
import torch
from conftest import tiny_config
from omegaconf import OmegaConf

from ppp.data.base import ForgetTagged, root_indices
from ppp.errors import ConfigError
from ppp.evaluation.items import expected_rank, partner_ranks, recall_at
from ppp.experiment import build_context, execute
from ppp.methods.baselines import random_wrong_labels
from ppp.runs import run_hash
from ppp.train import make_loader, tagged_collate
from ppp.validation import check_config


def composed(tmp_path, overrides=()):
    """The tiny config, every run run again (its index is shared by the test's runs)."""
    return tiny_config(tmp_path, ["skip_finished=false", *overrides])


def test_the_class_forget_set_keeps_run_hashes(tmp_path):
    cfg = composed(tmp_path)
    without = OmegaConf.to_container(cfg)
    del without["forget_set"]
    assert run_hash(cfg) == run_hash(OmegaConf.create(without))
    assert run_hash(composed(tmp_path, ["forget_set=share"])) != run_hash(cfg)


def test_share_draws_its_items_with_its_own_seed(tmp_path):
    ctx = build_context(composed(tmp_path, ["forget_set=share", "forget_set.share=0.1"]))
    again = build_context(composed(tmp_path, ["forget_set=share", "forget_set.share=0.1", "seed=3"]))
    other = build_context(composed(tmp_path, ["forget_set=share", "forget_set.share=0.1", "forget_set.share_seed=1"]))
    assert len(ctx.forget_train) == 12 and len(ctx.retain_train) == 108  # 10 % of 120 training pairs
    assert torch.equal(ctx.forget_set.positions, again.forget_set.positions)  # model seed: same items
    assert not torch.equal(ctx.forget_set.positions, other.forget_set.positions)
    forget, retain = root_indices(ctx.forget_train), root_indices(ctx.retain_train)
    assert not torch.isin(forget, retain).any() and ctx.forget_idx == []


def test_retrain_is_keyed_by_the_items_whichever_way_they_were_asked(tmp_path):
    share = build_context(composed(tmp_path, ["forget_set=share", "forget_set.share=0.1"]))
    ids = tmp_path / "ids.txt"
    ids.write_text("# the share's items, listed\n" + "\n".join(str(p) for p in share.forget_set.positions.tolist()))
    listed = build_context(composed(tmp_path, ["forget_set=pairs", f"forget_set.ids_file={ids}"]))
    classes = build_context(composed(tmp_path))
    assert share.model_key(exclude_forget=True) == listed.model_key(exclude_forget=True)
    assert classes.model_key(exclude_forget=True)["excluded"] == ["six"]  # the key every class Retrain had
    assert share.model_key(exclude_forget=True) != classes.model_key(exclude_forget=True)


@pytest.mark.parametrize(
    "text, message",
    [
        ("3\nx\n", "line 2: 'x' is no training position 0..119"),
        ("3\n120\n", "line 2: '120' is no training position"),
        ("3\n3\n", "needs 1 to 119 distinct positions, got 2 (1 distinct)"),
        ("# nothing\n", "needs 1 to 119 distinct positions, got 0"),
    ],
)
def test_a_bad_ids_file_is_one_line(tmp_path, text, message):
    ids = tmp_path / "ids.txt"
    ids.write_text(text)
    with pytest.raises(ConfigError) as err:
        build_context(composed(tmp_path, ["forget_set=pairs", f"forget_set.ids_file={ids}"]))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=ccup", "backbone=clip_tiny"], "method=ccup forgets whole classes; forget_set=share deletes items"),
        (["evaluator.distance=true"], "evaluator.distance measures by the forget classes"),
        (["forget_set.share=0"], "forget_set.share must lie in (0, 1]"),
    ],
)
def test_what_cannot_serve_an_item_set_is_refused_before_any_work(tmp_path, overrides, message):
    cfg = composed(tmp_path, ["forget_set=share", *overrides])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        check_config(cfg)


def test_contributor_sets_need_a_dataset_with_contributors(tmp_path):
    with pytest.raises(ConfigError, match="needs a dataset with contributors"):
        build_context(composed(tmp_path, ["forget_set=contributor"]))


def test_partner_rank_and_recall_break_ties_at_random():
    # query 0: partner (row 0) at distance 0, one other item tied; query 1: partner (row 3) at Hamming distance 4,
    # behind row 4 (1) and rows 0, 1, 2 (2 each)
    queries = torch.tensor([[1.0, 1, 1, 1], [1, 1, -1, -1]])
    gallery = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, -1], [-1, -1, 1, 1], [1, 1, -1, 1]])
    closer, tied = partner_ranks(queries, gallery, torch.tensor([0, 3]))
    # query 1: gallery row 4 is at Hamming 1, rows 0 and 1 at 2, rows 2 and 3 (its partner) at 2 and 4
    assert closer.tolist() == [0, 4] and tied.tolist() == [1, 0]
    assert expected_rank(closer, tied).tolist() == [1.5, 5.0]
    assert recall_at(closer, tied, 1).tolist() == [0.5, 0.0]
    assert recall_at(closer, tied, 4).tolist() == [1.0, 0.0] and recall_at(closer, tied, 5).tolist() == [1.0, 1.0]


def test_item_relabelling_takes_off_every_class_the_item_carries():
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0]])
    wrong = random_wrong_labels(labels, None, 4, seed=0)
    assert (wrong.sum(1) == 1).all() and not (wrong * labels).any()  # one class, none of its own
    assert wrong[2].tolist() == [0, 0, 0, 1]
    single = random_wrong_labels(torch.tensor([2, 2, 2, 2]), None, 3, seed=0)
    assert (single != 2).all()


def test_forget_tags_reach_the_batch(tmp_path):
    ctx = build_context(composed(tmp_path, ["forget_set=share", "forget_set.share=0.1"]))
    system = ctx.fresh_system()
    data = ForgetTagged(ctx.forget_train, ctx.retain_train)
    (batch,) = list(make_loader(data, system, len(data), collate=tagged_collate(system)))
    assert batch["forget"].dtype == torch.bool and batch["forget"].tolist() == [True] * 12 + [False] * 108
    assert set(batch) == {"image", "text", "label", "forget"}


@pytest.mark.parametrize("method", ["ppp", "bad_teacher"])
def test_a_share_is_forgotten_and_measured_end_to_end(tmp_path, method, single_thread):
    overrides = [f"method={method}", "forget_set=share", "forget_set.share=0.1"]
    overrides += ["method.min_steps=8"] if method == "bad_teacher" else []  # its default of 60 steps is for real sizes
    result = execute(composed(tmp_path, overrides))
    metrics, retrain = result["metrics"], result["references"]["retrain"]
    assert result["forget_set"]["kind"] == "share" and len(result["forget_set"]["positions"]) == 12
    for name in ("forget", "heldout"):
        for direction in ("i2t", "t2i"):
            assert 0 <= metrics[f"{name}/{direction}_r1"] <= metrics[f"{name}/{direction}_r10"] <= 1
            assert 1 <= metrics[f"{name}/{direction}_rank"]
    assert metrics["count/forget_items"] == metrics["count/heldout_items"] == 12
    assert "forget/i2t_map" not in metrics and metrics["count/retain_queries"] == 40  # every test query retained
    gap = (
        abs(metrics["forget/i2t_r10"] - retrain["forget/i2t_r10"])
        + abs(metrics["forget/t2i_r10"] - retrain["forget/t2i_r10"])
    ) / 2
    assert metrics["delta/forget"] == pytest.approx(gap)
    assert execute(composed(tmp_path, overrides))["metrics"]["forget/i2t_r10"] == metrics["forget/i2t_r10"]


def test_the_audit_attacks_an_item_set_against_every_non_member(tmp_path, single_thread):
    attacks = "evaluator.audit.attacks=[baseline,lira_online,rank]"
    stream = ["forget_set=share", "forget_set.share=0.1", "forget_set.requests=2", "evaluator.audit.references=2"]
    result = execute(composed(tmp_path, ["method=finetune", *stream, attacks, "references=[]"]))
    metrics = result["metrics"]
    # the second request's 6 items against the non-member pool (40 queries + 80 database items outside training)
    assert metrics["audit/lira_online/forget/n_members"] == 6 and metrics["audit/rank/forget/n_members"] == 6
    assert metrics["audit/lira_online/forget/n_nonmembers"] == metrics["audit/lira_online/retain/n_nonmembers"] == 120
    assert metrics["audit/lira_online/retain/n_members"] == 120 - 12  # both requests' items are gone
    assert metrics["audit/rank/forget/n_nonmembers"] == 80  # the database items outside training
    assert 0 <= metrics["audit/primary/forget/auc"] <= 1
