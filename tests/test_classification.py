import json
import time

import pytest
import torch
import torchvision
from conftest import TINY
from omegaconf import OmegaConf
from PIL import Image
from tiny_contexts import TinyClassifier, make_context

from ppp.errors import ConfigError
from ppp.evaluation.classification import evaluate_classification
from ppp.experiment import format_table
from ppp.models import resnet
from ppp.models.resnet import ClassifierSystem, use_small_stem

pytestmark = pytest.mark.usefixtures("single_thread")


def settings(**kw):
    return OmegaConf.create(kw)


def test_resnet_pipeline_from_tensor_and_pil_images():
    system = ClassifierSystem("resnet18", num_classes=10, image_size=32, small_input=False).eval()
    glyph = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    photo = Image.new("RGB", (50, 40), (200, 10, 30))
    items = [(system.transform(glyph), torch.tensor(3)), (system.transform(photo), torch.tensor(6))]
    assert items[0][0].shape == items[1][0].shape == (3, 32, 32) and items[0][0].dtype == torch.float32
    batch = system.collate(items)
    assert batch["label"].dtype == torch.long and batch["label"].tolist() == [3, 6]
    assert system.features(batch).shape == (2, 512)
    assert torch.allclose(system.logits(batch), system.net(batch["image"]), atol=1e-5)
    assert system.loss(batch).ndim == 0


def test_small_input_stem():
    assert use_small_stem("auto", 32) and not use_small_stem("auto", 224) and not use_small_stem(False, 32)
    net = ClassifierSystem("resnet18", 10, 32, small_input=True).net
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)
    with pytest.raises(ConfigError, match="small_input"):
        use_small_stem("sometimes", 32)


def test_local_weights_load_into_the_body_only(tmp_path):
    imagenet = torchvision.models.resnet18(weights=None)  # a 1000-class fc
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), path)
    net = ClassifierSystem("resnet18", 10, 32, small_input=False, weights=str(path)).net
    assert torch.equal(net.conv1.weight, imagenet.conv1.weight) and net.fc.out_features == 10
    small = ClassifierSystem("resnet18", 10, 32, small_input=True, weights=str(path)).net
    assert torch.equal(small.layer1[0].conv1.weight, imagenet.layer1[0].conv1.weight)
    assert small.conv1.weight.shape == (64, 3, 3, 3)
    same_shape_head = ClassifierSystem("resnet18", 1000, 32, weights=str(path)).net.fc
    assert not torch.equal(same_shape_head.weight, imagenet.fc.weight)  # the head is never loaded
    with pytest.raises(ConfigError, match="resnet18.pth: .* body tensors are missing or shaped otherwise"):
        ClassifierSystem("resnet50", 10, 32, weights=str(path))


def test_weights_tag_errors_are_fast_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        ClassifierSystem("resnet18", 10, 32, weights="IMAGENET9K")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(resnet, "reachable", lambda url: False)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"IMAGENET1K_V2: .* not in .* unreachable; .*backbone.weights=/path"):
        ClassifierSystem("resnet50", 10, 32, weights="IMAGENET1K_V2")
    assert time.perf_counter() - start < 10
    with pytest.raises(ConfigError, match="unknown ResNet"):
        ClassifierSystem("resnet19", 10, 32)


def test_param_groups_follow_the_recipe():
    system = ClassifierSystem("resnet18", 10, 32)
    (sgd,) = system.param_groups(settings(optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.5))
    assert (
        sgd["optimizer"] == "sgd"
        and sgd["momentum"] == 0.5
        and len(sgd["params"]) == len(list(system.net.parameters()))
    )
    (adam,) = system.param_groups(settings(optimizer="adamw", lr=1e-4, weight_decay=0.0, betas=[0.9, 0.999], eps=1e-8))
    assert adam["betas"] == (0.9, 0.999) and adam["eps"] == 1e-8 and "momentum" not in adam
    with pytest.raises(ConfigError, match="sgd or adamw"):
        system.param_groups(settings(optimizer="lbfgs", lr=1.0, weight_decay=0.0))


class ForgetBlind(TinyClassifier):
    """Predicts every sample's true class, except that forget-class samples are called 'zero'."""

    def logits(self, batch):
        labels = torch.where(batch["label"] == 6, 0, batch["label"])
        return 10 * torch.nn.functional.one_hot(labels, 10).float()


def test_forget_and_retain_accuracy_on_test_samples(tmp_path):
    ctx = make_context(tmp_path)
    m = evaluate_classification(ForgetBlind(10, 8, 4), ctx.bench, ctx.forget_idx, ctx.device)
    assert m["forget/acc"] == 0.0 and m["retain/acc"] == 1.0
    assert m["count/forget_images"] == int((ctx.bench.test.labels == 6).sum())
    assert m["count/forget_images"] + m["count/retain_images"] == len(ctx.bench.test)


def test_table_shows_accuracy_and_mia_in_percent():
    table = format_table({"original": {"forget/acc": 0.5, "retain/mia_shokri": 0.25, "mia/auc": 0.75, "time/x": 3.0}})
    head, _, row = table.splitlines()
    assert head.split()[1:] == ["forget/acc", "retain/mia_shokri", "mia/auc"]
    assert row.split()[1:] == ["50.00", "25.00", "75.00"]


def test_cli_classification_run(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a small net: one thread is as fast, and immune to busy cores
    cli(
        [
            "backbone=resnet18",
            "dataset=digits",
            "dataset.per_class=60",
            "dataset.population_per_class=40",
            "evaluator=classification",
            "method=finetune",
            "backbone.train.epochs=1",
            "method.train.classification.epochs=1",
        ]
    )
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    for key in ("forget/acc", "retain/acc", "forget/mia", "retain/mia", "mia/auc"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["time/unlearn_s"] > 0 and m["mem/peak_mb"] >= 0


@pytest.mark.slow
def test_evaluator_config_errors_come_before_training(cli, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    small = ["dataset.per_class=20", "dataset.population_per_class=20"]  # the one dataset this test may build
    wrong = cli(["backbone=resnet18", "dataset=digits", *small, "evaluator=retrieval"], check=False)
    assert wrong.returncode == 2 and "use evaluator=classification" in wrong.stderr
    trained = [line for line in wrong.stdout.splitlines() if "[cache]" in line and " dataset " not in line]
    assert "Traceback" not in wrong.stderr and not trained  # only the (valid) dataset may have been built and cached
    wrong = cli(["evaluator=classification", *TINY], check=False)
    assert wrong.returncode == 2 and "use evaluator=retrieval" in wrong.stderr
    wrong = cli(
        ["backbone=resnet18", "dataset=digits", "evaluator=classification", "evaluator.mia=[loss]"], check=False
    )
    assert wrong.returncode == 2 and "valid: entropy_lr" in wrong.stderr and "[cache]" not in wrong.stdout
