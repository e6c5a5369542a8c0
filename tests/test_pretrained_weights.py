"""Pretrained weights: the backbone and weights each dataset picks; a ResNet body from a local state-dict
file with a fresh head, where Original and Retrain both start; Bad random in every layer; offline errors."""

import pytest
import torch
import torchvision
from conftest import TINY, run_cli
from scored import compose_config, scored_models
from test_real_datasets import WNIDS, make_coco, make_imagenet

from ppp.models import build_system
from ppp.models.clip_hashing import create_clip


@pytest.mark.parametrize(
    "overrides, backbone, weights",
    [
        (["dataset=imagenet100"], "resnet50", "IMAGENET1K_V1"),
        (["dataset=deepfashion"], "resnet50", "IMAGENET1K_V1"),
        (["dataset=imagenet100", "backbone=resnet18"], "resnet18", "IMAGENET1K_V1"),
        (["dataset=deepfashion", "backbone.weights=null"], "resnet50", None),
        (["dataset=digits", "backbone=resnet50"], "resnet50", None),
        (["dataset=coco"], "clip_vit_b32", "openai"),
        (["dataset=flickr25k"], "clip_vit_b32", "openai"),
        (["dataset=coco", "backbone=clip_tiny"], "clip_tiny", None),
        ([], "clip_tiny", None),
    ],
)
def test_datasets_pick_the_papers_backbone_and_weights(overrides, backbone, weights):
    chosen = compose_config(overrides).backbone
    assert chosen.name == backbone
    assert chosen.get("weights", chosen.get("pretrained")) == weights


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Stand-ins for pretrained weights: an ImageNet-shaped (1000-class fc) ResNet-18 state dict and a
    clip_tiny one, each seeded differently from any run."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(123)
    torch.save(torchvision.models.resnet18().state_dict(), root / "resnet18.pth")
    torch.save(create_clip("clip_tiny", None)[0].state_dict(), root / "clip_tiny.pt")
    return {"resnet18": root / "resnet18.pth", "clip_tiny": root / "clip_tiny.pt", "cache": root / "cache"}


def resnet_args(files):
    # lr 0: one epoch of the real training loop leaves every parameter where it started
    return [
        "dataset=digits",
        f"backbone.weights={files['resnet18']}",
        "backbone.train.lr=0",
        "backbone.train.epochs=1",
        "evaluator.mia=[]",
        f"cache_dir={files['cache']}",
        f"out_dir={files['cache']}",
    ]


def test_original_and_retrain_start_from_the_pretrained_body_with_a_fresh_head(files):
    weights = torch.load(files["resnet18"], weights_only=True)
    scratch = build_system(compose_config(["dataset=digits"]).backbone, num_classes=10, bits=16, seed=0)
    with scored_models() as run:
        for method in ("original", "retrain"):
            _, model = run([*resnet_args(files), f"method={method}"])
            for name, p in model.net.named_parameters():
                expected = scratch.net.get_parameter(name) if name.startswith("fc.") else weights[name]
                assert torch.equal(p.cpu(), expected.cpu()), (method, name)  # the run may be on CUDA


@pytest.mark.parametrize("backbone", ["resnet18", "clip_tiny"])
def test_bad_is_random_in_every_layer_despite_pretrained_weights(files, backbone):
    if backbone == "resnet18":
        args, prefix = resnet_args(files), ""
    else:
        args = [
            *TINY,
            f"backbone.pretrained={files['clip_tiny']}",
            f"cache_dir={files['cache']}",
            f"out_dir={files['cache']}",
        ]
        prefix = "clip."
    weights = torch.load(files[backbone], weights_only=True)
    with scored_models() as run:
        _, bad = run([*args, "method=bad"])
    # matrices only: norm layers start at ones / zeros in any initialisation
    body = {
        n: p
        for n, p in bad.net.named_parameters()
        if n.startswith(prefix) and n[len(prefix) :] in weights and p.dim() > 1
    }
    assert len(body) > 10
    for name, p in body.items():
        assert not torch.equal(p.cpu(), weights[name[len(prefix) :]]), name


def test_uncached_weights_offline_stop_the_run_in_one_line(tmp_path, monkeypatch):
    """The datasets' default weights, not cached and with no network: exit 2 with how to provide them,
    before any training."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for proxy in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # nothing listens: as with no network
    make_coco(tmp_path / "data" / "coco")
    make_imagenet(tmp_path / "data" / "imagenet100")
    cases = {
        "backbone.pretrained=openai: the ViT-B-32 weights are not in the local cache": [
            "method=ppp",
            "dataset=coco",
            "bits=64",
            "dataset.n_query=8",
            "dataset.n_train=16",
            "dataset.n_val=2",
            "method.k=1",
        ],
        "backbone.weights=IMAGENET1K_V1: the resnet50 weights are not in": [
            "method=ppp",
            "dataset=imagenet100",
            f"dataset.classes=[{','.join(WNIDS)}]",
            "dataset.per_class=4",
            "method.k=1",
        ],
    }
    for message, args in cases.items():
        proc = run_cli([*args, f"data_root={tmp_path / 'data'}"], tmp_path, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), proc.stderr
        assert "backbone.weights=/path" in lines[0] or "backbone.pretrained=/path" in lines[0]
        assert "original model" not in proc.stdout
