"""The membership audit (issue 21): reference models trained like the target on balanced halves of the
population, cached once per model seed; each attack finds the members of a model that memorises and is at
chance on one that never saw them; its config errors are one line, before any training."""

import dataclasses

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tiny_contexts import make_context, make_hashing_context

from ppp import identity
from ppp.config import compose_config, load_block
from ppp.data.base import InMemoryImages, root_indices
from ppp.data.digits import digits
from ppp.errors import ConfigError
from ppp.evaluation.audit_membership import (
    ATTACKS,
    AuditSettings,
    Observed,
    attack_scores,
    membership_audit,
    rank_scores,
    source_ids,
)
from ppp.evaluation.references import inclusion_matrix, population
from ppp.experiment import validate
from ppp.runs import run_hash
from ppp.schema import parse

pytestmark = pytest.mark.usefixtures("single_thread")

POPULATION_ATTACKS = ["baseline", "lira_offline", "lira_online", "rmia", "shokri"]


def settings(**values) -> AuditSettings:
    return parse(AuditSettings, {**load_block("audit/membership.yaml"), "n_boot": 200, **values}, "audit")


def test_every_example_is_in_exactly_half_of_the_references():
    inside = inclusion_matrix(8, 101, seed=3)
    assert inside.shape == (8, 101) and (inside.sum(0) == 4).all()
    assert 30 < inside.sum(1).min() and inside.sum(1).max() < 71  # each model about half of P
    assert (inclusion_matrix(8, 101, seed=3) == inside).all() and (inclusion_matrix(8, 101, seed=4) != inside).any()
    with pytest.raises(ConfigError, match="even"):
        inclusion_matrix(3, 10, seed=0)


# --- the attacks on planted statistics ---------------------------------------------------------------------------


def planted_world(k=8, n=300, effect=3.0, seed=1):
    """Per-example difficulty; training on an example raises its φ by `effect`. Reference k trains on its row
    of a balanced in/out matrix, the target on the first half of the examples. (A 95 % interval misses 0.5 in
    one null world of twenty; at seed 0 the halves' difficulties differ that much, at seed 1 they do not.)"""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 2, n)
    inside = inclusion_matrix(k, n, seed)

    def model(trained):
        phi = difficulty + effect * trained + rng.normal(0, 0.5, n)
        p = 1 / (1 + np.exp(-phi))
        return Observed(phi, phi, np.stack([p, 1 - p, np.abs(phi)], 1))

    return model, [model(row) for row in inside], inside, np.arange(n) < n // 2


@pytest.mark.parametrize("attack", POPULATION_ATTACKS)
def test_each_attack_finds_planted_members_and_nothing_in_a_model_that_never_saw_them(attack):
    from ppp.evaluation.attack_metrics import attack_report

    model, refs, inside, members = planted_world()
    for trained, strong in ((members, True), (np.zeros_like(members), False)):
        population_mask = ~trained
        scores = attack_scores(attack, model(trained), refs, inside, population_mask, settings(), None)
        report = attack_report(scores[members], scores[~members], n_boot=200, seed=0)
        if strong:
            assert report.auc > 0.8 and report.informative, (attack, report.auc)
        else:
            assert report.auc_ci[0] < 0.5 < report.auc_ci[1], (attack, report.auc_ci)


def test_rank_reads_how_high_the_own_caption_comes_back():
    images = torch.tensor([[1, 1, 1, 1], [1, 1, -1, -1], [1, 1, 1, -1]], dtype=torch.float)
    texts = torch.tensor([[1, 1, 1, 1], [1, 1, 1, -1], [1, 1, 1, 1]], dtype=torch.float)
    scores = rank_scores(images, texts, torch.tensor([0, 1, 2]))
    # item 0: own caption identical, tied with caption 2 -> rank 0.5; item 1: own caption at Hamming distance 1,
    # the others at 2 -> rank 0; item 2: caption 1 closer, caption 0 tied with its own -> rank 1.5
    assert scores.tolist() == [-0.5, 0.0, -1.5]


# --- end to end on tiny models ---------------------------------------------------------------------------------


def random_label_context(cache_dir, epochs=30):
    """The tiny MLP on 240 training digits whose labels are random: only memorising them fits them."""
    ctx = make_context(cache_dir, epochs=epochs)
    bench = digits(size=8, per_class=40, population_per_class=0)
    base = bench.train.base
    labels = torch.randint(0, 10, (len(base.labels),), generator=torch.Generator().manual_seed(0))
    data = InMemoryImages(base.images, labels)
    ctx.bench = dataclasses.replace(
        bench, **{s: data.subset(getattr(bench, s).indices) for s in ("train", "test", "val")}
    )
    return ctx


def saved_references(log) -> int:
    """How many reference models the cache trained and saved (its log says so once per model)."""
    return sum(m.startswith("[cache] saved reference model") and " outputs (" not in m for m in log.messages)


