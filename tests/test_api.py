"""The Python API on a user's own model: README's example runs as written, and what it cannot do says why."""

import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import ppp
from ppp.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_forgets_six_and_keeps_the_rest(single_thread):
    scope = {}
    exec(compile(readme_example(), str(README), "exec"), scope)
    before, after, diagnostics = scope["before"], scope["after"], scope["diagnostics"]
    assert before["forget/acc"] > 0.9 and after["forget/acc"] < 0.2
    assert after["retain/acc"] >= before["retain/acc"] - 0.05
    assert {"time/unlearn_s", "mem/peak_mb"} <= set(diagnostics) and len(diagnostics) > 2
    assert isinstance(scope["unlearned"], torchvision.models.ResNet) and scope["unlearned"] is not scope["model"]
    assert ppp.evaluate(scope["model"], scope["forget"], scope["retain"]) == before  # the given model is untouched


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)
    images = torch.randn(len(labels), 3, 8, 8)
    return TensorDataset(images[labels == 1], labels[labels == 1]), TensorDataset(
        images[labels != 1], labels[labels != 1]
    )


def test_data_loaders_and_class_names(data):
    forget, retain = data
    model = torchvision.models.resnet18(num_classes=4).eval()
    scores = ppp.evaluate(model, DataLoader(forget, batch_size=3), retain, class_names=["a", "b", "c", "d"])
    assert scores["count/forget_images"] == 4 and scores["count/retain_images"] == 12


def test_one_line_errors(data):
    forget, retain = data
    model = torchvision.models.resnet18(num_classes=4)
    with pytest.raises(ConfigError, match="unknown method 'pp'.*ppp") as err:
        ppp.unlearn(model, forget, retain, method="pp")
    assert "\n" not in str(err.value)
    with pytest.raises(
        ConfigError, match="method retrain cannot start from a given model: it builds a model of its own"
    ):
        ppp.unlearn(model, forget, retain, method="retrain")
    with pytest.raises(ConfigError, match="method cliperase edits a CLIP model's towers; a classifier has none"):
        ppp.unlearn(model, forget, retain, method="cliperase")
    with pytest.raises(ValueError, match=r"method ppp has no keys \['beta'\]"):
        ppp.unlearn(model, forget, retain, method="ppp", beta=1.0)
    with pytest.raises(ValueError, match="the retain data holds samples of the forget classes"):
        ppp.unlearn(model, retain, retain, method="ppp", forget_classes=[0])


def test_import_ppp_stays_light():
    import subprocess
    import sys

    code = "import sys, ppp; print(sorted(m for m in ('torch', 'omegaconf', 'ppp.api') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
