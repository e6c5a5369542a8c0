"""The membership audit (issue 21): strong attacks on the evaluated model, reported as the field reports them.

Every attack scores examples of the population P (training split, then the non-member pool; see
`references.py`), higher = member, and is reported per set with `attack_metrics.attack_report`:

- `forget`: members D_f (training samples carrying a forget class), non-members the pool's forget-class samples;
- `retain`: members D_r, non-members the pool's other samples (Hayes et al.: unlearning can expose retained data).

Per-example statistic φ, computed alike for the target and every reference: classification, LiRA's logit
confidence of the true class; retrieval, the pair's logit-scaled similarity (`pair_logit_similarity`, T = 1) of
its real-valued image and text codes against a fixed gallery of `gallery` captions drawn from P (the pair's own
caption left out where the gallery holds it).

Attacks (`ATTACKS`):
- `baseline`, no references: φ (classification) or the pair's cosine (retrieval);
- `lira_offline`, `lira_online` (Carlini et al. 2022), on the references OUT (and IN) of each example;
- `rmia` (Zarifzadeh et al. 2024) on p = sigmoid(φ), the references' mean over all K (half IN), the pool as
  the population z;
- `shokri` (Shokri et al. 2017): an attack model (`shokri_model`, MLP or LR; `shokri_per_class` on single-label
  data) learns IN vs OUT from the references' records (every reference, every example of P), then judges the
  target. Features: the prediction vector's `TOP` largest probabilities and the true one's (retrieval: the
  softmax over the own caption and the gallery);
- `rank` (retrieval only, a service-only attacker): −rank of the pair's own caption among the database texts when
  the Hamming index is queried with its image code (ties half-counted); members D_f / D_r (DSPH's database holds
  the training pairs), non-members the database items outside the training split.

Keys `audit/<attack>/<set>/<metric>` (`AttackReport.metrics`: auc, auc_lo, auc_hi, bal_acc, informative,
n_members, n_nonmembers, tpr@<f>, tpr@<f>_lo, tpr@<f>_hi; NaN where f is unsupported), the same under
`audit/primary/...` for the `primary` attack, and the per-example scores as tensors (arrays.npz)
`audit/<attack>/<set>/member_scores`, `.../nonmember_scores`. With `pooled`, each reference in turn is the
target against the other K − 1, on the forget set's examples, pooled (`pooled_report`):
`audit/<attack>/loo_forget/...`, the attack's power on the recipe itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ppp.data.base import Subset, item_roots, root_indices
from ppp.errors import ConfigError
from ppp.evaluation.attack_metrics import attack_report, pooled_report
from ppp.evaluation.membership_scores import (
    exclude_mask,
    lira_offline,
    lira_online,
    logit_confidence,
    pair_cosine,
    pair_logit_similarity,
    rmia,
)
from ppp.evaluation.mia import attack_model
from ppp.evaluation.references import Population, population, reference_models
from ppp.evaluation.retrieval import encode
from ppp.schema import boolean, integer, number, one_of, schema, setting, subset_of
from ppp.train import collect

ATTACKS = ("baseline", "lira_offline", "lira_online", "rmia", "shokri", "rank")
USES_REFERENCES = frozenset({"lira_offline", "lira_online", "rmia", "shokri"})
RETRIEVAL_ONLY = frozenset({"rank"})
TOP = 10  # Shokri features: the largest probabilities kept (Salem et al. 2019: the top 3 do as well as all)


def fpr_list(path: str, value) -> None:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path} must be a non-empty list of false-positive rates in (0, 1]; got '{value}'")
    for f in value:
        number(0, 1, low_open=True)(path, f)


@schema
class AuditSettings:
    """`evaluator.audit` (`audit/membership.yaml`)."""

    attacks: list[str] = setting(subset_of(*ATTACKS))
    primary: str = setting(one_of(*ATTACKS))
    references: int = setting(integer(2))
    reference_seed: int = setting(integer(0))
    gallery: int = setting(integer(1))
    n_boot: int = setting(integer(0))
    bootstrap_seed: int = setting(integer(0))
    fprs: list[float] = setting(fpr_list)
    pooled: bool = setting(boolean())
    rmia_gamma: float = setting(number(0, low_open=True))
    shokri_model: str = setting(one_of("mlp", "lr"))
    shokri_per_class: bool = setting(boolean())
    bootstrap_by_source: bool = setting(boolean())

    def check(self, path: str) -> None:
        if self.references % 2:
            raise ConfigError(
                f"{path}.references must be even (every example IN in half of them); got {self.references}"
            )
        if len(set(self.attacks)) != len(self.attacks):
            raise ConfigError(f"{path}.attacks names an attack twice: {self.attacks}")
        if self.attacks and self.primary not in self.attacks:
            raise ConfigError(
                f"{path}.primary={self.primary} is not among {path}.attacks {self.attacks}: add it, or name one of them"
            )
        if self.pooled and self.references < 4:
            raise ConfigError(f"{path}.pooled needs references >= 4 (K - 1 others, each side); got {self.references}")


def check_task(settings: AuditSettings, task: str, path: str = "evaluator.audit") -> None:
    """Attacks the benchmark's task cannot run: a one-line ConfigError before any training."""
    wrong = [a for a in settings.attacks if a in RETRIEVAL_ONLY and task != "retrieval"]
    if wrong:
        raise ConfigError(f"{path}.attacks: {', '.join(wrong)} needs a retrieval index (a {task} evaluator has none)")


