"""Embedded datasets built from scikit-learn's bundled handwritten digits: nothing to download (version 2).

`digit_scenes` mimics multi-label image-text retrieval data (COCO-like): each image is a canvas
holding 1-3 digit glyphs, each in a named colour (PALETTE); its caption names every digit with its colour and
position ("a red six at the top left and a green two at the bottom"), so that most captions are unique, as
real captions are; its label is multi-hot. Scenes draw from fixed *topics* of co-occurring classes, so that
some classes are semantic neighbours of each other (as dog/frisbee/person in COCO) and others are distant.
Every split draws its glyphs from a pool of its own (`glyph_pools`): training, validation, the queries, the
database items outside training and the two zero-shot draws share no glyph, so that no held-out image is a
recoloured twin of a training one (membership attacks need non-members the model never saw).
A harder caption variant (off by default) is closer to real captions, where a class is not one word
and not every annotated object is named: `surface_forms` names a digit by one of several forms (the
word, the numeral, synonyms) and `mention_prob` names each present digit only with that probability
(the label still carries it). It draws from its own random stream, so the scenes, images and labels
are those of the default data and only the captions change.
`domains` (off by default) renders each scene in one of a few styles (DOMAINS: `ink` as drawn,
`negative` inverted, `outline` the glyphs' edges) and names the style in its caption ("a negative image
of ..."); the styles, too, come from a stream of their own, so the scenes and labels stay the default's.
`contributors` (off by default) has each scene drawn by one of a few contributors with a recognisable hand:
its own subset of each class's glyphs in each split's pool and a habitual colour (`Hand`); the last
`held_out_contributors` of them draw no training scene, so that their hand is unseen by a trained model.
`one_digit_images` draws single-glyph scenes with the same generator: zero-shot images, where chance is
one in ten; its `test` and `val` draws come from streams and glyph pools of their own.
`digits` is the same glyphs as a single-label classification set, enlarged by seeded random affine
jitter so that every class has enough test and validation images; its glyphs, too, are split first.
Every benchmark records in `info["glyphs"]` the sklearn glyph ids of each item (indexed like its in-memory
dataset), so that tests can check that no two splits share a glyph.
"""

from __future__ import annotations

import functools
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ppp.data.base import (
    Benchmark,
    DatasetSettings,
    InMemoryImages,
    InMemoryPairs,
    split_indices,
    stratified_partition,
)
from ppp.errors import ConfigError
from ppp.schema import boolean, distinct_subset_of, integer, number, schema, setting

VERSION = 2  # what the builders build; `dataset.version` must name it (version 1 shared glyphs across splits)

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# The random streams ([seed, stream]) of draws that must not move when another key changes.
STREAMS = {
    "captions": 1,
    "domains": 2,
    "zeroshot_test": 3,
    "zeroshot_val": 4,
    "glyphs": 5,
    "contributors": 6,  # which contributor drew each scene
    "hands": 7,  # each contributor's glyph subsets and colour
}

# digit_scenes' glyph pools: each held-out split's share of every class's glyphs; training keeps the rest (0.5).
# `database` holds the glyphs of the database items outside the training set.
SCENE_GLYPH_SHARES = {"query": 0.1, "val": 0.1, "database": 0.1, "zeroshot_test": 0.1, "zeroshot_val": 0.1}
SCENE_POOLS = ("database", "train", "query", "val")  # the pools digit_scenes' scenes draw from, in `pool_of`'s order

# Fixed co-occurrence topics (indices into DIGIT_NAMES). Overlapping on purpose: 'eight' sits in two.
DEFAULT_TOPICS = [[0, 6, 8], [1, 4, 7], [2, 3, 5], [8, 9, 3]]

TEMPLATES = [
    "a picture of {}",
    "{} written by hand",
    "handwritten {}",
    "a scene with {}",
    "digits {} on a dark background",
    "there is {} in this image",
    "an image showing {}",
    "{}",
]

