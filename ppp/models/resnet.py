"""Image classifiers: a torchvision ResNet whose fc is a head for the dataset's classes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ppp.errors import ConfigError
from ppp.models.base import System, TrainRecipe, normalised_tensor_image
from ppp.schema import number, one_of, read, schema, setting
from ppp.utils import reachable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_INPUT_MAX = 64  # small_input=auto uses the CIFAR stem up to this image size


def use_small_stem(small_input, image_size: int) -> bool:
    if small_input == "auto":
        return image_size <= SMALL_INPUT_MAX
    if isinstance(small_input, bool):
        return small_input
    raise ConfigError(f"backbone.small_input must be auto, true or false; got '{small_input}'")


def load_weights_file_or_tag(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """A torchvision state dict from a local file, or from a torchvision tag (IMAGENET1K_V1, ...)."""
    if os.path.isfile(weights):
        return torch.load(weights, map_location="cpu", weights_only=True)
    import torchvision

    tags = {w.name: w for w in torchvision.models.get_model_weights(arch)}
    if weights not in tags:
        raise ConfigError(
            f"backbone.weights='{weights}' is neither a local file nor a torchvision tag for {arch}; "
            f"tags: {', '.join(tags)}"
        )
    url = tags[weights].url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not cached.exists() and not reachable(url):  # offline: fail in seconds, not minutes
        raise ConfigError(
            f"backbone.weights={weights}: the {arch} weights are not in {cached.parent} and {url} is "
            f"unreachable; download {os.path.basename(url)} once with network and put it there, or give a "
            f"local state-dict file: backbone.weights=/path/to/state_dict.pth (null: random init)"
        )
    return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)


def load_body(net: nn.Module, state: dict[str, torch.Tensor], fresh: tuple[str, ...], weights: str) -> None:
    """Pretrained weights for every tensor except those under the `fresh` prefixes, which keep their
    random init; a file that lacks a body tensor, or holds it in another shape, is a ConfigError."""
    own = net.state_dict()
    body = [k for k in own if not k.startswith(fresh) and not k.endswith("num_batches_tracked")]
    unfit = [k for k in body if k not in state or state[k].shape != own[k].shape]
    if unfit:
        raise ConfigError(
            f"backbone.weights={weights}: {len(unfit)} of the {len(body)} body tensors are missing or "
            f"shaped otherwise (first: {unfit[0]}); is it a torchvision ResNet state dict of this depth?"
        )
    net.load_state_dict({k: state[k] for k in body}, strict=False)


def build_resnet(arch: str, num_classes: int, small_stem: bool, weights: str | None = None) -> nn.Module:
    """torchvision ResNet with a `num_classes` fc; optionally the CIFAR stem (3x3 stride-1 conv, no max-pool).

    `weights` give the body only: the fc head (and conv1 under the small stem) always start random, so
    Original and Retrain both begin from the pretrained body with a newly initialised head.
    """
    if arch not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        raise ConfigError(
            f"unknown ResNet architecture '{arch}'; use resnet18, resnet34, resnet50, resnet101 or resnet152"
        )
    import torchvision  # only for runs that build a ResNet (~2 s import)

    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if small_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    if weights:
        fresh = ("fc.", "conv1.") if small_stem else ("fc.",)
        load_body(net, load_weights_file_or_tag(arch, str(weights)), fresh, str(weights))
    return net


@schema
class ResnetRecipe(TrainRecipe):
    """A ResNet's recipe: sgd (with momentum) or adamw (with optional betas and eps, from a method's overrides)."""

    optimizer: str = setting(one_of("sgd", "adamw"))
    momentum: float = setting(number(0), default=0.9)
    betas: list[float] | None = setting(default=None)
    eps: float | None = setting(number(0, optional=True), default=None)


class ClassifierSystem(System):
    task = "classification"

    def __init__(self, arch: str, num_classes: int, image_size: int, small_input="auto", weights: str | None = None):
        super().__init__()
        self.image_size = int(image_size)
        self.net = build_resnet(arch, num_classes, use_small_stem(small_input, self.image_size), weights)
        self._preprocess = None

    def transform(self, image) -> torch.Tensor:
        """uint8 (3, H, W) tensors (embedded data) or PIL images -> ImageNet-normalised, image_size px."""
        if isinstance(image, torch.Tensor):
            return normalised_tensor_image(image, self.image_size, IMAGENET_MEAN, IMAGENET_STD)
        if self._preprocess is None:
            from torchvision import transforms as T

            self._preprocess = T.Compose(
                [
                    T.Resize(round(self.image_size * 256 / 224)),
                    T.CenterCrop(self.image_size),
                    T.ToTensor(),
                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                ]
            )
        return self._preprocess(image.convert("RGB"))

    def collate(self, items):
        images, labels = zip(*items)
        return {"image": torch.stack(images), "label": torch.as_tensor(labels, dtype=torch.long)}

    def features(self, batch) -> torch.Tensor:
        """Penultimate (pooled) features, the input of the fc head."""
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(batch["image"]))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return torch.flatten(net.avgpool(x), 1)

    def logits(self, batch) -> torch.Tensor:
        return self.net.fc(self.features(batch))

    def loss(self, batch):
        return F.cross_entropy(self.logits(batch), batch["label"])

    def net_inputs(self, batch):
        return (batch["image"],)

    def sample_loss(self, net_forward, sample, context):
        return F.cross_entropy(net_forward(sample["image"][None]), sample["label"][None])

    def parameter_group(self, name: str) -> tuple[str, str]:
        """One (image) tower; modules: the class head `fc` and the body before it."""
        return "image", "head" if name.startswith("fc.") else "body"

    def param_groups(self, settings):
        """One group: `optimizer` sgd (with `momentum`) or adamw (with optional `betas`, `eps`).

        Plain Adam, as the baselines' references use, is adamw with weight_decay 0 and betas (0.9, 0.999).
        """
        group = {
            "params": list(self.net.parameters()),
            "lr": settings.lr,
            "weight_decay": settings.weight_decay,
            "optimizer": settings.optimizer,
        }
        if settings.optimizer == "sgd":
            group["momentum"] = read(ResnetRecipe, settings).momentum
        elif settings.optimizer == "adamw":
            group.update({k: tuple(v) if k == "betas" else v for k, v in settings.items() if k in ("betas", "eps")})
        else:
            raise ConfigError(f"optimizer must be sgd or adamw for {type(self).__name__}; got '{settings.optimizer}'")
        return [group]
