"""What a deletion request names (issue 22): whole classes, or items of the training split.

`forget_set.kind` is `classes` (the run's `forget` list, as before: its run hashes and cache keys are unchanged),
`pairs` (training positions listed in a file), `share` (a seeded random share of the training items) or
`contributor` (every training item of some contributors of a dataset that has them, `dataset.contributors`).
An item set names positions in the training split; its identity in keys is the items' root indices, so the
same items asked for in two ways share one Retrain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ppp.cache import index_digest
from ppp.data.base import Benchmark, carries_any, root_indices
from ppp.errors import ConfigError
from ppp.schema import distinct_integers, integer, number, one_of, read, schema, setting

KINDS = ("classes", "pairs", "share", "contributor")


@schema
class ForgetSetSettings:
    """`forget_set` in config.yaml; the keys of the kinds not chosen are ignored."""

    kind: str = setting(one_of(*KINDS))
    ids_file: str | None = setting(default=None)
    share: float = setting(number(0, 1, low_open=True))
    share_seed: int = setting(integer(0))
    contributors: list[int] = setting(distinct_integers(0))

    item_kinds: ClassVar[tuple[str, ...]] = KINDS[1:]


@dataclass(frozen=True)
class ForgetSet:
    """The forget classes (class sets) or the forgotten training positions (item sets); `of` tells its items."""

    kind: str
    classes: list[int]  # class indices; empty for an item set
    positions: torch.Tensor | None  # sorted positions in the training split; None for a class set
    root: torch.Tensor | None  # the same items as root indices (their identity in keys)

    @property
    def by_class(self) -> bool:
        return self.positions is None

    def of(self, data) -> torch.Tensor:
        """Which items of `data` (the training split or a subset of its base) are in the forget set."""
        if self.by_class:
            return carries_any(data.labels, self.classes)
        return torch.isin(root_indices(data), self.root)

    @property
    def swapped(self) -> list[int] | None:
        """The classes a relabelling method (Amnesiac, SalUn) takes off a forget sample: the forget classes, or
        for an item set every class the item carries (None)."""
        return self.classes if self.by_class else None

    def excluded(self, class_names: list[str]) -> list[str] | dict:
        """What Retrain leaves out, as its cache key names it: the sorted class names (the key of every class
        Retrain cached before issue 22), or the items' root-index digest."""
        if self.by_class:
            return sorted(class_names)
        return {"items": index_digest(self.root), "count": len(self.root)}


def forget_set(cfg, bench: Benchmark) -> ForgetSet:
    """The run's forget set, with a one-line `ConfigError` for a request the benchmark cannot serve."""
    settings = read(ForgetSetSettings, cfg.forget_set) if "forget_set" in cfg else None
    kind = "classes" if settings is None else settings.kind
    if kind == "classes":
        return ForgetSet("classes", bench.class_indices(list(cfg.forget)), None, None)
    n = len(bench.train)
    if kind == "pairs":
        positions = ids_from_file(settings.ids_file, n)
    elif kind == "share":
        count = round(settings.share * n)
        if not 1 <= count < n:
            raise ConfigError(f"forget_set.share={settings.share}: {count} of {n} training items; need 1 to {n - 1}")
        gen = torch.Generator().manual_seed(int(settings.share_seed))
        positions = torch.randperm(n, generator=gen)[:count]
    else:
        positions = contributor_positions(bench, list(settings.contributors))
    positions = positions.sort().values
    return ForgetSet(kind, [], positions, root_indices(bench.train)[positions])


def ids_from_file(path: str | None, n: int) -> torch.Tensor:
    """Training positions, one integer per line (blank lines and `#` comments skipped), distinct, in range."""
    if not path:
        raise ConfigError("forget_set.kind=pairs needs forget_set.ids_file: a file of training positions, one a line")
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise ConfigError(f"forget_set.ids_file={path}: cannot read it ({err.strerror})") from None
    ids = []
    for number_, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.lstrip("-").isdigit() or not 0 <= int(text) < n:
            raise ConfigError(
                f"forget_set.ids_file={path}, line {number_}: '{text}' is no training position 0..{n - 1}"
            )
        ids.append(int(text))
    if not ids or len(set(ids)) != len(ids) or len(ids) == n:
        raise ConfigError(
            f"forget_set.ids_file={path}: needs 1 to {n - 1} distinct positions, got {len(ids)} ({len(set(ids))} distinct)"
        )
    return torch.tensor(ids)


def contributor_positions(bench: Benchmark, contributors: list[int]) -> torch.Tensor:
    """The training positions of the contributors' items (`info["contributors"]`, aligned with root indices)."""
    owner = bench.info.get("contributors")
    if owner is None:
        raise ConfigError(
            f"forget_set.kind=contributor needs a dataset with contributors (e.g. dataset.contributors=24); "
            f"dataset '{bench.name}' has none"
        )
    held_out = set(bench.info.get("held_out_contributors", []))
    count = max(owner) + 1
    for c in contributors:
        if c >= count or c in held_out:
            raise ConfigError(
                f"forget_set.contributors: {c} is no training contributor (0..{count - 1} without held-out {sorted(held_out)})"
            )
    of_train = torch.as_tensor(owner)[root_indices(bench.train)]
    return torch.nonzero(torch.isin(of_train, torch.tensor(contributors))).flatten()
