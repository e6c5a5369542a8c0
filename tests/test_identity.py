"""ppp/identity.py is the one source of what never changes a result: the sweep folder names Hydra writes
leave out exactly its keys, and run hashes and cache keys read its constants at call time."""

import pytest
from omegaconf import OmegaConf, open_dict
from test_report_deletion import script

from ppp import identity
from ppp.cache import config_identity
from ppp.config import NAME_MAX, compose_config, sweep_folder
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


LONG = (  # a search's best_overrides.txt on the held-out experiment: 268 bytes as a folder name
    "dataset=digits,experiment=heldout_defaults_digits,forget=[six,eight],method.min_steps=27,"
    "method.retain_fraction=0.9659124256924487,method.temperature.classification=4.000798849734784,"
    "method.train.classification.lr=0.0004536667901974012,method=bad_teacher,seed=0"
)


def test_sweep_folder_names_fit_a_file_name():
    cfg = compose_config([], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.job.num = 11
        cfg.hydra.job.override_dirname = "method=ppp,forget=[six,eight],seed=2"
    assert cfg.hydra.sweep.subdir == "11_method=ppp,forget=[six,eight],seed=2"  # a name that fits is unchanged
    with open_dict(cfg):
        cfg.hydra.job.override_dirname = LONG
    name = cfg.hydra.sweep.subdir
    assert len(f"11_{LONG}") > NAME_MAX >= len(name.encode())
    kept, digest = name.split("~")
    assert f"11_{LONG}".startswith(kept + ",") and len(digest) == 10  # whole leading overrides, then the digest
    assert sweep_folder(11, LONG.replace("seed=0", "seed=1")) != name == sweep_folder(11, LONG)
    # a cut falls between overrides, not inside a list value
    listed = "method=ppp,forget=[" + ",".join(["class"] * 60) + "]"
    assert sweep_folder(0, listed).split("~")[0] == "0_method=ppp"
    # a group path or a path value: one folder a run, not nested ones, read back from its saved overrides
    grouped = "+experiment/setting=clip_side,bits=64,seed=2"
    assert sweep_folder(17, grouped).split("~")[0] == "17_+experiment_setting=clip_side,bits=64,seed=2"
    assert "/" not in sweep_folder(3, "data_root=/data/coco") != sweep_folder(3, "data_root=/data/coco2")


def test_run_hash_check_reads_a_shortened_folders_saved_overrides(tmp_path):
    check = script("check_run_hashes")
    run_dir = tmp_path / sweep_folder(0, LONG)
    with pytest.raises(FileNotFoundError, match="shortened"):
        check.overrides_of(str(run_dir))
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = LONG.replace("forget=[six,eight]", "forget=[six]").split(",") + ["device=cpu"]
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    assert check.overrides_of(str(run_dir)) == overrides[:-1]  # the device is no part of a folder's name
    assert check.overrides_of("x/3_method=ppp,forget=[six,eight]") == ["method=ppp", "forget=[six,eight]"]


def test_run_hash_check_can_ask_whether_the_plain_command_gives_a_tuned_run(tmp_path, capsys):
    """--drop-method-values: a run whose searched values became the dataset's defaults reproduces from its plain
    command; without the option, its folder's method.* value is composed and the hash differs."""
    check = script("check_run_hashes")
    assert check.without_method_values(["method=ppp", "method.alpha=1", "+method.x=2", "seed=0"]) == [
        "method=ppp",
        "seed=0",
    ]
    results = tmp_path / "results.csv"
    plain_hash = run_hash(compose_config(["method=amnesiac"]))
    results.write_text(
        f'run_hash,run_dir\n{plain_hash},"chosen/0_method=amnesiac,method.lr=0.123"\n'
        f"{'0' * 20},defaults/0_method=amnesiac\n"  # another pass's run, which --runs leaves out
    )
    assert check.main(["--results", str(results), "--runs", "chosen/*"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert check.main(["--results", str(results), "--runs", "chosen/*", "--drop-method-values"]) == 0
    assert "1/1 run hashes reproduced" in capsys.readouterr().out
