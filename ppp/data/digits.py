"""Embedded datasets built from scikit-learn's bundled handwritten digits: nothing to download.

`digit_scenes` mimics multi-label image-text retrieval data (COCO-like): each image is a canvas
holding 1-3 digit glyphs, its caption names the digits in words, its label is multi-hot.
Scenes draw from fixed *topics* of co-occurring classes, so that some classes are semantic
neighbours of each other (as dog/frisbee/person in COCO) and others are distant.
`digits` is the same glyphs as a single-label classification set.
"""
from __future__ import annotations

import numpy as np
import torch

from ppp.data.base import Benchmark, InMemoryImages, InMemoryPairs, split_indices

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

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

CELL = 8  # sklearn glyphs are 8x8


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
        patch = canvas[:, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL]
        np.maximum(patch, colour[:, None, None] * glyph[None], out=patch)
    return (canvas * 255).round().astype(np.uint8)


def digit_scenes(
    n_total: int = 5000,
    n_query: int = 500,
    n_train: int = 2500,
    grid: int = 4,
    topic_prob: float = 0.5,
    topics: list[list[int]] | None = None,
    seed: int = 0,
) -> Benchmark:
    rng = np.random.default_rng(seed)
    topics = DEFAULT_TOPICS if topics is None else [list(t) for t in topics]
    glyphs, targets = _load_glyphs()
    glyphs_by_class = [glyphs[targets == c] for c in range(10)]
    scenes = sample_scene_classes(n_total, topics, topic_prob, rng)
    images = np.stack([render_scene(s, glyphs_by_class, rng, grid) for s in scenes])
    texts = [
        TEMPLATES[rng.integers(len(TEMPLATES))].format(_word_list([DIGIT_NAMES[c] for c in s], rng))
        for s in scenes
    ]
    labels = np.zeros((n_total, 10), dtype=np.float32)
    for i, s in enumerate(scenes):
        labels[i, s] = 1.0
    pairs = InMemoryPairs(torch.from_numpy(images), texts, torch.from_numpy(labels))
    idx = split_indices(n_total, n_query, n_train, seed)
    return Benchmark(
        name="digit_scenes",
        class_names=list(DIGIT_NAMES),
        task="retrieval",
        train=pairs.subset(idx["train"]),
        query=pairs.subset(idx["query"]),
        database=pairs.subset(idx["database"]),
        info={"topics": [[DIGIT_NAMES[c] for c in t] for t in topics]},
    )


def digits(test_fraction: float = 0.25, size: int = 32, seed: int = 0) -> Benchmark:
    """sklearn's 1,797 digits as single-label 3-channel images, upscaled to `size` px; seeded split."""
    glyphs, targets = _load_glyphs()
    images = torch.from_numpy(glyphs)[:, None]
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1).repeat(1, 3, 1, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(targets)
    data = InMemoryImages(images, labels)
    perm = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    return Benchmark(
        name="digits",
        class_names=list(DIGIT_NAMES),
        task="classification",
        train=data.subset(perm[n_test:]),
        test=data.subset(perm[:n_test]),
    )
