"""The hook rules of ppp/per_sample_grads.py against a plain per-sample backward loop, layer type by layer
type, and the hook path of per-sample Fisher against the torch.func path on whole systems."""

import pytest
import torch
from torch import nn

from ppp import per_sample_grads
from ppp.data.digits import digits
from ppp.fisher import functorch_fisher, per_sample_fisher, uses_hooks
from ppp.models.clip_hashing import ClipHashingSystem
from ppp.models.resnet import ClassifierSystem
from ppp.per_sample_grads import Unsupported, squared_gradient_sums, supports


def sample_loss(out):
    """A nonlinear loss of one sample's output, so that gradients differ across samples and positions."""
    return torch.tanh(out).pow(2).sum() + out.sum() * 0.3


def loop_sums(net, x):
    total = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    for i in range(len(x)):
        net.zero_grad()
        sample_loss(net(x[i : i + 1])).backward()
        for n, p in net.named_parameters():
            if p.grad is not None:
                total[n] += p.grad**2
    return total


def hooked_sums(net, x):
    total = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    with squared_gradient_sums(net, total) as recorder:
        out = net(x)
        leaf = out.detach().requires_grad_()
        grads = torch.autograd.grad(sum(sample_loss(leaf[i : i + 1]) for i in range(len(x))), leaf)
        recorder.backward((out,), grads)
    return total


def assert_close(a, b, rel=1e-4):
    assert a.keys() == b.keys()
    for name in b:
        scale = b[name].abs().max().item()
        assert scale > 0, f"{name}: no gradient reached it, the test would be vacuous"
        assert (a[name] - b[name]).abs().max().item() <= rel * scale, name


def with_running_stats(bn):
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return bn


class Tokens(nn.Module):
    """Embedding (with a padding row) -> LayerNorm -> Linear over positions -> mean."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(12, 6, padding_idx=0)
        self.norm = nn.LayerNorm(6)
        self.proj = nn.Linear(6, 3)

    def forward(self, ids):
        return self.proj(self.norm(self.embed(ids))).mean(1)


LAYERS = {
    "linear": (
        lambda: nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3, bias=False)),
        lambda: torch.randn(6, 5),
    ),
    "linear_over_positions": (
        lambda: nn.Sequential(nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 3)),
        lambda: torch.randn(6, 7, 5),
    ),
    "conv2d": (
        lambda: nn.Sequential(
            nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(6, 2, 1, bias=False),
        ),
        lambda: torch.randn(5, 4, 9, 9),
    ),
    "conv2d_few_positions": (
        lambda: nn.Sequential(
            nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Tanh(), nn.Conv2d(6, 3, 2)
        ),  # 2 x 2 = 4, then 1 position
        lambda: torch.randn(5, 4, 4, 4),
    ),
    "batchnorm2d_eval_inplace_relu": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False), with_running_stats(nn.BatchNorm2d(4)), nn.ReLU(inplace=True)
        ),
        lambda: torch.randn(5, 3, 6, 6),
    ),
    "batchnorm1d_eval": (
        lambda: nn.Sequential(nn.Linear(5, 4), with_running_stats(nn.BatchNorm1d(4))),
        lambda: torch.randn(6, 5),
    ),
    "layernorm": (lambda: nn.Sequential(nn.Linear(5, 8), nn.LayerNorm([8])), lambda: torch.randn(6, 3, 5)),
    "embedding_padding_row": (Tokens, lambda: torch.tensor([[1, 2, 2, 0], [3, 0, 0, 0], [11, 4, 4, 4], [5, 6, 7, 8]])),
}


@pytest.mark.parametrize("layer", LAYERS)
def test_hook_rule_matches_a_per_sample_backward_loop(layer, monkeypatch):
    monkeypatch.setattr(per_sample_grads, "BLOCK_ELEMENTS", 100)  # per-sample gradients in several blocks
    torch.manual_seed(0)
    make, inputs = LAYERS[layer]
    net, x = make().eval(), inputs()
    assert_close(hooked_sums(net, x), loop_sums(net, x))


def test_embedding_padding_row_gets_nothing_and_only_seen_rows_are_filled():
    torch.manual_seed(0)
    net, x = Tokens().eval(), LAYERS["embedding_padding_row"][1]()
    table = hooked_sums(net, x)["embed.weight"]
    filled = set(torch.nonzero(table.sum(1) > 0).flatten().tolist())
    assert filled == set(x.flatten().tolist()) - {0}


class StandardisedConv(nn.Conv2d):
    """A subclass with its own forward (as timm's StdConv2d): the Conv2d rule would be wrong for it."""

    def forward(self, x):
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


@pytest.mark.parametrize(
    "net",
    [
        nn.MultiheadAttention(4, 2, batch_first=True),  # in_proj_weight is its own, used functionally
        StandardisedConv(3, 3, 3),
        nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)),  # train mode: batch statistics mix samples
        nn.Conv2d(3, 3, 3, padding="same"),
    ],
    ids=["attention", "own_forward", "batchnorm_train", "conv_same_padding"],
)
def test_layers_without_an_exact_rule_are_refused(net):
    assert not supports(net)


def test_frozen_parameters_are_left_out():
    torch.manual_seed(0)
    net, x = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).eval(), torch.randn(6, 5)
    net[0].bias.requires_grad_(False)
    sums = {n: torch.zeros_like(p) for n, p in net.named_parameters() if p.requires_grad}
    with squared_gradient_sums(net, sums) as recorder:
        out = net(x)
        leaf = out.detach().requires_grad_()
        recorder.backward((out,), torch.autograd.grad(sum(sample_loss(leaf[i : i + 1]) for i in range(6)), leaf))
    reference = loop_sums(net, x)
    assert_close(sums, {n: reference[n] for n in sums})


def test_a_layer_run_twice_per_forward_is_refused():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.Tanh(), shared)
    with pytest.raises(Unsupported, match="more than once"):
        hooked_sums(net, torch.randn(4, 3))


@pytest.fixture(scope="module")
def digits_train():
    return digits(per_class=6, seed=0).train


def test_resnet_fisher_takes_the_hook_path_with_the_torch_func_numbers(digits_train):
    torch.manual_seed(0)
    system = ClassifierSystem("resnet18", num_classes=10, image_size=32).eval()
    for bn in system.net.modules():
        if isinstance(bn, nn.BatchNorm2d):
            with_running_stats(bn)
    data = digits_train.subset(range(10))
    assert uses_hooks(system)
    hooked = per_sample_fisher(system, data, "cpu", {}, chunk=4)  # chunks of 4, 4, 2
    reference = functorch_fisher(system, data, "cpu", {}, chunk=5)
    assert_close(hooked, reference, rel=1e-3)


def test_clip_falls_back_to_torch_func():
    """open_clip's attention and its bare parameters (positional embeddings, projections) have no rule."""
    assert not uses_hooks(ClipHashingSystem("clip_tiny", bits=16, num_classes=10))


def test_hook_path_under_a_tiny_memory_budget(digits_train, ppp_log):
    """A budget below one sample's activations still runs, one sample per chunk, with a large budget's numbers."""
    torch.manual_seed(0)
    system = ClassifierSystem("resnet18", num_classes=10, image_size=16).eval()
    data = digits_train.subset(range(5))
    tiny = per_sample_fisher(system, data, "cpu", {}, chunk=32, memory_mb=1e-3)
    large = per_sample_fisher(system, data, "cpu", {}, chunk=32, memory_mb=1e6)
    assert [m.split()[1] for m in ppp_log.messages if m.startswith("[fisher]")] == [
        "1",
        "32",
    ]
    assert_close(tiny, large, rel=1e-5)
