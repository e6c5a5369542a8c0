"""Membership inference: does the model still treat the forget samples as members of its training set?

Members are D_r (retain-train), non-members a pool the original never trained on (`nonmember_pool`).
A `fit_fraction` of each side trains the attack; the rest measures it. Each mode writes its own keys:

- `entropy_lr` (SSD / Bad Teacher): logistic regression (class_weight='balanced') on the entropy of
  the target model's own softmax outputs, members vs non-members -> `forget/mia`, `retain/mia`, `mia/auc`.
- `shokri` (Shokri et al. 2017): `n_shadow` shadow models of the target's architecture and recipe,
  each trained on a random half ("in") of the non-member fit part and tested on the other half
  ("out"); an attack model (MLP or LR: one global model, or with `per_class` one per class of
  single-label data) learns in/out from the shadows' outputs, then judges the target ->
  `forget/mia_shokri`, `retain/mia_shokri`, `mia/auc_shokri`.

`forget/mia*` is the fraction of D_f flagged as members (compare with Retrain); `retain/mia*` the
fraction of the held-out part of D_r flagged (held out so that it is not inflated by the fit);
`mia/auc*` the attack's ROC AUC on held-out members vs held-out non-members (a sanity check: ~0.5
means the attack cannot tell members at all).

Prediction vectors are softmax(logits) for classifiers and, for hashing systems, softmax over the
image code's cosines to the DSPH class proxies (T = 1); every attack feature is standardised, so the
narrow range of the cosines does not matter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import OmegaConf

from ppp.cache import content_key
from ppp.data.base import Benchmark, LabelledDataset, Subset
from ppp.errors import ConfigError
from ppp.evaluation.classification import predict_proba
from ppp.schema import boolean, integer, mapping, number, one_of, read, schema, setting
from ppp.train import train


@schema
class MiaSettings:
    """`evaluator.mia_settings` (`mia/default.yaml`)."""

    fit_fraction: float = setting(number(0, 1, low_open=True))
    seed: int = setting(integer(0))
    n_shadow: int = setting(integer(1))
    shadow_seed: int = setting(integer(0))
    shadow_train: dict | None = setting(mapping(optional=True), default=None)
    attack: str = setting(one_of("mlp", "lr"))
    per_class: bool = setting(boolean())


MODES = ("entropy_lr", "shokri")
SUFFIX = {"entropy_lr": "", "shokri": "_shokri"}

# An attack maps (prediction vectors, labels) to membership probabilities.
Attack = Callable[[torch.Tensor, torch.Tensor], np.ndarray]


def nonmember_pool(bench: Benchmark) -> tuple[LabelledDataset, str]:
    """Samples disjoint from the training split, and the pool's name (part of shadow-model cache keys).

    Classification: the test split (as in SSD). Retrieval: the queries plus the database items outside the training split (DSPH's database contains
    the training set), when the splits index one common dataset; else the queries alone.
    Validation samples (`bench.val`) are never in it: they come out of the training pool
    (classification) or out of the database (retrieval), so tuning on them leaves the pool untouched.
    """
    if bench.task == "classification":
        return bench.test, "test"
    q, db, tr = bench.query, bench.database, bench.train
    if all(isinstance(s, Subset) for s in (q, db, tr)) and q.base is db.base is tr.base:
        outside = db.indices[~torch.isin(db.indices, tr.indices)]
        return q.base.subset(torch.cat([q.indices, outside])), "query+database-train"
    return q, "query"


def entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


def _attack_model(kind: str, seed: int):
    from sklearn.linear_model import LogisticRegression  # scikit-learn only for runs that attack (~3 s import)
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "lr":
        model = LogisticRegression(class_weight="balanced", max_iter=1000)
    elif kind == "mlp":
        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=2000, random_state=seed)
    else:
        raise ConfigError(f"mia_settings.attack must be mlp or lr; got '{kind}'")
    return make_pipeline(StandardScaler(), model)


def entropy_attack(member_probs: torch.Tensor, nonmember_probs: torch.Tensor) -> Attack:
    """SSD's attack: one scalar feature, the entropy of the target's own prediction."""
    features = torch.cat([entropy(member_probs), entropy(nonmember_probs)]).numpy()[:, None]
    membership = np.r_[np.ones(len(member_probs)), np.zeros(len(nonmember_probs))]
    model = _attack_model("lr", 0).fit(features, membership)
    return lambda probs, labels: model.predict_proba(entropy(probs).numpy()[:, None])[:, 1]


def shokri_features(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The prediction vector sorted high to low, plus the probability of the sample's own class
    (mean over its classes when multi-label), so that a global attack also sees the true label."""
    if labels.dim() == 1:
        own = probs.gather(1, labels[:, None].long())[:, 0]
    else:
        own = (probs * labels).sum(1) / labels.sum(1).clamp_min(1)
    return torch.cat([probs.sort(dim=1, descending=True).values, own[:, None]], dim=1).numpy()