# The harder variant's surface forms: the word, the numeral and a few synonyms per class.
SURFACE_FORMS = {
    "zero": ["zero", "0", "nought", "nil"],
    "one": ["one", "1", "single", "unit"],
    "two": ["two", "2", "pair", "couple"],
    "three": ["three", "3", "trio", "triple"],
    "four": ["four", "4", "quartet", "quad"],
    "five": ["five", "5", "quintet", "fivesome"],
    "six": ["six", "6", "half dozen", "sextet"],
    "seven": ["seven", "7", "septet", "heptad"],
    "eight": ["eight", "8", "octet", "octad"],
    "nine": ["nine", "9", "nonet", "ennead"],
}
UNNAMED = "some digits"  # the caption's object when no present digit is named

# A glyph's colour: one of these RGB tints, each channel moved by up to COLOUR_JITTER, so the word stays true.
PALETTE = {
    "red": (1.0, 0.2, 0.2),
    "green": (0.2, 1.0, 0.2),
    "blue": (0.3, 0.45, 1.0),
    "yellow": (1.0, 1.0, 0.2),
    "cyan": (0.2, 1.0, 1.0),
    "magenta": (1.0, 0.25, 1.0),
    "white": (1.0, 1.0, 1.0),
}
COLOUR_JITTER = 0.05

# Where a cell lies, in thirds of the canvas (row: top / middle / bottom, column: left / centre / right).
POSITIONS = [
    ["at the top left", "at the top", "at the top right"],
    ["on the left", "in the middle", "on the right"],
    ["at the bottom left", "at the bottom", "at the bottom right"],
]

CELL = 8  # sklearn glyphs are 8x8

DOMAINS = ("ink", "negative", "outline")  # the renderings `dataset.domains` may name
DOMAIN_CAPTION = "a {domain} image of {caption}"


class Placed(NamedTuple):
    """One glyph of a scene: its class, sklearn glyph id, colour word and grid cell."""

    cls: int
    glyph: int
    colour: str
    cell: int


class Hand(NamedTuple):
    """A contributor's habits within one split: per class, its own subset of the split's glyph pool, and the
    PALETTE colour it tints a glyph with, with probability `colour_prob` (else a random one, as without it)."""

    glyphs: list[np.ndarray]
    colour: str
    colour_prob: float


def check_version(path: str, value) -> None:
    """`dataset.version` names the data a run was made on; only the current one can be built (no old code)."""
    if value != VERSION:
        raise ConfigError(
            f"{path}={value}: only version {VERSION} of the embedded digit data is built (see docs/datasets.md)"
        )


def check_contributors(path: str, contributors: int, held_out: int) -> None:
    """Held-out contributors are some of the contributors, and at least one contributor draws training scenes."""
    if contributors == 0 and held_out != 0:
        raise ConfigError(f"{path}.held_out_contributors={held_out} must be 0 when {path}.contributors=0")
    if contributors > 0 and held_out >= contributors:
        raise ConfigError(
            f"{path}.held_out_contributors={held_out} must be < {path}.contributors={contributors} "
            "(some contributor must draw the training scenes)"
        )


@functools.cache
def _load_glyphs() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    glyphs, targets = (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)
    glyphs.flags.writeable = targets.flags.writeable = False  # cached: shared by every caller
    return glyphs, targets


def glyph_pools(seed: int) -> dict[str, list[np.ndarray]]:
    """digit_scenes' disjoint glyph pools (SCENE_GLYPH_SHARES, training the rest), seeded by the dataset's seed:
    per pool, the sklearn glyph ids of each class."""
    _, targets = _load_glyphs()
    pools = stratified_partition(targets, SCENE_GLYPH_SHARES, [seed, STREAMS["glyphs"]], rest="train")
    return {name: [pool[targets[pool] == c] for c in range(10)] for name, pool in pools.items()}


