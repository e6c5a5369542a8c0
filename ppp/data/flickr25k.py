"""MIRFlickr-25K as 24-class multi-label image-tag retrieval.

Labels come from the 24 "potential" annotation files (`annotations/<label>.txt`, 1-based image
numbers; the `_r1` "relevant" files are not used); the text of an image is its user tags joined
by spaces. Two protocols, both one seeded permutation cut by `split_indices` (whose `n_val`
validation queries leave the database):
- `dsph` (default): every image with >=1 label; 5,000 queries, 10,000 train, database = the rest.
- `dcmh`: 2,000 queries, database = the rest, 10,000 train from it. DCMH's own 20,015-pair set
  also drops tags seen fewer than 20 times; here an image needs >=1 label and >=1 tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ppp.data.base import Benchmark, DatasetSettings
from ppp.data.files import ImageTextFiles, Source, multi_hot, retrieval_benchmark
from ppp.errors import choose
from ppp.schema import boolean, integer, one_of, schema, setting

SOURCE = Source(
    name="flickr25k",
    layout="<root>/mirflickr/im<N>.jpg (or <root>/im<N>.jpg), <root>/mirflickr/meta/tags/tags<N>.txt "
    "(or <root>/meta/tags) and <root>/annotations/<label>.txt",
    url="https://press.liacs.nl/mirflickr/mirdownload.html (mirflickr25k.zip and mirflickr25k_annotations_v080.zip)",
)

DEFAULT_QUERIES = {"dsph": 5000, "dcmh": 2000}


def _label_files(annotations: Path) -> list[Path]:
    """The 24 potential-label files: every .txt but README and the stricter `_r1` variants."""
    files = sorted(p for p in annotations.glob("*.txt") if not p.stem.endswith("_r1") and p.stem.lower() != "readme")
    if not files:
        raise SOURCE.missing(annotations / "<label>.txt")
    return files


def _read_numbers(path: Path) -> set[int]:
    return {int(line) for line in path.read_text().split()}


def _read_tags(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [t for t in (line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()) if t]


@schema
class Flickr25kSettings(DatasetSettings):
    """`dataset=flickr25k` (docs/datasets.md)."""

    task: ClassVar[str] = "retrieval"
    root: str = setting()
    protocol: str = setting(one_of("dsph", "dcmh"))
    n_query: int | None = setting(integer(0, optional=True))
    n_train: int = setting(integer(0))
    n_val: int = setting(integer(0))
    split_seed: int = setting(integer(0))
    skip_bad_images: bool = setting(boolean())


def flickr25k(
    root: str,
    protocol: str = "dsph",
    n_query: int | None = None,
    n_train: int = 10000,
    n_val: int = 2000,
    split_seed: int = 1814,
    skip_bad_images: bool = False,
) -> Benchmark:
    """`n_query` null means the protocol's own (5,000 for dsph, 2,000 for dcmh)."""
    choose("flickr25k protocol", protocol, DEFAULT_QUERIES)
    root = SOURCE.root(root)
    image_dir = root / "mirflickr" if (root / "mirflickr").is_dir() else root
    tag_dir = SOURCE.first_existing(image_dir / "meta" / "tags", root / "meta" / "tags")
    label_files = _label_files(SOURCE.require(root / "annotations"))

    class_names = [p.stem for p in label_files]
    members = [_read_numbers(p) for p in label_files]
    numbers = sorted(set().union(*members))
    paths, texts, label_sets = [], [], []
    for number in numbers:
        tags = _read_tags(tag_dir / f"tags{number}.txt")
        if protocol == "dcmh" and not tags:
            continue
        paths.append(image_dir / f"im{number}.jpg")
        texts.append(" ".join(tags))
        label_sets.append([c for c, m in enumerate(members) if number in m])
    if paths:
        SOURCE.require(paths[0])

    pairs = ImageTextFiles(paths, texts, multi_hot(label_sets, len(class_names)), skip_bad_images)
    n_query = DEFAULT_QUERIES[protocol] if n_query is None else n_query
    return retrieval_benchmark("flickr25k", class_names, pairs, n_query, n_train, n_val, split_seed, protocol=protocol)
