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

import torch

from ppp.cache import index_digest
from ppp.config import CONF_DIR
from ppp.data.base import Benchmark, carries_any, item_roots, root_indices
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
    requests: int = setting(integer(1))  # > 1: the items deleted in this many successive requests (a stream)

    def check(self, path: str) -> None:
        if self.requests > 1 and self.kind == "classes":
            raise ConfigError(
                f"{path}.requests={self.requests}: a stream of requests deletes items; use forget_set=share"
            )
        if self.requests > 1 and self.kind == "contributor" and self.requests != len(self.contributors):
            raise ConfigError(
                f"{path}.requests={self.requests}: a contributor stream deletes one contributor a request; "
                f"{path}.contributors names {len(self.contributors)}"
            )


@dataclass(frozen=True)
class ForgetSet:
    """The forget classes (class sets) or the forgotten training positions (item sets); `of` tells its items."""

    kind: str
    classes: list[int]  # class indices; empty for an item set
    positions: torch.Tensor | None  # sorted positions in the training split; None for a class set or a union
    root: torch.Tensor | None  # the same items as root indices (their identity in keys)
    earlier: torch.Tensor | None = None  # a stream's request: the root indices earlier requests deleted

    @property
    def by_class(self) -> bool:
        return self.root is None

    def of(self, data) -> torch.Tensor:
        """Which items of `data` (the training split or a subset of its base) are in the forget set."""
        if self.by_class:
            return carries_any(data.labels, self.classes)
        return torch.isin(item_roots(data), self.root)

    def gone(self, data) -> torch.Tensor:
        """Which items of `data` are deleted once this request is done: its own and the earlier requests'."""
        mine = self.of(data)
        return mine if self.earlier is None else mine | torch.isin(item_roots(data), self.earlier)

    @property
    def deleted(self) -> ForgetSet:
        """Everything deleted once this request is done, as one item set (itself when nothing came before)."""
        if self.earlier is None:
            return self
        return ForgetSet(self.kind, [], None, torch.cat([self.earlier, self.root]).sort().values)

    @property
    def swapped(self) -> list[int] | None:
        """The classes a relabelling method (Amnesiac, SalUn) takes off a forget sample: the forget classes, or
        for an item set every class the item carries (None)."""
        return self.classes if self.by_class else None

    def excluded(self, class_names: list[str]) -> list[str] | dict:
        """What Retrain leaves out, as its cache key names it: the sorted class names (the key of every class
        Retrain cached before issue 22), or the digest of every deleted item's root index, sorted (so a stream's
        Retrain after request j is the Retrain of one request for the same items)."""
        if self.by_class:
            return sorted(class_names)
        root = self.deleted.root
        return {"items": index_digest(root.sort().values), "count": len(root)}

    @property
    def identity(self) -> dict:
        """An item set's identity in what is measured on it: its own items and everything deleted so far."""
        return {"request": index_digest(self.root.sort().values), "deleted": self.excluded([])}


def requests(whole: ForgetSet, count: int, seed: int, contributors: list[int], owner=None) -> list[ForgetSet]:
    """`whole` split into `count` successive requests, each knowing what the earlier ones deleted: one contributor
    a request in the order named (`owner`: each training position's contributor), else a seeded random partition
    of the items into near-equal parts."""
    if count == 1:
        return [whole]
    if owner is not None:
        parts = [whole.positions[owner[whole.positions] == c] for c in contributors]
    else:
        order = torch.randperm(len(whole.positions), generator=torch.Generator().manual_seed(seed))
        parts = [whole.positions[chunk].sort().values for chunk in torch.tensor_split(order, count)]
    if any(len(part) == 0 for part in parts):
        raise ConfigError(f"forget_set.requests={count}: {len(whole.positions)} items leave a request empty")
    position_root = dict(zip(whole.positions.tolist(), whole.root.tolist()))
    out, done = [], []
    for part in parts:
        root = torch.tensor([position_root[p] for p in part.tolist()])
        out.append(ForgetSet(whole.kind, [], part, root, torch.tensor(done, dtype=torch.long) if done else None))
        done += root.tolist()
    return out


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
    """Training positions, one integer per line (blank lines and `#` comments skipped), distinct, in range. A
    relative path is read from the working directory, else from the shipped lists in `ppp/conf/forget_set/`."""
    if not path:
        raise ConfigError("forget_set.kind=pairs needs forget_set.ids_file: a file of training positions, one a line")
    shipped = CONF_DIR / "forget_set" / path
    try:
        lines = (Path(path) if Path(path).exists() or not shipped.exists() else shipped).read_text().splitlines()
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
