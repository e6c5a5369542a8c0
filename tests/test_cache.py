import io
import os
import threading
import time

import pytest
import torch
from conftest import TINY
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tiny_contexts import CONF, TinyClassifier, make_context, make_hashing_context

from ppp import identity as identity_module
from ppp.cache import Cache, config_identity, content_key
from ppp.experiment import build_context
from ppp.methods import context as context_module
from ppp.methods import prototypes as prototypes_module
from ppp.models.base import System
from ppp.runs import run_hash


def test_key_is_stable_and_sensitive():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_hit_miss_corrupt_and_old_format(tmp_path, ppp_log):
    cache = Cache(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(4.0)}

    payload, hit = cache.get_or_build("models", "k1", build)
    assert not hit and len(calls) == 1
    payload, hit = cache.get_or_build("models", "k1", build)
    assert hit and len(calls) == 1 and torch.equal(payload["w"], torch.arange(4.0))
    assert any("reusing" in m for m in ppp_log.messages)

    path = cache.path("models", "k1")
    path.write_bytes(path.read_bytes()[:-10])  # truncated (a bad copy, a full disk)
    payload, hit = cache.get_or_build("models", "k1", build)
    assert not hit and len(calls) == 2 and torch.equal(payload["w"], torch.arange(4.0))
    assert cache.load("models", "k1") is not None  # the rebuild replaced the corrupt entry

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    path.write_bytes(buf.getvalue())  # an entry of the old format (bare torch.save, checksum beside it)
    assert cache.load("models", "k1") is None and path.exists()  # rebuilt by the caller, never deleted by a reader


def test_one_file_per_entry_and_no_temporary_files_left(tmp_path):
    cache = Cache(tmp_path)
    cache.save("fisher", "abc", {"x": torch.ones(3)})
    assert sorted(p.name for p in (tmp_path / "fisher").iterdir()) == ["abc.pt"]


@pytest.mark.parametrize("n_writers", [1, 2])
def test_readers_never_see_or_destroy_an_entry_being_written(tmp_path, monkeypatch, n_writers):
    """Writers (two: building one artefact at once) made slow at every fsync; a reader polls meanwhile.
    With the payload and its checksum in two files, the reader found the payload alone and deleted it;
    here it sees nothing or everything, and the last complete write stays."""
    real_fsync = os.fsync

    def slow_fsync(fd):
        time.sleep(0.05)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    cache = Cache(tmp_path)
    payload = {"w": torch.arange(1000.0)}
    writers = [threading.Thread(target=cache.save, args=("models", "k", payload)) for _ in range(n_writers)]
    seen = []
    for w in writers:
        w.start()
    while any(w.is_alive() for w in writers):
        seen.append(cache.load("models", "k"))
    for w in writers:
        w.join()
    assert all(s is None or torch.equal(s["w"], payload["w"]) for s in seen)
    final = cache.load("models", "k")
    assert final is not None and torch.equal(final["w"], payload["w"])
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["k.pt"]


# ---- what each key holds --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_hashing_context(tmp_path_factory.mktemp("unused")).bench


@pytest.fixture
def hashing_ctx(scenes, tmp_path):
    """A context on the shipped configs with `overrides`, all on one benchmark (built once)."""

    def make(*overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*TINY, f"cache_dir={tmp_path}", "device=cpu", *overrides])
        return build_context(
            cfg, benchmarks=lambda *_: scenes, cache=Cache(tmp_path), device=torch.device("cpu"), checks=False
        )

    return make


def test_model_key_changes_with_each_keyed_value(hashing_ctx, monkeypatch):
    base = hashing_ctx().original_key
    for override in (
        "dataset.topic_prob=0.4",
        "dataset.seed=1",
        "backbone.train.epochs=2",
        "backbone.dropout=0.1",
        "backbone.loss.proxy_seed=1",
        "bits=32",
        "seed=1",
    ):
        assert hashing_ctx(override).original_key != base, override
    ctx = hashing_ctx()
    ctx.device = torch.device("meta")  # any other device type
    assert ctx.original_key != base
    monkeypatch.setattr(identity_module, "TRAINING_VERSION", identity_module.TRAINING_VERSION + 1)
    assert hashing_ctx().original_key != base


