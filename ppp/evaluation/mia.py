"""Membership inference, SSD's legacy attack: does the model still treat the forget samples as members?

Members are D_r (retain-train), non-members a pool the original never trained on (`nonmember_pool`).
A `fit_fraction` of each side trains the attack; the rest measures it.

- `entropy_lr` (SSD / Bad Teacher): logistic regression (class_weight='balanced') on the entropy of
  the target model's own softmax outputs, members vs non-members -> `forget/mia`, `retain/mia`, `mia/auc`
  and its bootstrap interval `mia/auc_lo`, `mia/auc_hi` (`attack_metrics.attack_report`).

`forget/mia` is the fraction of D_f flagged as members (compare with Retrain); `retain/mia` the fraction
of the held-out part of D_r flagged (held out so that it is not inflated by the fit); `mia/auc` the
attack's ROC AUC on held-out members vs held-out non-members, with its interval: an interval that holds 0.5
means the attack cannot tell members at all, and then its rates say nothing about privacy.

Prediction vectors are softmax(logits) for classifiers and, for hashing systems, softmax over the
image code's cosines to the DSPH class proxies (T = 1). Shokri et al.'s attack and the reference-model
attacks live in `ppp/evaluation/audit_membership.py` (`evaluator.audit.attacks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ppp.data.base import Benchmark, Concatenated, LabelledDataset, Subset
from ppp.errors import ConfigError
from ppp.evaluation.attack_metrics import attack_report
from ppp.evaluation.classification import predict_proba
from ppp.schema import boolean, integer, mapping, number, one_of, schema, setting


@schema
class MiaSettings:
    """`evaluator.mia_settings` (`mia/default.yaml`). The shadow keys are retired (issue 21: Shokri's attack
    moved to `evaluator.audit`, on its reference models); they stay declared, unread, so that finished runs
    keep their hashes."""

    fit_fraction: float = setting(number(0, 1, low_open=True))
    seed: int = setting(integer(0))
    n_shadow: int = setting(integer(1))
    shadow_seed: int = setting(integer(0))
    shadow_train: dict | None = setting(mapping(optional=True), default=None)
    attack: str = setting(one_of("mlp", "lr"))
    per_class: bool = setting(boolean())


MODES = ("entropy_lr",)
MOVED = {"shokri": "evaluator.audit.attacks=[shokri] (Shokri et al. on the audit's reference models)"}

# An attack maps (prediction vectors, labels) to membership probabilities.
Attack = Callable[[torch.Tensor, torch.Tensor], np.ndarray]


def nonmember_pool(bench: Benchmark) -> tuple[LabelledDataset, str]:
    """Samples disjoint from the training split, and the pool's name (part of reference-model cache keys).

    Classification: the test split (as in SSD). Retrieval: the queries plus the database items outside the
    training split (DSPH's database contains the training set), when the splits index one common dataset;
    else the queries alone. Either way followed by `bench.population` (further non-members, never scored)
    where the dataset has one, so that the pool can match the training set's size. Validation samples
    (`bench.val`) are never in it: they come out of the training pool (classification) or out of the
    database (retrieval), so tuning on them leaves the pool untouched.
    """
    if bench.task == "classification":
        pool, name = bench.test, "test"
    else:
        q, db, tr = bench.query, bench.database, bench.train
        if all(isinstance(s, Subset) for s in (q, db, tr)) and q.base is db.base is tr.base:
            outside = db.indices[~torch.isin(db.indices, tr.indices)]
            pool, name = q.base.subset(torch.cat([q.indices, outside])), "query+database-train"
        else:
            pool, name = q, "query"
    extra = bench.population
    if extra is None:
        return pool, name
    if isinstance(pool, Subset) and isinstance(extra, Subset) and pool.base is extra.base:
        return pool.base.subset(torch.cat([pool.indices, extra.indices])), f"{name}+population"
    return Concatenated(pool, extra), f"{name}+population"


def entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


def attack_model(kind: str, seed: int):
    """An unfitted binary attack: standardised features into logistic regression or an MLP(64); the MLP stops
    once a seeded 10 % of its records stop improving (5x faster than running to convergence on the audit's
    tens of thousands of reference records, the same accuracy)."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn only for runs that attack (~3 s import)
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "lr":
        model = LogisticRegression(class_weight="balanced", max_iter=1000)
    elif kind == "mlp":
        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=2000, early_stopping=True, random_state=seed)
    else:
        raise ConfigError(f"the attack model must be mlp or lr; got '{kind}'")
    return make_pipeline(StandardScaler(), model)


def entropy_attack(member_probs: torch.Tensor, nonmember_probs: torch.Tensor) -> Attack:
    """SSD's attack: one scalar feature, the entropy of the target's own prediction."""
    features = torch.cat([entropy(member_probs), entropy(nonmember_probs)]).numpy()[:, None]
    membership = np.r_[np.ones(len(member_probs)), np.zeros(len(nonmember_probs))]
    model = attack_model("lr", 0).fit(features, membership)
    return lambda probs, labels: model.predict_proba(entropy(probs).numpy()[:, None])[:, 1]


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
    attack: Attack,
    target: dict[str, tuple[torch.Tensor, torch.Tensor]],
    split: MembershipSplit,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Member rates on D_f and held-out D_r, and the AUC (with its bootstrap interval) on held-out members
    vs non-members."""

    def member_probability(name, positions=None):
        probs, labels = target[name]
        if positions is not None:
            probs, labels = probs[positions], labels[positions]
        return attack(probs, labels)

    members = member_probability("members", split.member_eval)
    nonmembers = member_probability("pool", split.pool_eval)
    report = attack_report(members, nonmembers, fprs=(), n_boot=n_boot, seed=seed)
    return {
        "forget/mia": float((member_probability("forget") > 0.5).mean()),
        "retain/mia": float((members > 0.5).mean()),
        "mia/auc": report.auc,
        "mia/auc_lo": report.auc_ci[0],
        "mia/auc_hi": report.auc_ci[1],
    }


def check_modes(path: str, modes) -> None:
    """A one-line ConfigError for a mode that is not one of MODES (and where a moved one went)."""
    for mode in modes or []:
        if mode in MOVED:
            raise ConfigError(f"{path}: '{mode}' moved to {MOVED[mode]}")
    unknown = [m for m in modes or [] if m not in MODES]
    if unknown:
        raise ConfigError(f"{path}: unknown value(s) {', '.join(map(str, unknown))}; valid: {', '.join(MODES)}")


def membership_inference(
    system, ctx, modes, settings, batch_size: int = 256, n_boot: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The configured attacks (`modes`, any of MODES) against `system`; a flat dict of their keys. `n_boot`,
    `seed`: the AUC interval's bootstrap."""
    check_modes("evaluator.mia", modes)
    if not modes:
        return {}
    pool, _ = nonmember_pool(ctx.bench)
    members, forget = ctx.retain_train, ctx.forget_train
    split = MembershipSplit.draw(len(members), len(pool), float(settings.fit_fraction), int(settings.seed))
    workers = int(ctx.cfg.num_workers)
    target = {
        name: (predict_proba(system, data, ctx.device, batch_size, workers), data.labels)
        for name, data in (("members", members), ("pool", pool), ("forget", forget))
    }
    attack = entropy_attack(target["members"][0][split.member_fit], target["pool"][0][split.pool_fit])
    return score_attack(attack, target, split, n_boot, seed)
