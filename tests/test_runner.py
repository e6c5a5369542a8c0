"""The runner: config validation, objective, run index, in-process independence, training resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import GPU, ROOT, TINY, tiny_config
from omegaconf import OmegaConf

from ppp.errors import ConfigError
from ppp.experiment import execute

NO_TIMES = ("time/", "mem/")


def composed(tmp_path, overrides=()):
    return tiny_config(tmp_path, overrides)


def quality(metrics):
    return {k: v for k, v in metrics.items() if not k.startswith(NO_TIMES)}


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=abc", "seed must be an integer"),
        ("method.alpha=-1", "method.alpha must lie in [0, inf]"),
        ("method=ssd method.reference=nowhere", "method.reference must be one of"),
        ("method=ssd method.fisher_mode=exact", "method.fisher_mode must be one of per_sample, batch"),
        ("evaluator.forget_relevance=some", "evaluator.forget_relevance must be one of"),
        ("method=bad_teacher method.kl_reduction=sum", "method.kl_reduction must be one of mean, batchmean"),
        ("method.k=9", "method.k=9: at most 8 neighbours"),
        ("delta=median", "delta must be one of mean_abs, abs_mean"),
        ("evaluator.split=bogus", "unknown evaluator.split 'bogus'"),
        ("evaluator.ties=random", "evaluator.ties must be one of stable, average"),
        ("evaluator.topk=100", "evaluator.ties=average is defined for mAP@all only"),
    ],
)
def test_bad_values_fail_before_any_training(tmp_path, override, message):
    cfg = composed(tmp_path, override.split())
    with pytest.raises(ConfigError) as err:
        execute(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "models").exists()  # nothing was trained


def test_bad_value_on_the_command_line_is_one_line(cli):
    proc = cli(["method.alpha=-2", *TINY], check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: method.alpha must lie in")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
def test_runs_in_one_process_match_separate_processes(tmp_path, cli, device):
    """Two different configs in one process, then each in its own process, on the same device (models are
    keyed by device type, so a CPU run and a CUDA run train their own): identical numbers."""
    configs = [["method=ppp", "method.forget_samples=12", f"device={device}"], ["method=ssd", f"device={device}"]]
    in_process = [execute(composed(tmp_path, [*c, "skip_finished=false"]))["metrics"] for c in configs]
    for c, metrics in zip(configs, in_process):
        cli([*c, *TINY, "skip_finished=false"])
        record = json.loads((tmp_path / "run" / "metrics.json").read_text())
        separate = record["metrics"]
        assert quality(separate) == quality(metrics)
        # the config groups it was composed from, from Hydra's job (not part of the run hash)
        assert record["choices"]["method"] == c[0].split("=")[1] and record["choices"]["dataset"] == "digit_scenes"
    assert in_process[0]["forget/i2t_map"] != in_process[1]["forget/i2t_map"]


def test_objective_is_returned_recorded_and_indexed(tmp_path):
    from ppp.experiment import run_experiment

    cfg = composed(tmp_path, ["method=ppp", "method.forget_samples=12", "save_model=true", "evaluator.density=true"])
    value = run_experiment(cfg)
    arrays = np.load(tmp_path / "out" / "arrays.npz")
    for model in ("method", "original", "retrain"):  # Figure 1's groups for every model of the run
        sizes = [len(arrays[f"{model}/density/{g}"]) for g in ("forget", "neighbour", "other")]
        assert sum(sizes) == 40 and min(sizes) > 0
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    m = result["metrics"]
    assert value == pytest.approx(m["objective/gap"]) and value == pytest.approx(m["delta/forget"] + m["delta/retain"])
    assert (tmp_path / "index" / f"{result['run_hash']}.json").exists()
    assert result["choices"] == {}  # composed by the caller, who passed no choices: none recorded
    assert result["provenance"]["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert result["provenance"]["device"] == "cpu" and "git_dirty" in result["provenance"]
    used = {(u["kind"], u["label"].split(" (")[0]) for u in result["provenance"]["cache"]}
    assert {("models", "original model"), ("fisher", "fisher_forget"), ("fisher", "fisher_retain")} <= used
    state = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert any(k.startswith("net.") for k in state)
    # the same config again is skipped and returns the recorded objective; where files go does not matter
    again = ["method=ppp", "method.forget_samples=12", "evaluator.density=true", "num_workers=1"]
    assert run_experiment(composed(tmp_path, again)) == value
    assert len(list((tmp_path / "index").glob("*.json"))) == 1


def test_killed_multirun_resumes_and_records_each_run_once(tmp_path):
    env = dict(os.environ, PPP_CACHE_DIR=str(tmp_path / "cache"), PPP_RUN_INDEX=str(tmp_path / "index"))
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "method=original", "seed=0,1,2", *TINY]

    first = subprocess.Popen(
        [*cmd, f"hydra.sweep.dir={tmp_path}/sweep1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not list((tmp_path / "index").glob("*.json")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # kill -9 somewhere in the second run
    first.wait()
    done_before = len(list((tmp_path / "index").glob("*.json")))
    assert 1 <= done_before < 3

    second = subprocess.run(
        [*cmd, f"hydra.sweep.dir={tmp_path}/sweep2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("[skip] run") == done_before
    results = [json.loads(p.read_text()) for p in tmp_path.glob("sweep*/*/metrics.json")]
    assert sorted(r["seed"] for r in results) == [0, 1, 2]  # each run recorded exactly once
    assert len({r["run_hash"] for r in results}) == 3


def test_training_killed_after_an_epoch_resumes_to_the_same_model(tmp_path):
    from tiny_contexts import RECIPE, TinyClassifier

    from ppp.data.digits import digits
    from ppp.train import train

    data = digits(size=8).train
    settings = OmegaConf.create({**RECIPE, "epochs": 3, "warmup": 0.2})

    def fresh():
        torch.manual_seed(0)
        return TinyClassifier(10, 8, 32)

    uninterrupted = train(fresh(), data, settings, torch.device("cpu"), seed=0)

    checkpoint = tmp_path / "ckpt.pt"
    interrupted = fresh()
    calls = {"n": 0}

    def dies_in_epoch_two(system, batch):
        calls["n"] += 1
        if calls["n"] > len(data) // settings.batch_size + 3:
            raise KeyboardInterrupt  # killed part-way through the second epoch
        return system.loss(batch)

    with pytest.raises(KeyboardInterrupt):
        train(
            interrupted, data, settings, torch.device("cpu"), seed=0, objective=dies_in_epoch_two, checkpoint=checkpoint
        )
    assert torch.load(checkpoint, weights_only=True)["epochs_done"] == 1
    resumed = train(fresh(), data, settings, torch.device("cpu"), seed=0, checkpoint=checkpoint)
    assert not checkpoint.exists()
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def trained_tiny_classifier(settings):
    """The tiny MLP trained on 8-px digits under `settings`, from seed 0 (init and data order)."""
    from tiny_contexts import TinyClassifier

    from ppp.data.digits import digits
    from ppp.train import train

    torch.manual_seed(0)
    return train(TinyClassifier(10, 8, 32), digits(size=8, per_class=40).train, settings, torch.device("cpu"), seed=0)


def test_the_multi_tensor_adamw_steps_equal_the_per_parameter_loop(monkeypatch):
    """The loop's AdamW uses torch's `foreach` kernels (faster on the CPU); every cached model was trained with
    the per-parameter loop, so the two must give bit-identical weights."""
    from tiny_contexts import RECIPE, TinyClassifier

    import ppp.train

    settings = OmegaConf.create({**RECIPE, "epochs": 3, "warmup": 0.2, "weight_decay": 0.1})
    shipped = ppp.train._optimizers
    assert all(g["foreach"] for o in shipped(TinyClassifier(10, 8, 32).param_groups(settings)) for g in o.param_groups)
    multi_tensor = trained_tiny_classifier(settings)

    def per_parameter(groups, fused=False):
        opts = shipped(groups, fused)
        for o in opts:
            for group in o.param_groups:
                group["foreach"] = False
        return opts

    monkeypatch.setattr(ppp.train, "_optimizers", per_parameter)
    loop = trained_tiny_classifier(settings)
    for (name, a), b in zip(multi_tensor.state_dict().items(), loop.state_dict().values()):
        assert torch.equal(a, b), name
    torch.manual_seed(0)
    assert not torch.equal(multi_tensor.net.fc.weight, TinyClassifier(10, 8, 32).net.fc.weight)  # it trained


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_recipe_with_fused_kernels_trains_its_own_model_the_same_each_time(optimizer):
    """`fused_optimizer: true` reaches torch's fused kernels: for AdamW another model than the multi-tensor one
    (rounding apart, about 1e-8 a step), but the same one on every run."""
    from tiny_contexts import RECIPE, TinyClassifier

    from ppp.train import recipe_optimizers

    settings = OmegaConf.create({**RECIPE, "epochs": 3, "optimizer": optimizer, "weight_decay": 0.1, "lr": 0.01})
    fused = OmegaConf.merge(settings, {"fused_optimizer": True})
    assert all(g["fused"] for o in recipe_optimizers(TinyClassifier(10, 8, 32), fused) for g in o.param_groups)
    once, again, multi_tensor = (trained_tiny_classifier(r).net.fc.weight for r in (fused, fused, settings))
    assert torch.equal(once, again)
    assert torch.allclose(once, multi_tensor, atol=1e-4)
    assert optimizer == "sgd" or not torch.equal(once, multi_tensor)  # AdamW's fused kernel rounds differently


def test_a_run_imports_no_library_only_some_runs_need():
    """scikit-learn (~1.4 s), matplotlib, pandas and optuna load only where a run uses them (MIA, probes,
    figures, searches): a warm `python run.py` must not pay for them (issue 10's start-up target)."""
    code = (
        "import sys, ppp.experiment, ppp.evaluation.retrieval, ppp.evaluation.residual, ppp.evaluation.mia; "
        "print(sorted(m for m in ('sklearn', 'matplotlib', 'pandas', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