# ---------------------------------------------------------------- what an attack observes of one model


@dataclass(frozen=True)
class Observed:
    """One model on every example of P: φ, the baseline statistic and Shokri's features."""

    phi: np.ndarray  # (N,)
    baseline: np.ndarray  # (N,)
    features: np.ndarray  # (N, F)

    @property
    def probability(self) -> np.ndarray:
        """p = sigmoid(φ): the true class's probability (retrieval: the own caption's, against the gallery)."""
        return np.exp(-np.logaddexp(0.0, -self.phi))


def shokri_features(probs: torch.Tensor, labels: torch.Tensor, top: int = TOP) -> np.ndarray:
    """The prediction vector's `top` largest entries, plus the probability of the sample's own class (mean over
    its classes when multi-label), so that a global attack also sees the true label."""
    if labels.dim() == 1:
        own = probs.gather(1, labels[:, None].long())[:, 0]
    else:
        own = (probs * labels).sum(1) / labels.sum(1).clamp_min(1)
    ranked = probs.sort(dim=1, descending=True).values[:, :top]
    return torch.cat([ranked, own[:, None]], dim=1).double().numpy()


class Statistics:
    """The per-model outputs on P and what the attacks observe of them, one way for targets and references."""

    def __init__(self, ctx, pop: Population, settings: AuditSettings, batch_size: int):
        self.ctx, self.pop, self.batch_size = ctx, pop, batch_size
        self.task = ctx.bench.task
        n = len(pop.data)
        draw = torch.randperm(n, generator=torch.Generator().manual_seed(int(settings.reference_seed)))
        self.gallery = draw[: min(int(settings.gallery), n - 1)].sort().values
        self.exclude = torch.full((n,), -1, dtype=torch.long)
        self.exclude[self.gallery] = torch.arange(len(self.gallery))

    def outputs(self, system, data) -> dict[str, torch.Tensor]:
        """Logits (classification) or real-valued image and text codes (retrieval) of every item of `data`."""
        workers, device = int(self.ctx.cfg.num_workers), self.ctx.device
        if self.task == "classification":
            (logits,) = collect(system, data, device, lambda b: system.logits(b).float(), self.batch_size, workers)
            return {"logits": logits}
        image, text = encode(system, data, device, self.batch_size, workers, binary=False)
        return {"image": image.float(), "text": text.float()}

    def observe(self, outputs: dict[str, torch.Tensor]) -> Observed:
        labels = self.pop.data.labels
        if self.task == "classification":
            logits = outputs["logits"]
            phi = logit_confidence(logits, labels)
            return Observed(phi, phi, shokri_features(torch.softmax(logits.double(), 1), labels))
        image, text = outputs["image"], outputs["text"]
        gallery = text[self.gallery]
        phi = pair_logit_similarity(image, text, gallery, exclude=self.exclude)
        unit = torch.nn.functional.normalize
        own = (unit(image.double(), dim=1) * unit(text.double(), dim=1)).sum(1, keepdim=True)
        others = unit(image.double(), dim=1) @ unit(gallery.double(), dim=1).T
        others = others.masked_fill(exclude_mask(self.exclude, len(self.gallery)), float("-inf"))
        probs = torch.softmax(torch.cat([own, others], dim=1), dim=1)
        features = shokri_features(probs, torch.zeros(len(probs), dtype=torch.long))
        return Observed(phi, pair_cosine(image, text), features)


