import json
from pathlib import Path

import pytest
from conftest import TINY


def metrics_of(tmp_path):
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_end_to_end_deterministic_and_cached(cli, tmp_path):
    first = cli(["method=original", *TINY])
    assert "[cache] saved original model" in first.stdout
    result = metrics_of(tmp_path)
    assert result["method"] == "original" and result["forget"] == ["six"] and result["bits"] == 16
    m = result["metrics"]
    for key in ("forget/i2t_map", "forget/t2i_map", "retain/i2t_map", "retain/t2i_map"):
        assert 0.0 <= m[key] <= 1.0
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()

    skipped = cli(["method=original", *TINY])  # the same config again: recorded as finished, not rerun
    assert "[skip] run" in skipped.stdout and "[cache]" not in skipped.stdout
    second = cli(["method=original", *TINY, "skip_finished=false"])
    assert "[cache] reusing original model" in second.stdout
    again = metrics_of(tmp_path)["metrics"]
    assert {k: v for k, v in again.items() if not k.startswith(("time/", "mem/"))} == {
        k: v for k, v in m.items() if not k.startswith(("time/", "mem/"))
    }  # identical values from a fixed seed

    cli(["method=original", *TINY, "backbone.train.lr=0.002"])  # a changed setting retrains
    assert len(list((tmp_path / "cache" / "models").glob("*.pt"))) == 2


@pytest.mark.slow
def test_retrain_excludes_forget_samples_and_bad_is_untrained(cli, tmp_path):
    cli(["method=retrain", *TINY])
    retrain = metrics_of(tmp_path)["metrics"]
    assert retrain["time/train_s"] > 0
    cli(["method=bad", *TINY])
    assert metrics_of(tmp_path)["method"] == "bad"


@pytest.mark.slow
def test_multirun_over_bits(cli, tmp_path):
    cli(["-m", "bits=16,32", *TINY])
    found = sorted(json.loads(p.read_text())["bits"] for p in (tmp_path / "multi").glob("*/metrics.json"))
    assert found == [16, 32]


def test_config_errors_are_one_line(cli):
    bad_class = cli(["forget=[seven_and_a_half]", *TINY], check=False)
    assert bad_class.returncode != 0
    assert "seven_and_a_half" in bad_class.stderr and "zero, one, two" in bad_class.stderr
    assert "Traceback" not in bad_class.stderr

    bad_method = cli(["method=nonsense"], check=False)
    assert bad_method.returncode != 0 and "original" in bad_method.stderr and "Traceback" not in bad_method.stderr

    bad_bits = cli(["bits=-3"], check=False)
    assert bad_bits.returncode != 0 and "bits must be a positive integer" in bad_bits.stderr

    bad_device = cli(["device=tpu"], check=False)
    assert bad_device.returncode != 0 and "unknown device" in bad_device.stderr


@pytest.mark.slow
def test_sample_seeds_on_one_seed_train_nothing_new(cli, tmp_path):
    """`sample_seed` redraws D_f / D_n / D_r and the method's randomness; the models (the membership audit's
    reference models included) stay."""
    cli(
        [
            "-m",
            "seed=0",
            "sample_seed=0,1,2,3,4",
            "method=ppp",
            "method.forget_samples=5",
            "evaluator.audit.attacks=[shokri]",
            "evaluator.audit.primary=shokri",
            "evaluator.audit.references=2",
            *TINY,
        ]
    )
    runs = [json.loads(p.read_text()) for p in (tmp_path / "multi").glob("*/metrics.json")]
    assert sorted(r["sample_seed"] for r in runs) == [0, 1, 2, 3, 4]
    # the overrides make folder names over 255 bytes: shortened, one folder a run (ppp.config.sweep_folder)
    assert all(len(Path(r["run_dir"]).name.encode()) <= 255 and "~" in r["run_dir"] for r in runs)
    models = list((tmp_path / "cache" / "models").glob("*.pt"))
    assert len(models) == 4  # Original, Retrain and two reference models, trained once for all five draws
    assert len({r["metrics"]["forget/i2t_map"] for r in runs}) > 1  # the draws did change the unlearning
