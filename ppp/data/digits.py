"""Embedded datasets built from scikit-learn's bundled handwritten digits: nothing to download.

`digit_scenes` mimics multi-label image-text retrieval data (COCO-like): each image is a canvas
holding 1-3 digit glyphs, its caption names the digits in words, its label is multi-hot.
Scenes draw from fixed *topics* of co-occurring classes, so that some classes are semantic
neighbours of each other (as dog/frisbee/person in COCO) and others are distant.
A harder caption variant (off by default) is closer to real captions, where a class is not one word
and not every annotated object is named: `surface_forms` names a digit by one of several forms (the
word, the numeral, synonyms) and `mention_prob` names each present digit only with that probability
(the label still carries it). It draws from its own random stream, so the scenes, images and labels
are those of the default data and only the captions change.
`domains` (off by default) renders each scene in one of a few styles (DOMAINS: `ink` as drawn,
`negative` inverted, `outline` the glyphs' edges) and names the style in its caption ("a negative image
of ..."); the styles, too, come from a stream of their own, so the scenes and labels stay the default's.
`one_digit_images` draws single-glyph scenes with the same generator: zero-shot images, where chance is
one in ten; its `test` and `val` draws come from two streams of their own (ONE_DIGIT_STREAMS).
`digits` is the same glyphs as a single-label classification set, enlarged by seeded random affine
jitter so that every class has enough test and validation images.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ppp.data.base import Benchmark, DatasetSettings, InMemoryImages, InMemoryPairs, split_indices, stratified_split
from ppp.schema import boolean, distinct_subset_of, integer, number, schema, setting

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# The random streams ([seed, stream]) of one_digit_images' draws; 1 and 2 are digit_scenes' caption and domain streams.
ONE_DIGIT_STREAMS = {"test": 3, "val": 4}

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

CELL = 8  # sklearn glyphs are 8x8

DOMAINS = ("ink", "negative", "outline")  # the renderings `dataset.domains` may name
DOMAIN_CAPTION = "a {domain} image of {caption}"


def _load_glyphs() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def _word_list(names: list[str], rng: np.random.Generator) -> str:
    """Names in random order, joined in one of a few natural styles."""
    names = [names[i] for i in rng.permutation(len(names))]
    style = rng.integers(3)
    if style == 0 and len(names) > 1:
        return ", ".join(names[:-1]) + " and " + names[-1]
    if style == 1:
        return " and ".join(f"a {n}" for n in names)
    return " ".join(names)


def scene_mentions(classes: list[int], surface_forms: bool, mention_prob: float, rng: np.random.Generator) -> list[str]:
    """What a caption says about a scene's classes: each named with probability `mention_prob`, by its
    word or (with `surface_forms`) by one of its SURFACE_FORMS; [UNNAMED] when none is named."""
    named = [c for c in classes if mention_prob >= 1.0 or rng.random() < mention_prob]
    forms = [SURFACE_FORMS[DIGIT_NAMES[c]] if surface_forms else [DIGIT_NAMES[c]] for c in named]
    return [f[rng.integers(len(f))] if len(f) > 1 else f[0] for f in forms] or [UNNAMED]


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


def render_scene(
    classes: list[int], glyphs_by_class: list[np.ndarray], rng: np.random.Generator, grid: int
) -> np.ndarray:
    """A (3, grid*8, grid*8) uint8 canvas with one coloured glyph per class at distinct random cells."""
    size = grid * CELL
    canvas = rng.normal(0.04, 0.02, size=(3, size, size)).clip(0, 1).astype(np.float32)
    cells = rng.choice(grid * grid, size=len(classes), replace=False)
    for cls, cell in zip(classes, cells):
        pool = glyphs_by_class[cls]
        glyph = pool[rng.integers(len(pool))]
        colour = rng.uniform(0.5, 1.0, size=3).astype(np.float32)
        r, c = divmod(int(cell), grid)
        patch = canvas[:, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL]
        np.maximum(patch, colour[:, None, None] * glyph[None], out=patch)
    return (canvas * 255).round().astype(np.uint8)


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
    per_class: int, grid: int = 4, seed: int = 0, domains: list[str] | None = None, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`per_class` one-glyph scenes of every class in every domain (`ink` alone without domains), drawn as
    `digit_scenes` draws its scenes: images (N, 3, H, W) uint8, classes (N,) and domain indices (N,)
    into `domains`, ordered domain, class, draw. `split` picks the stream: `val` images, on which
    hyperparameters are chosen, are other scenes than the reported `test` ones (the glyph pool is shared,
    as it is by every split of `digit_scenes`)."""
    rng = np.random.default_rng([seed, ONE_DIGIT_STREAMS[split]])
    glyphs, targets = _load_glyphs()
    glyphs_by_class = [glyphs[targets == c] for c in range(10)]
    images, classes, domain_idx = [], [], []
    for d, domain in enumerate(domains or ["ink"]):
        for c in range(10):
            for _ in range(per_class):
                images.append(render_domain(render_scene([c], glyphs_by_class, rng, grid), domain))
                classes.append(c)
                domain_idx.append(d)
    return torch.from_numpy(np.stack(images)), torch.tensor(classes), torch.tensor(domain_idx)