def test_memorising_model_is_found_by_every_attack_and_an_untrained_one_is_not(tmp_path, ppp_log):
    ctx = random_label_context(tmp_path)
    audit = settings(attacks=POPULATION_ATTACKS, references=4, primary="lira_online")
    out = membership_audit(ctx.trained()[0], ctx, audit)

    assert saved_references(ppp_log) == 4
    for attack in POPULATION_ATTACKS:
        assert out[f"audit/{attack}/retain/auc"] > 0.8 and out[f"audit/{attack}/retain/informative"] == 1.0, attack
        assert out[f"audit/{attack}/forget/n_members"] == len(ctx.forget_train)
    assert out["audit/primary/retain/auc"] == out["audit/lira_online/retain/auc"]
    assert out["audit/baseline/retain/member_scores"].shape == (len(ctx.retain_train),)
    n_nonmembers = out["audit/lira_online/retain/n_nonmembers"]
    assert 10 <= n_nonmembers < 100  # supports FPR 0.1 only
    assert np.isnan(out["audit/lira_online/retain/tpr@0.01"]) and 0 <= out["audit/lira_online/retain/tpr@0.1"] <= 1

    untrained = membership_audit(ctx.fresh_system(seed=7), ctx, audit)
    assert saved_references(ppp_log) == 4  # the references came from the cache
    for attack in POPULATION_ATTACKS:
        lo, hi = untrained[f"audit/{attack}/retain/auc_lo"], untrained[f"audit/{attack}/retain/auc_hi"]
        assert lo < 0.5 < hi, (attack, lo, hi)


def test_references_are_shared_by_every_method_of_a_seed_and_keyed_on_it(tmp_path, ppp_log):
    audit = settings(attacks=["lira_offline"], references=2, primary="lira_offline")
    ctx = make_context(tmp_path, epochs=1)
    target = ctx.fresh_system()
    membership_audit(target, ctx, audit)
    assert saved_references(ppp_log) == 2 and "reference model 2/2" in "\n".join(ppp_log.messages)
    other_method = make_context(tmp_path, epochs=1)
    other_method.cfg.method = {"name": "ssd"}
    other_method.cfg.sample_seed = 4
    membership_audit(target, other_method, audit)
    assert saved_references(ppp_log) == 2
    other_seed = make_context(tmp_path, epochs=1)
    other_seed.cfg.seed = 1
    membership_audit(target, other_seed, audit)
    assert saved_references(ppp_log) == 4
    membership_audit(
        target, ctx, settings(attacks=["lira_offline"], references=2, primary="lira_offline", reference_seed=1)
    )
    assert saved_references(ppp_log) == 6


def test_the_bootstrap_unit_is_the_glyph_where_each_item_shows_one(tmp_path):
    """digits: each image's one glyph, shared by its jittered copies, never across member and non-member;
    digit_scenes (1-3 glyphs a scene): no source ids, items are resampled."""
    ctx = make_context(tmp_path, epochs=1)
    pop = population(ctx.bench)
    ids = source_ids(ctx.bench, pop.data)
    glyphs = ctx.bench.info["glyphs"]
    assert ids.shape == (len(pop.data),)
    assert ids[0] == glyphs[int(root_indices(pop.train)[0])][0]
    assert ids[-1] == glyphs[int(root_indices(ctx.bench.population)[-1])][0]
    assert not set(ids[: pop.n_train]) & set(ids[pop.n_train :])
    assert len(np.unique(ids[: pop.n_train])) < pop.n_train  # jittered copies share their source
    scenes = make_hashing_context(tmp_path / "scenes")
    assert source_ids(scenes.bench, population(scenes.bench).data) is None


def test_a_retrieval_audit_reports_every_attack_on_both_sets(tmp_path):
    ctx = make_hashing_context(tmp_path)
    audit = settings(attacks=list(ATTACKS), references=2, primary="rank", gallery=32, n_boot=50)
    out = membership_audit(ctx.trained()[0], ctx, audit)
    for attack in ATTACKS:
        for split in ("forget", "retain"):
            prefix = f"audit/{attack}/{split}"
            assert 0 <= out[f"{prefix}/auc"] <= 1 and out[f"{prefix}/auc_lo"] <= out[f"{prefix}/auc_hi"], prefix
            assert {f"{prefix}/bal_acc", f"{prefix}/tpr@0.1", f"{prefix}/tpr@0.1_lo", f"{prefix}/informative"} <= set(
                out
            )
            assert out[f"{prefix}/member_scores"].shape == (int(out[f"{prefix}/n_members"]),)
    assert out["audit/rank/forget/n_members"] == len(ctx.forget_train)
    assert out["audit/rank/forget/n_nonmembers"] < out["audit/baseline/forget/n_nonmembers"]  # no queries in the index
    assert out["audit/primary/forget/auc"] == out["audit/rank/forget/auc"]


# --- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["evaluator.audit.attacks=[lira]"], "unknown value(s) lira; valid: baseline, lira_offline, lira_online, rmia"),
        (
            ["dataset=digits", "evaluator.audit.attacks=[rank]", "evaluator.audit.primary=rank"],
            "evaluator.audit.attacks: rank needs a retrieval index",
        ),
        (["evaluator.audit.attacks=[shokri]"], "primary=lira_online is not among evaluator.audit.attacks"),
        (["evaluator.audit.references=5"], "evaluator.audit.references must be even"),
        (["dataset=digits", "evaluator.mia=[shokri]"], "'shokri' moved to evaluator.audit.attacks=[shokri]"),
        (["evaluator.audit.fprs=[0.1,2]"], "evaluator.audit.fprs must lie in (0, 1]"),
    ],
)
def test_config_errors_are_one_line_before_any_work(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_audit_at_its_defaults_keeps_run_hashes():
    cfg = compose_config([])
    assert list(cfg.evaluator.audit.attacks) == [] and "evaluator.audit" in identity.NEUTRAL_DEFAULTS
    without = OmegaConf.to_container(cfg)
    del without["evaluator"]["audit"]
    assert run_hash(cfg) == run_hash(OmegaConf.create(without))
    assert run_hash(compose_config(["evaluator.audit.attacks=[lira_online]"])) != run_hash(cfg)
    assert membership_audit(None, None, settings()) == {}
