import pytest
import torch
from omegaconf import OmegaConf

from ppp.data.base import carries_any
from ppp.data.digits import digit_scenes
from ppp.errors import ConfigError
from ppp.fisher import batch_fisher, batch_order, fisher_diagonal, loss_context, official_order, per_sample_fisher
from ppp.models.clip_hashing import ClipHashingSystem
from ppp.train import make_loader
from ppp.validation import check_config


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    bench = digit_scenes(n_total=200, n_query=20, n_train=100, n_val=0, seed=0)
    system = ClipHashingSystem("clip_tiny", bits=16, num_classes=10).eval()
    return system, bench.train


def loop_fisher(system, data, context):
    """Reference: one backward per sample, each against the same context."""
    batch = next(iter(make_loader(data, system, len(data))))
    total = {n: torch.zeros_like(p) for n, p in system.net.named_parameters()}
    for i in range(len(data)):
        system.net.zero_grad()
        sample = {k: v[i] for k, v in batch.items()}
        system.sample_loss(lambda *x: system.net(*x), sample, context).backward()
        for n, p in system.net.named_parameters():
            if p.grad is not None:
                total[n] += p.grad**2
    return {n: t / len(data) for n, t in total.items()}


def assert_close(a, b, tolerance=1e-4):
    for name in b:
        scale = b[name].abs().max().item() + 1e-20
        assert (a[name] - b[name]).abs().max().item() <= tolerance * scale, name


def test_per_sample_matches_a_backward_loop(setup):
    system, train = setup
    data = train.subset(range(24))
    context = loss_context(system, train.subset(range(40, 72)), "cpu")
    fisher = per_sample_fisher(system, data, "cpu", context, chunk=5)  # chunks of 5, 5, 5, 5, 4
    reference = loop_fisher(system, data, context)
    assert_close(fisher, reference)
    # the sparse token-table path is exercised and non-trivial
    table = fisher["clip.token_embedding.weight"]
    assert table.shape == (49408, 64) and 0 < int((table.sum(1) > 0).sum()) < 200


def test_a_samples_contribution_does_not_depend_on_the_set_it_is_measured_in(setup):
    """D_f alone (every sample carries `six`) and D_f beside retained samples: each sample contributes the
    same, so Fisher sums add up. With the chunk as context, D_f's irrelevant-pair terms were all zero alone
    and not beside others, and the sums did not add up."""
    system, train = setup
    six = train.labels[:, 6] > 0
    multi = train.labels.sum(1) > 1
    forget = train.subset(torch.nonzero(six & multi).flatten()[:6])
    retain = train.subset(torch.nonzero(~six & multi).flatten()[:6])
    both = train.subset(torch.cat([forget.indices, retain.indices]))
    context = train.subset(range(64))
    f, r, fr = (
        fisher_diagonal(system, d, "cpu", "per_sample", chunk=len(d), context_data=context)
        for d in (forget, retain, both)
    )
    assert_close({n: (f[n] * 6 + r[n] * 6) / 12 for n in f}, fr)

    # the defect is real here: measured against D_f itself, D_f's irrelevant-pair terms vanish
    own = per_sample_fisher(system, forget, "cpu", loss_context(system, forget, "cpu"), chunk=len(forget))
    head = "image_head.0.weight"
    assert (own[head] - f[head]).abs().max() > 1e-3 * f[head].abs().max()


def test_batch_mode_is_squared_batch_mean_gradient(setup):
    system, train = setup
    data = train.subset(range(24))
    fisher = batch_fisher(system, data, "cpu", batch_size=10)  # batches of 10, 10, 4
    expected = {n: torch.zeros_like(p) for n, p in system.net.named_parameters()}
    for start in (0, 10, 20):
        batch = next(iter(make_loader(data.subset(range(start, min(start + 10, 24))), system, 10)))
        system.net.zero_grad()
        system.loss(batch).backward()
        for n, p in system.net.named_parameters():
            if p.grad is not None:
                expected[n] += p.grad**2
    assert_close(fisher, {n: e / 3 for n, e in expected.items()})


def test_fisher_leaves_parameters_untouched(setup):
    system, train = setup
    before = {n: p.clone() for n, p in system.net.named_parameters()}
    per_sample_fisher(
        system, train.subset(range(4)), "cpu", loss_context(system, train.subset(range(8)), "cpu"), chunk=2
    )
    assert all(torch.equal(before[n], p) for n, p in system.net.named_parameters())


def test_official_order_is_retained_then_forget_each_by_first_label():
    # multi-hot over 4 classes, forget class 2
    labels = torch.tensor(
        [
            [0, 1, 1, 0],  # 0: forget, first label 1
            [0, 0, 0, 1],  # 1: retain, first label 3
            [1, 0, 0, 1],  # 2: retain, first label 0
            [0, 0, 1, 0],  # 3: forget, first label 2
            [0, 1, 0, 1],  # 4: retain, first label 1
            [1, 0, 0, 0],  # 5: retain, first label 0
            [1, 0, 1, 0],
        ],  # 6: forget, first label 0
        dtype=torch.float,
    )
    assert official_order(labels, carries_any(labels, [2])).tolist() == [2, 5, 4, 1, 6, 0, 3]
    assert official_order(torch.tensor([3, 1, 2, 1, 0]), torch.tensor([0, 1, 0, 1, 0]).bool()).tolist() == [
        4,
        2,
        0,
        1,
        3,
    ]


