import numpy as np
import torch

from ppp.data.digits import DEFAULT_TOPICS, DIGIT_NAMES, digit_scenes, digits, sample_scene_classes, split_indices


def small(seed=0, **kw):
    return digit_scenes(n_total=600, n_query=100, n_train=300, seed=seed, **kw)


def test_deterministic_given_seed():
    a, b, c = small(0), small(0), small(1)
    assert torch.equal(a.train.labels, b.train.labels)
    assert torch.equal(a.query[5][0], b.query[5][0]) and a.query[5][1] == b.query[5][1]
    assert not torch.equal(a.train.labels, c.train.labels)


def test_captions_name_exactly_the_labelled_digits():
    bench = small()
    for i in range(len(bench.database)):
        image, text, label = bench.database[i]
        words = set(text.replace(",", " ").split())
        named = {j for j, n in enumerate(DIGIT_NAMES) if n in words}
        assert named == set(torch.nonzero(label).flatten().tolist()), text
        assert 1 <= label.sum() <= 3
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8


def test_glyph_count_matches_labels():
    bench = small()
    for i in range(50):
        image, _, label = bench.query[i]
        cells = image.float().amax(0).reshape(4, 8, 4, 8).amax(dim=(1, 3))
        assert int((cells > 100).sum()) == int(label.sum())


def test_split_protocol():
    idx = split_indices(600, 100, 300, seed=3)
    assert len(idx["query"]) == 100 and len(idx["train"]) == 300 and len(idx["database"]) == 500
    assert not set(idx["query"]) & set(idx["database"])
    assert set(idx["train"]) <= set(idx["database"])
    assert set(idx["query"]) | set(idx["database"]) == set(range(600))


def test_topics_create_neighbour_structure():
    """Classes of a shared topic co-occur far more often than others, but are not duplicates."""
    rng = np.random.default_rng(0)
    scenes = sample_scene_classes(20000, DEFAULT_TOPICS, 0.4, rng)
    labels = np.zeros((len(scenes), 10))
    for i, s in enumerate(scenes):
        labels[i, s] = 1
    cond = (labels.T @ labels) / labels.sum(0)[:, None]  # P(j | i)
    same = {(i, j) for t in DEFAULT_TOPICS for i in t for j in t if i != j}
    in_topic = np.mean([cond[i, j] for i, j in same])
    other = np.mean([cond[i, j] for i in range(10) for j in range(10) if i != j and (i, j) not in same])
    assert 2.0 < in_topic / other < 6.0
    assert cond[0, 6] < 0.5  # a neighbour, not a near-duplicate


def test_label_prototype_distance_ratio_is_moderate():
    """Other-class / nearest-neighbour prototype distance ratio stays in the 'real data' range."""
    bench = digit_scenes(seed=0)
    labels = bench.database.labels
    protos = torch.stack([labels[labels[:, c] > 0].mean(0) for c in range(10)])
    dist = torch.cdist(protos, protos)
    six = DIGIT_NAMES.index("six")
    d = dist[six].clone()
    d[six] = float("inf")
    ordered = d.sort().values
    ratio = ordered[2:9].mean() / ordered[:2].mean()
    assert 1.1 < float(ratio) < 3.0


def test_digits_single_label():
    bench = digits(seed=0)
    assert bench.task == "classification"
    assert len(bench.train) + len(bench.test) == 1797
    image, label = bench.train[0]
    assert image.shape == (3, 32, 32) and 0 <= int(label) < 10