# ---------------------------------------------------------------- the attacks, on every example of P


def _masked(phi: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(R, N) statistics -> (N, R), NaN where `mask` (R, N) is False."""
    return np.where(mask, phi, np.nan).T


class ShokriAttack:
    """Shokri's attack model on the references' records (every example, IN or OUT of each reference): one global
    model and, with `per_class` classes given, one per class with both IN and OUT records."""

    def __init__(self, refs: list[Observed], inside: np.ndarray, classes: torch.Tensor | None, kind: str, seed: int):
        features = np.concatenate([r.features for r in refs])
        membership = inside.reshape(-1).astype(float)
        self.global_model = attack_model(kind, seed).fit(features, membership)
        self.per_class = {}
        if classes is not None:
            record_classes = np.tile(classes.numpy(), len(refs))
            for c in np.unique(record_classes):
                rows = record_classes == c
                if len(np.unique(membership[rows])) == 2:
                    self.per_class[int(c)] = attack_model(kind, seed).fit(features[rows], membership[rows])
        self.classes = classes

    def __call__(self, target: Observed) -> np.ndarray:
        out = self.global_model.predict_proba(target.features)[:, 1]
        for c, model in self.per_class.items():
            rows = (self.classes == c).numpy()
            if rows.any():
                out[rows] = model.predict_proba(target.features[rows])[:, 1]
        return out


def attack_scores(
    attack: str,
    target: Observed,
    refs: list[Observed],
    inside: np.ndarray,
    population_mask: np.ndarray,
    settings: AuditSettings,
    classes: torch.Tensor | None,
) -> np.ndarray:
    """Membership scores (N,) of every example of P under `attack`; `inside` (R, N) the references' in/out
    matrix, `population_mask` (N,) the examples the target never trained on (RMIA's population)."""
    if attack == "baseline":
        return target.baseline
    phi = np.stack([r.phi for r in refs]) if refs else None
    if attack == "lira_offline":
        return lira_offline(target.phi, _masked(phi, ~inside))
    if attack == "lira_online":
        return lira_online(target.phi, _masked(phi, inside), _masked(phi, ~inside))
    if attack == "rmia":
        p_target, p_refs = target.probability, np.stack([r.probability for r in refs]).T
        z = population_mask
        return rmia(p_target, p_refs, p_target[z], p_refs[z], gamma=float(settings.rmia_gamma))
    if attack == "shokri":
        per_class = classes if settings.shokri_per_class else None
        return ShokriAttack(refs, inside, per_class, settings.shokri_model, int(settings.bootstrap_seed))(target)
    raise ValueError(f"attack '{attack}' does not score population examples")


def rank_scores(
    image_codes: torch.Tensor, text_codes: torch.Tensor, rows: torch.Tensor, chunk: int = 1024
) -> np.ndarray:
    """−rank of item i's own caption among all `text_codes` when the index is queried with image i (binary codes,
    Hamming distance; captions tied with it count half), for each i in `rows`."""
    texts = text_codes.double()
    out = []
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        inner = image_codes[part].double() @ texts.T  # higher = closer: Hamming = (bits − inner) / 2
        own = inner[torch.arange(len(part)), part][:, None]
        closer = (inner > own).sum(1).double()
        tied = (inner == own).sum(1).double() - 1
        out.append(-(closer + 0.5 * tied))
    return torch.cat(out).numpy() if out else np.zeros(0)


# ---------------------------------------------------------------- sets and reports


def membership_sets(ctx, data, member: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(member positions, non-member positions) in `data` for the forget and retain sets, `member` marking the
    training items. A class set: the forget classes' members against their non-members, the others' against the
    others'. An item set: its items against every non-member, the kept training items (without what earlier
    requests deleted) against every non-member."""
    forgotten = ctx.forget_set
    forget, gone = forgotten.of(data).numpy(), forgotten.gone(data).numpy()
    like_forget = forget if forgotten.by_class else np.ones_like(forget)
    sets = {"forget": (member & forget, ~member & like_forget), "retain": (member & ~gone, ~member & ~forget)}
    return {name: _nonempty(name, *(np.flatnonzero(m) for m in masks)) for name, masks in sets.items()}


def audit_sets(ctx, pop: Population) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(member positions, non-member positions) in P for the forget and retain sets."""
    return membership_sets(ctx, pop.data, np.arange(len(pop.data)) < pop.n_train)


def _nonempty(name: str, members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(members) or not len(nonmembers):
        raise ConfigError(
            f"the membership audit's {name} set needs members and non-members; have {len(members)} and {len(nonmembers)}"
        )
    return members, nonmembers


def rank_sets(ctx) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(member rows, non-member rows) of the database for the forget and retain sets: training pairs vs the
    database items outside the training split."""
    db, train = ctx.bench.database, ctx.bench.train
    if not (isinstance(db, Subset) and isinstance(train, Subset) and db.base is train.base):
        raise ConfigError("the rank attack needs a database that holds the training pairs (one common dataset)")
    in_train = torch.isin(root_indices(db), root_indices(train)).numpy()
    if in_train.sum() != len(train):
        raise ConfigError("the rank attack needs a database that holds every training pair (DSPH's protocol)")
    return membership_sets(ctx, db, in_train)


def source_ids(bench, data) -> np.ndarray | None:
    """Per item of `data`, the one sklearn glyph it shows (`bench.info["glyphs"]`; digits jitters each training
    glyph about three times), or None where items are not one glyph each (digit_scenes' 1-3, real data)."""
    glyphs = bench.info.get("glyphs")
    if glyphs is None:
        return None
    per_item = [glyphs[int(i)] for i in item_roots(data)]
    if any(len(g) != 1 for g in per_item):
        return None
    return np.array([g[0] for g in per_item])


def reported(
    prefix: str, members: np.ndarray, nonmembers: np.ndarray, settings: AuditSettings, groups=(None, None)
) -> dict:
    """`attack_report`'s flat keys under `prefix`, and the per-example scores as tensors (arrays.npz);
    `groups` the members' and non-members' source ids (a cluster bootstrap) or None each."""
    report = attack_report(
        members,
        nonmembers,
        fprs=settings.fprs,
        n_boot=int(settings.n_boot),
        seed=int(settings.bootstrap_seed),
        member_groups=groups[0],
        nonmember_groups=groups[1],
    )
    return {
        **report.metrics(prefix),
        f"{prefix}/member_scores": torch.as_tensor(members),
        f"{prefix}/nonmember_scores": torch.as_tensor(nonmembers),
    }


def leave_one_out(
    attack: str, refs: list[Observed], refs_inside: np.ndarray, forget: np.ndarray, settings, classes, sources
) -> dict:
    """Each reference in turn as the target against the other K − 1, on the forget set's examples (its own IN
    ones are its members), pooled: the attack's power on the training recipe itself. `sources` (or None): the
    cluster bootstrap's unit per example of P."""
    pairs, groups = [], []
    for j in range(len(refs)):
        others = [r for i, r in enumerate(refs) if i != j]
        inside = np.delete(refs_inside, j, axis=0)
        scores = attack_scores(attack, refs[j], others, inside, ~refs_inside[j], settings, classes)
        masks = forget & refs_inside[j], forget & ~refs_inside[j]
        pairs.append(tuple(scores[mask] for mask in masks))
        if sources is not None:
            groups.append(tuple(sources[mask] for mask in masks))
    report = pooled_report(
        pairs,
        fprs=settings.fprs,
        n_boot=int(settings.n_boot),
        seed=int(settings.bootstrap_seed),
        groups=groups or None,
    )
    return report.metrics(f"audit/{attack}/loo_forget")


def membership_audit(system, ctx, settings: AuditSettings, batch_size: int = 256) -> dict:
    """The configured attacks (`settings.attacks`) against `system`: a flat dict of their keys and score arrays."""
    if not settings.attacks:
        return {}
    check_task(settings, ctx.bench.task)
    out = {}
    if "rank" in settings.attacks:
        images, texts = encode(system, ctx.bench.database, ctx.device, batch_size, int(ctx.cfg.num_workers))
        for name, (members, nonmembers) in rank_sets(ctx).items():
            scores = rank_scores(images, texts, torch.as_tensor(np.r_[members, nonmembers]))
            out.update(reported(f"audit/rank/{name}", scores[: len(members)], scores[len(members) :], settings))
    on_population = [a for a in settings.attacks if a not in RETRIEVAL_ONLY]
    if on_population:
        out.update(population_attacks(system, ctx, settings, on_population, batch_size))
    return {**out, **primary_aliases(out, settings.primary)}


def population_attacks(system, ctx, settings: AuditSettings, attacks: list[str], batch_size: int) -> dict:
    """The attacks that score examples of P, on both sets (and, with `pooled`, leave-one-out over the references)."""
    pop = population(ctx.bench)
    stats = Statistics(ctx, pop, settings, batch_size)
    target = stats.observe(stats.outputs(system, pop.data))
    classes = pop.data.labels if pop.data.labels.dim() == 1 else None
    refs, inside = [], np.zeros((0, len(pop.data)), dtype=bool)
    if settings.pooled or USES_REFERENCES & set(attacks):
        found = reference_models(ctx, pop, int(settings.references), int(settings.reference_seed), stats.outputs)
        refs, inside = [stats.observe(o) for o in found.outputs], found.inside
    sets, in_pool = audit_sets(ctx, pop), np.arange(len(pop.data)) >= pop.n_train
    forget = ctx.forget_set.of(pop.data).numpy()
    sources = source_ids(ctx.bench, pop.data) if settings.bootstrap_by_source else None
    out = {}
    for attack in attacks:
        scores = attack_scores(attack, target, refs, inside, in_pool, settings, classes)
        for name, (members, nonmembers) in sets.items():
            groups = (None, None) if sources is None else (sources[members], sources[nonmembers])
            out.update(reported(f"audit/{attack}/{name}", scores[members], scores[nonmembers], settings, groups))
        if settings.pooled:
            out.update(leave_one_out(attack, refs, inside, forget, settings, classes, sources))
    return out


def primary_aliases(metrics: dict, primary: str) -> dict:
    """The primary attack's scalar keys again under `audit/primary/...`, so tables read one name."""
    head = f"audit/{primary}/"
    return {
        "audit/primary/" + key[len(head) :]: value
        for key, value in metrics.items()
        if key.startswith(head) and not isinstance(value, torch.Tensor)
    }