@schema
class DigitScenesSettings(DatasetSettings):
    """`dataset=digit_scenes`; the harder-caption and domain keys (added later) default to the data of before."""

    task: ClassVar[str] = "retrieval"
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
) -> Benchmark:
    rng = np.random.default_rng(seed)
    topics = DEFAULT_TOPICS if topics is None else [list(t) for t in topics]
    glyphs, targets = _load_glyphs()
    glyphs_by_class = [glyphs[targets == c] for c in range(10)]
    scenes = sample_scene_classes(n_total, topics, topic_prob, rng)
    images = np.stack([render_scene(s, glyphs_by_class, rng, grid) for s in scenes])
    if surface_forms or mention_prob < 1.0:  # the harder captions draw from a stream of their own
        caption_rng = np.random.default_rng([seed, 1])
        mentions = [scene_mentions(s, surface_forms, mention_prob, caption_rng) for s in scenes]
    else:
        mentions = [[DIGIT_NAMES[c] for c in s] for s in scenes]
    texts = [TEMPLATES[rng.integers(len(TEMPLATES))].format(_word_list(m, rng)) for m in mentions]
    if domains:  # each scene's rendering, from a stream of its own
        drawn = np.random.default_rng([seed, 2]).integers(len(domains), size=n_total)
        images = np.stack([render_domain(image, domains[d]) for image, d in zip(images, drawn)])
        texts = [DOMAIN_CAPTION.format(domain=domains[d], caption=t) for t, d in zip(texts, drawn)]
    labels = np.zeros((n_total, 10), dtype=np.float32)
    for i, s in enumerate(scenes):
        labels[i, s] = 1.0
    pairs = InMemoryPairs(torch.from_numpy(images), texts, torch.from_numpy(labels))
    idx = split_indices(n_total, n_query, n_train, seed, n_val)
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
    seed: int = setting(integer(0))
    per_class: int = setting(integer(1))
    test_fraction: float = setting(number(0, 1))
    val_fraction: float = setting(number(0, 1))
    size: int = setting(integer(1))
    shift: float = setting(number(0))
    rotation: float = setting(number(0))
    scale: float = setting(number(0))


def digits(
    per_class: int = 400,
    test_fraction: float = 0.2,
    val_fraction: float = 0.25,
    size: int = 32,
    shift: float = 0.1,
    rotation: float = 10.0,
    scale: float = 0.1,
    seed: int = 0,
) -> Benchmark:
    """`per_class` single-label images of each digit, `size` px, by seeded affine jitter of sklearn's glyphs.

    The 1,797 glyphs are split first, per class: `test_fraction` to test, `val_fraction` of the rest to
    validation, the remainder to training. Each split is then filled with its share of `per_class`
    images from its own glyphs only (each glyph used about equally often), so that no test or
    validation image is a jittered twin of a training glyph.
    """
    glyphs, targets = _load_glyphs()
    rest, test = stratified_split(targets, test_fraction, seed)
    train, val = (rest[part] for part in stratified_split(targets[rest], val_fraction, [seed, 1]))
    n_test = int(round(test_fraction * per_class))
    n_val = int(round(val_fraction * (per_class - n_test)))
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    parts = [
        np.concatenate([np.resize(rng.permutation(pool[targets[pool] == c]), count) for c in range(10)])
        for pool, count in ((train, per_class - n_test - n_val), (val, n_val), (test, n_test))
    ]
    chosen = np.concatenate(parts)
    images = jitter(torch.from_numpy(glyphs[chosen]), size, shift, rotation, scale, gen)
    data = InMemoryImages(images, torch.from_numpy(targets[chosen]))
    bounds = np.cumsum([0, *map(len, parts)])
    train_set, val_set, test_set = (data.subset(np.arange(a, b)) for a, b in zip(bounds[:-1], bounds[1:]))
    return Benchmark(
        name="digits",
        class_names=list(DIGIT_NAMES),
        task="classification",
        train=train_set,
        test=test_set,
        val=val_set,
    )
