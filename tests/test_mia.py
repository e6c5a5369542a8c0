import pytest
import torch
from omegaconf import OmegaConf
from tiny_contexts import TinyClassifier, make_context, make_hashing_context

from ppp.data.base import Subset
from ppp.data.digits import digit_scenes, digits
from ppp.errors import ConfigError
from ppp.evaluation.mia import (
    MembershipSplit,
    entropy_attack,
    membership_inference,
    nonmember_pool,
    score_attack,
)

pytestmark = pytest.mark.usefixtures("single_thread")

SETTINGS = {
    "fit_fraction": 0.5,
    "seed": 0,
    "n_shadow": 2,
    "shadow_seed": 100,
    "shadow_train": None,
    "attack": "mlp",
    "per_class": False,
}


def confident(labels, num_classes=10):
    """Prediction vectors that put (almost) all mass on the true class: what a model does on members."""
    return torch.softmax(12 * torch.nn.functional.one_hot(labels, num_classes).float(), dim=1)


def diffuse(n, num_classes=10, seed=0):
    return torch.distributions.Dirichlet(torch.ones(num_classes)).sample((n,))


def test_entropy_attack_separable_by_construction():
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (400,))
    split = MembershipSplit.draw(400, 400, 0.5, seed=0)
    members, nonmembers = confident(labels), diffuse(400)
    attack = entropy_attack(members[split.member_fit], nonmembers[split.pool_fit])
    target = {
        "members": (members, labels),
        "pool": (nonmembers, labels),
        "forget": (confident(labels[:50]), labels[:50]),
    }
    out = score_attack(attack, target, split, n_boot=100)
    assert out["mia/auc"] > 0.99 and out["forget/mia"] > 0.99 and out["retain/mia"] > 0.99
    assert out["mia/auc_lo"] > 0.98 and out["mia/auc_hi"] <= 1.0


def test_entropy_attack_at_chance_when_members_look_like_non_members():
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (3000,))
    members, nonmembers = diffuse(3000), diffuse(3000)
    split = MembershipSplit.draw(3000, 3000, 0.5, seed=0)
    attack = entropy_attack(members[split.member_fit], nonmembers[split.pool_fit])
    out = score_attack(
        attack,
        {"members": (members, labels), "pool": (nonmembers, labels), "forget": (members[:10], labels[:10])},
        split,
        n_boot=200,
    )
    assert abs(out["mia/auc"] - 0.5) < 0.05 and out["mia/auc_lo"] < 0.5 < out["mia/auc_hi"]


def test_nonmember_pools_are_disjoint_from_training_data():
    ctx = make_context("unused")
    pool, name = nonmember_pool(ctx.bench)
    pool_items = set(pool.root_indices().tolist())
    assert name == "test+population" and not pool_items & set(ctx.bench.train.root_indices().tolist())
    assert not pool_items & set(ctx.bench.val.root_indices().tolist()) and len(ctx.bench.val) > 0

    scenes = digit_scenes(n_total=300, n_query=40, n_train=120, n_val=30)
    pool, name = nonmember_pool(scenes)
    train, val = set(scenes.train.root_indices().tolist()), set(scenes.val.root_indices().tolist())
    assert name == "query+database-train" and isinstance(pool, Subset) and len(val) == 30
    assert set(pool.root_indices().tolist()) == set(range(300)) - train - val  # validation queries are never in it

    extra = digits(size=8, per_class=40, population_per_class=16)  # further non-members: the pool's second part
    pool, name = nonmember_pool(extra)
    assert name == "test+population" and len(pool) == len(extra.test) + len(extra.population) == 10 * (8 + 16)
    assert not set(pool.root_indices().tolist()) & set(extra.train.root_indices().tolist())


class Memoriser(TinyClassifier):
    """Certain of the true class on the images it was 'trained' on, clueless on all others."""

    def __init__(self, train_images: torch.Tensor):
        super().__init__(10, 8, 4)
        self.train_images = {bytes(self.transform(im).numpy()) for im in train_images}

    def logits(self, batch):
        member = torch.tensor([bytes(im.numpy()) in self.train_images for im in batch["image"]])
        return torch.where(member[:, None], 12 * torch.nn.functional.one_hot(batch["label"], 10).float(), 0.0)


def test_end_to_end_members_are_found_by_construction(tmp_path):
    ctx = make_context(tmp_path)
    memoriser = Memoriser(torch.stack([ctx.bench.train[i][0] for i in range(len(ctx.bench.train))]))
    out = membership_inference(memoriser, ctx, ["entropy_lr"], OmegaConf.create(SETTINGS), n_boot=50)
    assert out == {"forget/mia": 1.0, "retain/mia": 1.0, "mia/auc": 1.0, "mia/auc_lo": 1.0, "mia/auc_hi": 1.0}


def test_hashing_systems_are_attacked_through_proxy_cosines(tmp_path):
    ctx = make_hashing_context(tmp_path)
    out = membership_inference(ctx.trained()[0], ctx, ["entropy_lr"], OmegaConf.create(SETTINGS), n_boot=50)
    assert set(out) == {"forget/mia", "retain/mia", "mia/auc", "mia/auc_lo", "mia/auc_hi"}
    assert all(0.0 <= v <= 1.0 for v in out.values()) and out["mia/auc_lo"] <= out["mia/auc"] <= out["mia/auc_hi"]


def test_modes_are_checked():
    ctx = make_context("unused")
    with pytest.raises(ConfigError, match="valid: entropy_lr"):
        membership_inference(None, ctx, ["loss_threshold"], OmegaConf.create(SETTINGS))
    with pytest.raises(ConfigError, match=r"moved to evaluator.audit.attacks=\[shokri\]"):
        membership_inference(None, ctx, ["shokri"], OmegaConf.create(SETTINGS))
    assert membership_inference(None, ctx, [], OmegaConf.create(SETTINGS)) == {}