def contributor_hands(
    pools: dict[str, list[np.ndarray]], contributors: int, glyph_share: float, colour_prob: float, seed: int
) -> dict[str, list[Hand]]:
    """Each contributor's `Hand` in each split pool (`glyph_pools`), from a stream of its own: per class a
    random `glyph_share` of that pool's glyphs (at least one), so hands keep the pools disjoint."""
    rng = np.random.default_rng([seed, STREAMS["hands"]])
    colours = [list(PALETTE)[i] for i in rng.integers(len(PALETTE), size=contributors)]

    def own(by_class: list[np.ndarray]) -> list[np.ndarray]:  # one contributor's glyphs of each class of a pool
        return [np.sort(rng.choice(p, max(1, round(glyph_share * len(p))), replace=False)) for p in by_class]

    return {name: [Hand(own(by_class), c, colour_prob) for c in colours] for name, by_class in pools.items()}


def draw_contributors(n_total: int, train: np.ndarray, contributors: int, held_out: int, seed: int) -> np.ndarray:
    """Each scene's contributor, uniform and from a stream of its own; training scenes only from the first
    `contributors - held_out`, so the held-out ones draw only queries, validation and other database items."""
    rng = np.random.default_rng([seed, STREAMS["contributors"]])
    ids = rng.integers(contributors, size=n_total)
    ids[train] = rng.integers(contributors - held_out, size=len(train))
    return ids


def position(cell: int, grid: int) -> str:
    """The words for where `cell` of a `grid` x `grid` canvas lies (its centre's third of each axis)."""
    r, c = divmod(cell, grid)
    return POSITIONS[min(2, int(3 * (r + 0.5) / grid))][min(2, int(3 * (c + 0.5) / grid))]


def _word_list(mentions: list[str], rng: np.random.Generator) -> str:
    """Mentions in random order, joined in one of two natural styles ("A, B and C" or "A and B and C")."""
    mentions = [mentions[i] for i in rng.permutation(len(mentions))]
    if rng.integers(2) == 0 and len(mentions) > 1:
        return ", ".join(mentions[:-1]) + " and " + mentions[-1]
    return " and ".join(mentions)


def scene_mentions(
    placed: list[Placed], grid: int, surface_forms: bool, mention_prob: float, rng: np.random.Generator
) -> list[str]:
    """What a caption says about a scene's glyphs: each named with probability `mention_prob`, with its colour
    and position, by its word or (with `surface_forms`) by one of its SURFACE_FORMS; [UNNAMED] when none is."""
    named = [p for p in placed if mention_prob >= 1.0 or rng.random() < mention_prob]
    mentions = []
    for p in named:
        forms = SURFACE_FORMS[DIGIT_NAMES[p.cls]] if surface_forms else [DIGIT_NAMES[p.cls]]
        form = forms[rng.integers(len(forms))] if len(forms) > 1 else forms[0]
        mentions.append(f"a {p.colour} {form} {position(p.cell, grid)}")
    return mentions or [UNNAMED]


def sample_scene_classes(
    n: int, topics: list[list[int]], topic_prob: float, rng: np.random.Generator, num_classes: int = 10
) -> list[list[int]]:
    """Class sets of `n` scenes: 1-3 classes each, drawn from one topic with probability `topic_prob`."""
    scenes = []
    for _ in range(n):
        count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
        if rng.random() < topic_prob:
            topic = topics[rng.integers(len(topics))]
            pool = np.asarray(topic)
        else:
            pool = np.arange(num_classes)
        count = min(count, len(pool))
        scenes.append(sorted(rng.choice(pool, size=count, replace=False).tolist()))
    return scenes


def glyph_colour(rng: np.random.Generator, hand: Hand | None) -> str:
    """A glyph's colour word: the hand's habit with its probability, else a random PALETTE colour (the only
    draw without a hand, so that the default data stays as it was)."""
    if hand is not None and rng.random() < hand.colour_prob:
        return hand.colour
    return list(PALETTE)[rng.integers(len(PALETTE))]