def test_model_key_ignores_what_never_changes_a_model(hashing_ctx):
    base = hashing_ctx().original_key
    for override in (
        "num_workers=2",
        "cache_dir=/elsewhere",
        "out_dir=/tmp/x",
        "sample_seed=7",
        "forget=[zero]",
        "method=ssd",
        "method.alpha=3",
        "references=[original]",
        "+dataset.skip_bad_images=true",
    ):
        assert hashing_ctx(override).original_key == base, override
    assert hashing_ctx("forget=[zero]").model_key(True) != hashing_ctx().model_key(True)  # Retrain keys its classes


def test_a_new_key_at_its_neutral_default_keeps_existing_keys(hashing_ctx, monkeypatch):
    base = hashing_ctx().original_key
    monkeypatch.setitem(identity_module.NEUTRAL_DEFAULTS, "dataset.future_option", 0)
    monkeypatch.setitem(identity_module.NEUTRAL_DEFAULTS, "backbone.loss.future_term", "off")
    assert hashing_ctx("+dataset.future_option=0", "+backbone.loss.future_term=off").original_key == base
    assert hashing_ctx("+dataset.future_option=500").original_key != base
    assert hashing_ctx("+backbone.loss.future_term=on").original_key != base
    # an undeclared key is keyed: the safe side (a rebuild, never a stale reuse)
    assert hashing_ctx("+dataset.undeclared=0").original_key != base


def test_a_new_key_at_its_neutral_default_keeps_finished_runs_finished(hashing_ctx, monkeypatch):
    """Run hashes follow the same rule: a key added later, at its neutral value, leaves them unchanged."""
    base = run_hash(hashing_ctx().cfg)
    monkeypatch.setitem(identity_module.NEUTRAL_DEFAULTS, "method.future_flag", "off")
    assert run_hash(hashing_ctx("+method.future_flag=off").cfg) == base
    assert run_hash(hashing_ctx("+method.future_flag=on").cfg) != base
    assert run_hash(hashing_ctx("+method.undeclared=0").cfg) != base
    assert run_hash(hashing_ctx("method.sign_flip=false").cfg) != base  # declared, not at its neutral value
    assert run_hash(hashing_ctx("forget=[zero]").cfg) != base  # never keyed for models, always for runs
    assert run_hash(hashing_ctx("+dataset.root=/elsewhere").cfg) == base


def test_config_identity_walks_nested_sections(monkeypatch):
    monkeypatch.setitem(identity_module.NEUTRAL_DEFAULTS, "backbone.train.new", None)
    section = OmegaConf.create({"train": {"new": None, "lr": 1.0}, "name": "x"})
    assert config_identity(section, "backbone") == {"train": {"lr": 1.0}, "name": "x"}
    assert config_identity(OmegaConf.create({"forget": ["six"], "seed": 0}), "dataset") == {"seed": 0}


class WithContext(System):
    """A system whose per-sample loss reads a context (what keys the context draw)."""

    task = "retrieval"

    def loss_context(self, batch):
        return {}


@pytest.fixture
def fisher_builds(monkeypatch):
    """ctx.fisher with the estimator replaced by a recorder: returns how many diagonals were built."""
    built = []

    def fake_fisher(system, data, device, mode, batch_size, chunk, context_data, memory_mb):
        built.append((data.root_indices().tolist(), None if context_data is None else len(context_data)))
        return {"w": torch.ones(1)}

    monkeypatch.setattr(context_module, "fisher_diagonal", fake_fisher)

    def run(ctx, settings, data=None, system=None):
        ctx.fisher(system or WithContext(), ctx.forget_train if data is None else data, OmegaConf.create(settings))
        return len(built)

    return run


SETTINGS = {
    "name": "ppp",
    "fisher_mode": "per_sample",
    "fisher_batch_size": 64,
    "batch_order": "auto",
    "fisher_chunk": 32,
    "fisher_context_size": 16,
}


