import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tiny_contexts import TinyClassifier, make_context, make_hashing_context

from ppp.data.base import Subset
from ppp.data.digits import digit_scenes
from ppp.errors import ConfigError
from ppp.evaluation import mia
from ppp.evaluation.mia import (
    MembershipSplit,
    ShadowAttack,
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
    out = score_attack(attack, target, split, "")
    assert out["mia/auc"] > 0.99 and out["forget/mia"] > 0.99 and out["retain/mia"] > 0.99


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
        "_x",
    )
    assert abs(out["mia/auc_x"] - 0.5) < 0.05


@pytest.mark.parametrize("per_class", [True, False])
def test_shadow_attack_learns_in_out_from_shadow_records(per_class):
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (800,))
    membership = np.r_[np.ones(400), np.zeros(400)]
    probs = torch.cat([confident(labels[:400], 4), diffuse(400, 4)])
    attack = ShadowAttack(probs, labels, membership, "mlp", per_class, seed=0)
    assert len(attack.per_class) == (4 if per_class else 0)
    query = torch.randint(0, 4, (100,))
    assert (attack(confident(query, 4), query) > 0.5).mean() > 0.95
    assert (attack(diffuse(100, 4), query) > 0.5).mean() < 0.05


def test_nonmember_pools_are_disjoint_from_training_data():
    ctx = make_context("unused")
    pool, name = nonmember_pool(ctx.bench)
    pool_items = set(pool.root_indices().tolist())
    assert name == "test" and not pool_items & set(ctx.bench.train.root_indices().tolist())
    assert not pool_items & set(ctx.bench.val.root_indices().tolist()) and len(ctx.bench.val) > 0

    scenes = digit_scenes(n_total=300, n_query=40, n_train=120, n_val=30)
    pool, name = nonmember_pool(scenes)
    train, val = set(scenes.train.root_indices().tolist()), set(scenes.val.root_indices().tolist())
    assert name == "query+database-train" and isinstance(pool, Subset) and len(val) == 30
    assert set(pool.root_indices().tolist()) == set(range(300)) - train - val  # validation queries are never in it


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
    out = membership_inference(memoriser, ctx, ["entropy_lr"], OmegaConf.create(SETTINGS))
    assert out == {"forget/mia": 1.0, "retain/mia": 1.0, "mia/auc": 1.0}


def test_shadow_models_train_on_data_disjoint_from_the_target_and_are_cached(tmp_path, monkeypatch, ppp_log):
    ctx = make_context(tmp_path, epochs=5)
    shadow_data = []
    real_train = mia.train

    def recording_train(system, data, *args, **kwargs):
        shadow_data.append(set(data.root_indices().tolist()))
        return real_train(system, data, *args, **kwargs)

    monkeypatch.setattr(mia, "train", recording_train)
    settings = OmegaConf.create(SETTINGS)
    out = membership_inference(ctx.trained()[0], ctx, ["entropy_lr", "shokri"], settings)
    assert set(out) == {f"{split}/mia{s}" for split in ("forget", "retain") for s in ("", "_shokri")} | {
        "mia/auc",
        "mia/auc_shokri",
    }
    assert all(0.0 <= v <= 1.0 for v in out.values())

    target_train = set(ctx.bench.train.root_indices().tolist())
    pool, _ = nonmember_pool(ctx.bench)
    split = MembershipSplit.draw(len(ctx.retain_train), len(pool), 0.5, seed=0)
    fit_part = set(pool.root_indices()[split.pool_fit].tolist())
    assert len(shadow_data) == 2 and shadow_data[0] != shadow_data[1]
    assert all(not d & target_train and d <= fit_part for d in shadow_data)

    ppp_log.clear()
    assert membership_inference(ctx.trained()[0], ctx, ["shokri"], settings) == {
        k: v for k, v in out.items() if k.endswith("_shokri")
    }
    assert "\n".join(ppp_log.messages).count("reusing shadow model") == 2 and len(shadow_data) == 2


def test_hashing_systems_are_attacked_through_proxy_cosines(tmp_path):
    ctx = make_hashing_context(tmp_path)
    settings = OmegaConf.create({**SETTINGS, "n_shadow": 1})
    out = membership_inference(ctx.trained()[0], ctx, ["entropy_lr", "shokri"], settings)
    assert len(out) == 6 and all(0.0 <= v <= 1.0 for v in out.values())


def test_modes_are_checked():
    ctx = make_context("unused")
    with pytest.raises(ConfigError, match="entropy_lr, shokri"):
        membership_inference(None, ctx, ["loss_threshold"], OmegaConf.create(SETTINGS))
    assert membership_inference(None, ctx, [], OmegaConf.create(SETTINGS)) == {}