def render_scene(
    classes: list[int], pools: list[np.ndarray], rng: np.random.Generator, grid: int, hand: Hand | None = None
) -> tuple[np.ndarray, list[Placed]]:
    """A (3, grid*8, grid*8) uint8 canvas with one glyph per class at distinct random cells, each drawn from
    its class's pool (sklearn glyph ids) and tinted by a jittered PALETTE colour; and what was placed where.
    A contributor's `hand` (of the same split) narrows each pool to its own subset and brings its colour habit."""
    glyphs, _ = _load_glyphs()
    pools = pools if hand is None else hand.glyphs
    size = grid * CELL
    canvas = rng.normal(0.04, 0.02, size=(3, size, size)).clip(0, 1).astype(np.float32)
    cells = rng.choice(grid * grid, size=len(classes), replace=False)
    placed = []
    for cls, cell in zip(classes, cells):
        glyph = int(pools[cls][rng.integers(len(pools[cls]))])
        colour = glyph_colour(rng, hand)
        tint = (np.asarray(PALETTE[colour]) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3)).clip(0, 1)
        r, c = divmod(int(cell), grid)
        patch = canvas[:, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL]
        np.maximum(patch, tint.astype(np.float32)[:, None, None] * glyphs[glyph][None], out=patch)
        placed.append(Placed(int(cls), glyph, colour, int(cell)))
    return (canvas * 255).round().astype(np.uint8), placed


def render_domain(image: np.ndarray, domain: str) -> np.ndarray:
    """A (3, H, W) uint8 scene as `domain` renders it: `ink` unchanged, `negative` inverted, `outline`
    the morphological gradient (3x3 dilation minus erosion), i.e. hollow strokes on a dark canvas."""
    if domain == "ink":
        return image
    if domain == "negative":
        return 255 - image
    if domain == "outline":
        x = torch.from_numpy(image).float()[None]
        edges = F.max_pool2d(x, 3, 1, 1) + F.max_pool2d(-x, 3, 1, 1)
        return edges[0].round().to(torch.uint8).numpy()
    raise ValueError(f"unknown domain '{domain}'")


