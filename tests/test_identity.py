"""ppp/identity.py is the one source of what never changes a result: the sweep folder names Hydra writes
leave out exactly its keys, and run hashes and cache keys read its constants at call time."""

from omegaconf import OmegaConf

from ppp import identity
from ppp.cache import config_identity
from ppp.config import compose_config
from ppp.runs import run_hash


def test_sweep_folder_names_leave_out_the_neutral_keys():
    cfg = compose_config([], return_hydra_config=True)
    excluded = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert excluded == list(identity.SWEEP_FOLDER_NEUTRAL)
    # everything a run hash leaves out is left out of folder names too
    assert set(identity.NOT_IN_RUN_HASH) | identity.RUN_HASH_NEVER_KEYED <= set(excluded)


def test_neutral_keys_exist_in_the_config():
    cfg = compose_config([])
    for key in identity.NOT_IN_RUN_HASH:
        assert key in cfg, key


def test_run_hash_reads_the_identity_module(monkeypatch):
    cfg = compose_config([])
    key = run_hash(cfg)
    assert run_hash(compose_config(["num_workers=3", "++dataset.root=/elsewhere"])) == key
    monkeypatch.setattr(identity, "NOT_IN_RUN_HASH", (*identity.NOT_IN_RUN_HASH, "bits"))
    assert run_hash(compose_config(["bits=64"])) == run_hash(cfg) != key


def test_cache_keys_read_the_identity_module(monkeypatch):
    section = OmegaConf.create({"a": 1, "b": 2})
    assert config_identity(section, "x") == {"a": 1, "b": 2}
    monkeypatch.setitem(identity.NEUTRAL_DEFAULTS, "x.a", 1)
    monkeypatch.setattr(identity, "NEVER_KEYED", frozenset({"x.b"}))
    assert config_identity(section, "x") == {}