class ShadowAttack:
    """Shokri's attack model on shadow records: a global one, and with `per_class` one per class of
    single-label data (for classes with both in and out records; the global one answers for the rest)."""

    def __init__(
        self, probs: torch.Tensor, labels: torch.Tensor, membership: np.ndarray, kind: str, per_class: bool, seed: int
    ):
        features = shokri_features(probs, labels)
        self.global_model = _attack_model(kind, seed).fit(features, membership)
        self.per_class = {}
        if per_class and labels.dim() == 1:
            for c in labels.unique().tolist():
                rows = (labels == c).numpy()
                if len(np.unique(membership[rows])) == 2:
                    self.per_class[c] = _attack_model(kind, seed).fit(features[rows], membership[rows])

    def __call__(self, probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        features = shokri_features(probs, labels)
        out = self.global_model.predict_proba(features)[:, 1]
        for c, model in self.per_class.items():
            rows = (labels == c).numpy()
            if rows.any():
                out[rows] = model.predict_proba(features[rows])[:, 1]
        return out


def trained_shadow(ctx, data: LabelledDataset, index: int, identity: dict, recipe_overrides):
    """Shadow model `index`, trained like the original on `data` (with `recipe_overrides` on the
    backbone's recipe, if any); cached under what determines it."""
    overrides = OmegaConf.to_container(recipe_overrides, resolve=True) if recipe_overrides else {}
    recipe = OmegaConf.merge(OmegaConf.to_container(ctx.cfg.backbone.train, resolve=True), overrides)
    # The effective recipe, not the run's `seed`: a shadow's init and data order come from its own seed.
    key = {**ctx.training_identity(recipe), "shadow": identity}
    label = f"shadow model {index + 1}"
    seed = int(identity["seed"])

    def build():
        system = ctx.fresh_system(seed=seed)
        train(system, data, recipe, ctx.device, seed, desc=label, num_workers=int(ctx.cfg.num_workers))
        return {"state_dict": {k: v.cpu() for k, v in system.state_dict().items()}}

    payload, _ = ctx.cache.get_or_build("models", content_key(key), build, label)
    system = ctx.fresh_system(seed=seed)
    system.load_state_dict(payload["state_dict"])
    return system.eval()


def shokri_attack(
    ctx, pool: LabelledDataset, pool_name: str, fit_positions: torch.Tensor, settings, batch_size: int
) -> Attack:
    """Shadow models on disjoint in/out halves of the pool's fit part, then the attack on their outputs."""
    probs, labels, membership = [], [], []
    for s in range(int(settings.n_shadow)):
        seed = int(settings.shadow_seed) + s
        order = fit_positions[torch.randperm(len(fit_positions), generator=torch.Generator().manual_seed(seed))]
        half = len(order) // 2
        inside, outside = order[:half], order[half : 2 * half]
        identity = {"pool": pool_name, "in": sorted(inside.tolist()), "seed": seed}
        shadow = trained_shadow(ctx, pool.subset(inside), s, identity, read(MiaSettings, settings).shadow_train)
        for positions, member in ((inside, 1.0), (outside, 0.0)):
            part = pool.subset(positions)
            probs.append(predict_proba(shadow, part, ctx.device, batch_size))
            labels.append(part.labels)
            membership.append(np.full(len(part), member))
    return ShadowAttack(
        torch.cat(probs),
        torch.cat(labels),
        np.concatenate(membership),
        settings.attack,
        bool(settings.per_class),
        int(settings.seed),
    )


@dataclass
class MembershipSplit:
    """Positions into D_r (members) and into the non-member pool: the fit part trains the attack."""

    member_fit: torch.Tensor
    member_eval: torch.Tensor
    pool_fit: torch.Tensor
    pool_eval: torch.Tensor

    @classmethod
    def draw(cls, n_members: int, n_pool: int, fit_fraction: float, seed: int) -> MembershipSplit:
        gen = torch.Generator().manual_seed(seed)
        members, pool = torch.randperm(n_members, generator=gen), torch.randperm(n_pool, generator=gen)
        m, p = int(fit_fraction * n_members), int(fit_fraction * n_pool)
        if min(m, n_members - m, p, n_pool - p) < 2:
            raise ConfigError(
                f"membership inference needs >= 2 members and non-members on each side of the "
                f"split; have {n_members} members, {n_pool} non-members, fit_fraction {fit_fraction}"
            )
        return cls(members[:m], members[m:], pool[:p], pool[p:])


def score_attack(
    attack: Attack, target: dict[str, tuple[torch.Tensor, torch.Tensor]], split: MembershipSplit, suffix: str
) -> dict[str, float]:
    """Member rates on D_f and held-out D_r, and the AUC on held-out members vs non-members."""
    from sklearn.metrics import roc_auc_score

    def member_probability(name, positions=None):
        probs, labels = target[name]
        if positions is not None:
            probs, labels = probs[positions], labels[positions]
        return attack(probs, labels)

    members = member_probability("members", split.member_eval)
    nonmembers = member_probability("pool", split.pool_eval)
    truth = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return {
        f"forget/mia{suffix}": float((member_probability("forget") > 0.5).mean()),
        f"retain/mia{suffix}": float((members > 0.5).mean()),
        f"mia/auc{suffix}": float(roc_auc_score(truth, np.r_[members, nonmembers])),
    }


def check_modes(modes) -> None:
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"unknown membership-inference mode(s) {', '.join(unknown)}; valid: {', '.join(MODES)}")


def membership_inference(system, ctx, modes, settings, batch_size: int = 256) -> dict[str, float]:
    """The configured attacks (`modes`, any of MODES) against `system`; a flat dict of their keys."""
    check_modes(modes)
    if not modes:
        return {}
    pool, pool_name = nonmember_pool(ctx.bench)
    members, forget = ctx.retain_train, ctx.forget_train
    split = MembershipSplit.draw(len(members), len(pool), float(settings.fit_fraction), int(settings.seed))
    workers = int(ctx.cfg.num_workers)
    target = {
        name: (predict_proba(system, data, ctx.device, batch_size, workers), data.labels)
        for name, data in (("members", members), ("pool", pool), ("forget", forget))
    }
    out = {}
    for mode in modes:
        if mode == "entropy_lr":
            attack = entropy_attack(target["members"][0][split.member_fit], target["pool"][0][split.pool_fit])
        else:
            attack = shokri_attack(ctx, pool, pool_name, split.pool_fit, settings, batch_size)
        out.update(score_attack(attack, target, split, SUFFIX[mode]))
    return out