def test_batch_order_auto_is_official_for_ssd_in_batch_mode_only():
    assert batch_order({"name": "ssd", "fisher_mode": "batch", "batch_order": "auto"}) == "official"
    assert batch_order({"name": "ssd", "fisher_mode": "per_sample", "batch_order": "auto"}) == "dataset"
    assert batch_order({"name": "ppp", "fisher_mode": "batch", "batch_order": "auto"}) == "dataset"
    assert batch_order({"name": "ppp", "fisher_mode": "batch", "batch_order": "official"}) == "official"
    assert batch_order({"name": "ssd", "fisher_mode": "batch", "batch_order": "dataset"}) == "dataset"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("fisher_mode", "batched", "method.fisher_mode must be one of per_sample, batch; got 'batched'"),
        ("batch_order", "sorted", "method.batch_order must be one of auto, official, dataset; got 'sorted'"),
        ("reference", "all", "method.reference must be one of full, retain; got 'all'"),
        ("fisher_context_size", 0, "method.fisher_context_size must be >= 1, got 0"),
        ("fisher_chunk", 2.5, "method.fisher_chunk must be an integer >= 1, got '2.5'"),
        ("fisher_batch_size", None, "method.fisher_batch_size has no value"),
        ("fisher_memory_mb", 0, "method.fisher_memory_mb must lie in (0, inf], got 0"),
        ("fisher_memory_mb", "lots", "method.fisher_memory_mb must be a number, got 'lots'"),
    ],
)
def test_fisher_settings_are_checked(key, value, message):
    good = {
        "name": "ssd",
        "fisher_mode": "batch",
        "batch_order": "auto",
        "reference": "full",
        "fisher_batch_size": 64,
        "fisher_chunk": 32,
        "fisher_context_size": 64,
    }
    check_config(OmegaConf.create({"method": good}))
    check_config(OmegaConf.create({"method": {"name": "finetune"}}))  # methods without Fisher keys pass
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(").replace("[", r"\[")) as err:
        check_config(OmegaConf.create({"method": {**good, key: value}}))
    assert "\n" not in str(err.value)


def test_batchnorm_uses_running_statistics_and_is_left_untouched():
    """SSD's code estimates importances in eval mode: BN normalises with its running statistics (so a
    forget batch of one class is not renormalised by its own mean) and the estimate leaves them as they
    were. Then a sample's gradient does not depend on its batch: batch mode at batch size 1 is the
    per-sample Fisher, even for a system handed over in train mode."""
    from ppp.data.base import InMemoryImages
    from ppp.models.resnet import ClassifierSystem

    torch.manual_seed(0)
    system = ClassifierSystem("resnet18", num_classes=10, image_size=16)
    for m in system.net.modules():  # running statistics unlike any batch's own
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    buffers = {n: b.clone() for n, b in system.net.named_buffers()}
    data = InMemoryImages(torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8), torch.tensor([6] * 6))
    system.train()
    per_sample = per_sample_fisher(system, data, "cpu", {}, chunk=3)
    system.train()
    one_by_one = batch_fisher(system, data, "cpu", batch_size=1)
    assert_close(per_sample, one_by_one, tolerance=1e-2)  # vmapped and plain convolutions round apart
    assert all(torch.equal(buffers[n], b) for n, b in system.net.named_buffers())
    system.train()
    whole = batch_fisher(system, data, "cpu", batch_size=6)
    system.eval()
    system.net.zero_grad()
    system.loss(next(iter(make_loader(data, system, 6)))).backward()
    assert_close(whole, {n: p.grad**2 for n, p in system.net.named_parameters()}, tolerance=1e-2)


def test_the_chunk_shrinks_with_the_memory_budget(setup, ppp_log):
    """Torch.func path: a sample costs its dense per-sample gradient plus its measured activations."""
    from ppp.fisher import ACTIVATION_COPIES, GRADIENT_COPIES, activation_bytes, budget_chunk

    system, train = setup
    data = train.subset(range(8))
    context = loss_context(system, train.subset(range(40, 56)), "cpu")
    dense = 4 * 10**6
    chunks = [budget_chunk(system, data, "cpu", context, 32, mb, gradient_bytes=dense) for mb in (1e6, 50, 35, 1e-3)]
    assert chunks[0] == 32 and chunks[-1] == 1 and chunks == sorted(chunks, reverse=True) and len(set(chunks)) == 4
    sample = {k: v[0] for k, v in next(iter(make_loader(data, system, 1))).items()}
    activations = activation_bytes(system, sample, context)
    assert 10_000 < activations < dense  # clip_tiny keeps a few hundred kB of activations per sample
    sums = 4 * sum(p.numel() for p in system.net.parameters() if p.requires_grad)  # the running sums
    assert chunks[1] == int((50 * 2**20 - sums) // (GRADIENT_COPIES * dense + ACTIVATION_COPIES * activations))
    assert any("samples per chunk" in m for m in ppp_log.messages)


def test_a_tiny_budget_gives_the_large_budgets_fisher(setup):
    """One sample per chunk (the budget cannot hold one) against one chunk of all: the same diagonal."""
    system, train = setup
    data = train.subset(range(6))
    context = loss_context(system, train.subset(range(40, 56)), "cpu")
    tiny = per_sample_fisher(system, data, "cpu", context, chunk=32, memory_mb=1e-3)
    large = per_sample_fisher(system, data, "cpu", context, chunk=32, memory_mb=1e6)
    assert_close(tiny, large, tolerance=1e-5)
    assert sum(f.sum() for f in tiny.values()) > 0


def test_the_default_budget_is_a_share_of_free_memory():
    from ppp.fisher import free_memory_mb

    free = free_memory_mb("cpu")
    assert free is not None and 0 < free < 2**30  # MemAvailable, in MB