def one_digit_images(
    per_class: int,
    grid: int = 4,
    seed: int = 0,
    domains: list[str] | None = None,
    split: str = "test",
    *,
    dataset_seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`per_class` one-glyph scenes of every class in every domain (`ink` alone without domains), drawn as
    `digit_scenes` draws its scenes: images (N, 3, H, W) uint8, classes (N,), domain indices (N,) into
    `domains` and sklearn glyph ids (N,), ordered domain, class, draw. `split` picks the stream and the glyph
    pool of `digit_scenes(seed=dataset_seed)` (`glyph_pools`): `val` images, on which hyperparameters are
    chosen, are other scenes than the reported `test` ones, and neither shares a glyph with any split."""
    rng = np.random.default_rng([seed, STREAMS[f"zeroshot_{split}"]])
    pools = glyph_pools(dataset_seed)[f"zeroshot_{split}"]
    images, classes, domain_idx, glyphs = [], [], [], []
    for d, domain in enumerate(domains or ["ink"]):
        for c in range(10):
            for _ in range(per_class):
                image, placed = render_scene([c], pools, rng, grid)
                images.append(render_domain(image, domain))
                classes.append(c)
                domain_idx.append(d)
                glyphs.append(placed[0].glyph)
    return torch.from_numpy(np.stack(images)), torch.tensor(classes), torch.tensor(domain_idx), torch.tensor(glyphs)


@schema
class DigitScenesSettings(DatasetSettings):
    """`dataset=digit_scenes`; the harder-caption, domain and contributor keys (added later) default to off."""

    task: ClassVar[str] = "retrieval"
    version: int = setting(check_version)
    seed: int = setting(integer(0))
    n_total: int = setting(integer(1))
    n_query: int = setting(integer(0))
    n_train: int = setting(integer(0))
    n_val: int = setting(integer(0))
    grid: int = setting(integer(1))
    topic_prob: float = setting(number(0, 1))
    surface_forms: bool = setting(boolean(), default=False)
    mention_prob: float = setting(number(0, 1, low_open=True), default=1.0)
    domains: list[str] | None = setting(distinct_subset_of(*DOMAINS, optional=True), default=None)
    contributors: int = setting(integer(0), default=0)
    held_out_contributors: int = setting(integer(0), default=0)
    hand_colour_prob: float = setting(number(0, 1), default=0.8)
    hand_glyph_share: float = setting(number(0, 1, low_open=True), default=0.3)

    def check(self, path: str) -> None:
        check_contributors(path, self.contributors, self.held_out_contributors)


def digit_scenes(
    n_total: int = 6500,
    n_query: int = 1000,
    n_train: int = 2500,
    n_val: int = 1000,
    grid: int = 4,
    topic_prob: float = 0.5,
    topics: list[list[int]] | None = None,
    seed: int = 0,
    surface_forms: bool = False,
    mention_prob: float = 1.0,
    domains: list[str] | None = None,
    version: int = VERSION,
    contributors: int = 0,
    held_out_contributors: int = 0,
    hand_colour_prob: float = 0.8,
    hand_glyph_share: float = 0.3,
) -> Benchmark:
    """`n_total` scenes split by the DSPH protocol (`split_indices`); each scene's glyphs come from its split's
    pool (`glyph_pools`: queries, validation queries, training pairs and the other database items), and with
    `contributors` through its contributor's hand there (`contributor_hands`, `draw_contributors`)."""
    check_version("dataset.version", version)
    check_contributors("dataset", contributors, held_out_contributors)
    rng = np.random.default_rng(seed)
    topics = DEFAULT_TOPICS if topics is None else [list(t) for t in topics]
    pools = glyph_pools(seed)
    idx = split_indices(n_total, n_query, n_train, seed, n_val)
    pool_of = np.empty(n_total, dtype=object)
    for name in SCENE_POOLS:  # the database's training items draw from training's pool
        pool_of[idx[name]] = name
    scenes = sample_scene_classes(n_total, topics, topic_prob, rng)
    hand_of, hand_info = [None] * n_total, {}
    if contributors:  # each scene's contributor and its hand, from streams of their own
        scene_pools = {name: pools[name] for name in SCENE_POOLS}
        hands = contributor_hands(scene_pools, contributors, hand_glyph_share, hand_colour_prob, seed)
        drawn_by = draw_contributors(n_total, idx["train"], contributors, held_out_contributors, seed)
        hand_of = [hands[pool_of[i]][c] for i, c in enumerate(drawn_by)]
        held_out = list(range(contributors - held_out_contributors, contributors))
        hand_info = {"contributors": drawn_by.tolist(), "held_out_contributors": held_out}
    rendered = [render_scene(s, pools[pool_of[i]], rng, grid, hand_of[i]) for i, s in enumerate(scenes)]
    images = np.stack([image for image, _ in rendered])
    caption_rng = np.random.default_rng([seed, STREAMS["captions"]])  # the harder captions' draws
    mentions = [scene_mentions(placed, grid, surface_forms, mention_prob, caption_rng) for _, placed in rendered]
    texts = [TEMPLATES[rng.integers(len(TEMPLATES))].format(_word_list(m, rng)) for m in mentions]
    if domains:  # each scene's rendering, from a stream of its own
        drawn = np.random.default_rng([seed, STREAMS["domains"]]).integers(len(domains), size=n_total)
        images = np.stack([render_domain(image, domains[d]) for image, d in zip(images, drawn)])
        texts = [DOMAIN_CAPTION.format(domain=domains[d], caption=t) for t, d in zip(texts, drawn)]
    labels = np.zeros((n_total, 10), dtype=np.float32)
    for i, s in enumerate(scenes):
        labels[i, s] = 1.0
    pairs = InMemoryPairs(torch.from_numpy(images), texts, torch.from_numpy(labels))
    return Benchmark(
        name="digit_scenes",
        class_names=list(DIGIT_NAMES),
        task="retrieval",
        train=pairs.subset(idx["train"]),
        query=pairs.subset(idx["query"]),
        database=pairs.subset(idx["database"]),
        val=pairs.subset(idx["val"]),
        info={
            "topics": [[DIGIT_NAMES[c] for c in t] for t in topics],
            "surface_forms": surface_forms,
            "mention_prob": mention_prob,
            "domains": list(domains or []),
            "glyphs": [[p.glyph for p in placed] for _, placed in rendered],
            **hand_info,
        },
    )


def jitter(
    glyphs: torch.Tensor, size: int, shift: float, rotation: float, scale: float, gen: torch.Generator
) -> torch.Tensor:
    """(N, 8, 8) glyphs in [0, 1] -> (N, 3, size, size) uint8, each upscaled and moved by its own random
    affine map: a shift of up to `shift` of the image size, a rotation of up to `rotation` degrees and a
    zoom within 1 +- `scale`."""
    n = len(glyphs)
    images = F.interpolate(glyphs[:, None], size=(size, size), mode="bilinear", align_corners=False)
    angle = torch.deg2rad((2 * torch.rand(n, generator=gen) - 1) * rotation)
    zoom = 1 + (2 * torch.rand(n, generator=gen) - 1) * scale
    offset = (2 * torch.rand(n, 2, generator=gen) - 1) * 2 * shift  # affine_grid's coordinates span 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (images.clamp(0, 1).repeat(1, 3, 1, 1) * 255).round().to(torch.uint8)


@schema
class DigitsSettings(DatasetSettings):
    """`dataset=digits`."""

    task: ClassVar[str] = "classification"
    version: int = setting(check_version)
    seed: int = setting(integer(0))
    per_class: int = setting(integer(1))
    test_fraction: float = setting(number(0, 1))
    val_fraction: float = setting(number(0, 1))
    population_fraction: float = setting(number(0, 1))
    population_per_class: int = setting(integer(0))
    size: int = setting(integer(1))
    shift: float = setting(number(0))
    rotation: float = setting(number(0))
    scale: float = setting(number(0))


def digits(
    per_class: int = 400,
    test_fraction: float = 0.2,
    val_fraction: float = 0.25,
    population_fraction: float = 0.2,
    population_per_class: int = 160,
    size: int = 32,
    shift: float = 0.1,
    rotation: float = 10.0,
    scale: float = 0.1,
    seed: int = 0,
    version: int = VERSION,
) -> Benchmark:
    """`per_class` single-label images of each digit (train, validation and test), `size` px, by seeded affine
    jitter of sklearn's glyphs, plus `population_per_class` further non-members (`Benchmark.population`).

    The 1,797 glyphs are split first, per class: `test_fraction` to test, `population_fraction` to the
    population, `val_fraction` of the rest to validation, the remainder to training. Each split is then
    filled with its images from its own glyphs only (each glyph used about equally often), so that no
    held-out image is a jittered twin of a training glyph.
    """
    check_version("dataset.version", version)
    glyphs, targets = _load_glyphs()
    val_share = val_fraction * (1 - test_fraction - population_fraction)
    shares = {"test": test_fraction, "population": population_fraction, "val": val_share}
    pools = stratified_partition(targets, shares, [seed, STREAMS["glyphs"]], rest="train")
    n_test = int(round(test_fraction * per_class))
    n_val = int(round(val_fraction * (per_class - n_test)))
    counts = {"train": per_class - n_test - n_val, "val": n_val, "test": n_test, "population": population_per_class}
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    parts = {}
    for name, count in counts.items():
        by_class = [pools[name][targets[pools[name]] == c] for c in range(10)]
        if count and not all(len(p) for p in by_class):
            raise ConfigError(
                f"dataset: the {name} split needs {count} images per class but has no glyph of some class"
            )
        parts[name] = np.concatenate([np.resize(rng.permutation(p), count) for p in by_class])
    chosen = np.concatenate(list(parts.values()))
    images = jitter(torch.from_numpy(glyphs[chosen]), size, shift, rotation, scale, gen)
    data = InMemoryImages(images, torch.from_numpy(targets[chosen]))
    bounds = np.cumsum([0, *map(len, parts.values())])
    splits = {name: data.subset(np.arange(a, b)) for name, a, b in zip(parts, bounds[:-1], bounds[1:])}
    return Benchmark(
        name="digits",
        class_names=list(DIGIT_NAMES),
        task="classification",
        train=splits["train"],
        test=splits["test"],
        val=splits["val"],
        population=splits["population"] if population_per_class else None,
        info={"glyphs": [[int(g)] for g in chosen]},
    )
