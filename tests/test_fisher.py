import pytest
import torch

from ppp.data.digits import digit_scenes
from ppp.fisher import batch_fisher, per_sample_fisher
from ppp.models.clip_hashing import ClipHashingSystem
from ppp.train import make_loader


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    bench = digit_scenes(n_total=200, n_query=20, n_train=100, n_val=0, seed=0)
    system = ClipHashingSystem("clip_tiny", bits=16, num_classes=10).eval()
    return system, bench.train.subset(range(24))


def loop_fisher(system, data):
    """Reference: one backward per sample, against its mini-batch (size = len(data)) as context."""
    batch = next(iter(make_loader(data, system, len(data))))
    context = system.loss_context(batch)
    total = {n: torch.zeros_like(p) for n, p in system.net.named_parameters()}
    for i in range(len(data)):
        system.net.zero_grad()
        sample = {k: v[i] for k, v in batch.items()}
        system.sample_loss(lambda *x: system.net(*x), sample, context).backward()
        for n, p in system.net.named_parameters():
            if p.grad is not None:
                total[n] += p.grad ** 2
    return {n: t / len(data) for n, t in total.items()}


def assert_close(a, b):
    for name in b:
        scale = b[name].abs().max().item() + 1e-20
        assert (a[name] - b[name]).abs().max().item() <= 1e-4 * scale, name


def test_per_sample_matches_a_backward_loop(setup):
    system, data = setup
    fisher = per_sample_fisher(system, data, "cpu", chunk=len(data))
    reference = loop_fisher(system, data)
    assert_close(fisher, reference)
    # the sparse token-table path is exercised and non-trivial
    table = fisher["clip.token_embedding.weight"]
    assert table.shape == (49408, 64) and 0 < int((table.sum(1) > 0).sum()) < 200


def test_batch_mode_is_squared_batch_mean_gradient(setup):
    system, data = setup
    fisher = batch_fisher(system, data, "cpu", batch_size=10)  # batches of 10, 10, 4
    expected = {n: torch.zeros_like(p) for n, p in system.net.named_parameters()}
    for start in (0, 10, 20):
        batch = next(iter(make_loader(data.subset(range(start, min(start + 10, 24))), system, 10)))
        system.net.zero_grad()
        system.loss(batch).backward()
        for n, p in system.net.named_parameters():
            if p.grad is not None:
                expected[n] += p.grad ** 2
    assert_close(fisher, {n: e / 3 for n, e in expected.items()})


def test_fisher_leaves_parameters_untouched(setup):
    system, data = setup
    before = {n: p.clone() for n, p in system.net.named_parameters()}
    per_sample_fisher(system, data.subset(range(4)), "cpu", chunk=2)
    assert all(torch.equal(before[n], p) for n, p in system.net.named_parameters())