def test_fisher_key_changes_with_each_keyed_value(hashing_ctx, fisher_builds, monkeypatch):
    ctx = hashing_ctx()
    assert fisher_builds(ctx, SETTINGS) == 1
    assert fisher_builds(ctx, SETTINGS) == 1  # reused
    assert fisher_builds(ctx, {**SETTINGS, "fisher_context_size": 8}) == 2
    assert fisher_builds(hashing_ctx("seed=1"), SETTINGS) == 3  # other model and other context draw
    assert fisher_builds(ctx, SETTINGS, data=ctx.forget_train.subset(range(5))) == 4
    batch = {**SETTINGS, "fisher_mode": "batch"}
    assert fisher_builds(ctx, batch) == 5
    assert fisher_builds(ctx, {**batch, "fisher_batch_size": 8}) == 6
    assert fisher_builds(ctx, {**batch, "batch_order": "official"}) == 7
    monkeypatch.setattr(identity_module, "FISHER_VERSION", identity_module.FISHER_VERSION + 1)
    assert fisher_builds(ctx, SETTINGS) == 8


def test_fisher_key_ignores_what_does_not_change_the_diagonal(hashing_ctx, fisher_builds):
    ctx = hashing_ctx()
    assert fisher_builds(ctx, SETTINGS) == 1
    assert fisher_builds(ctx, {**SETTINGS, "fisher_chunk": 5}) == 1  # the fixed context makes chunks irrelevant
    assert fisher_builds(ctx, {**SETTINGS, "fisher_memory_mb": 100.0}) == 1  # and so their memory budget
    assert fisher_builds(ctx, {**SETTINGS, "fisher_batch_size": 8, "batch_order": "official"}) == 1  # batch-only
    assert fisher_builds(hashing_ctx("sample_seed=3", "num_workers=1"), SETTINGS) == 1
    batch = {**SETTINGS, "fisher_mode": "batch"}
    assert fisher_builds(ctx, batch) == 2
    assert fisher_builds(ctx, {**batch, "fisher_context_size": 8, "fisher_chunk": 3}) == 2  # per-sample-only


def test_fisher_context_is_keyed_only_for_systems_that_read_one(fisher_builds, tmp_path):
    ctx = make_context(tmp_path)
    classifier = TinyClassifier(10, 8, 4)
    assert fisher_builds(ctx, SETTINGS, system=classifier) == 1
    assert fisher_builds(ctx, {**SETTINGS, "fisher_context_size": 8}, system=classifier) == 1


def test_prototype_key_has_a_version_and_its_modality(hashing_ctx, monkeypatch):
    built = []
    monkeypatch.setattr(prototypes_module, "system_prototypes", lambda *a: built.append(a) or torch.zeros(2))
    ctx, system = hashing_ctx(), WithContext()
    for modality, expected in (("mean", 1), ("mean", 1), ("image", 2)):
        ctx.prototypes(system, modality)
        assert len(built) == expected
    monkeypatch.setattr(identity_module, "PROTOTYPE_VERSION", identity_module.PROTOTYPE_VERSION + 1)
    ctx.prototypes(system, "mean")
    assert len(built) == 3


def test_cache_command_lists_and_prunes_by_kind(tmp_path, capsys):
    from ppp.cache import main

    cache = Cache(tmp_path, made_by={"method": "ppp", "seed": 3})
    cache.get_or_build("models", "a" * 20, lambda: {"w": torch.ones(3)}, "original model")
    cache.get_or_build("fisher", "b" * 20, lambda: {"w": torch.ones(3)}, "fisher_forget")
    assert [u["reused"] for u in cache.used] == [False, False]
    cache.get_or_build("models", "a" * 20, lambda: {"w": torch.zeros(3)}, "original model")
    assert cache.used[-1] == {"kind": "models", "key": "a" * 20, "label": "original model", "reused": True}

    main(["list", "--root", str(tmp_path)])
    listing = capsys.readouterr().out
    assert "original model" in listing and "method=ppp seed=3" in listing and "listed 2 entries" in listing
    main(["prune", "--root", str(tmp_path), "--kind", "fisher", "--dry-run"])
    assert "would remove 1 entries" in capsys.readouterr().out and cache.path("fisher", "b" * 20).exists()
    main(["prune", "--root", str(tmp_path), "--kind", "fisher"])
    assert not cache.path("fisher", "b" * 20).exists() and cache.path("models", "a" * 20).exists()
    main(["prune", "--root", str(tmp_path), "--older-than", "1"])  # nothing is a day old
    assert cache.path("models", "a" * 20).exists()
    with pytest.raises(SystemExit):
        main(["prune", "--root", str(tmp_path)])  # never empties everything by accident
