import numpy as np
import torch

from ppp.data.digits import (DEFAULT_TOPICS, DIGIT_NAMES, _load_glyphs, digit_scenes, digits, sample_scene_classes,
                             split_indices)


def small(seed=0, **kw):
    return digit_scenes(n_total=700, n_query=100, n_train=300, n_val=100, seed=seed, **kw)


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
    idx = split_indices(600, 100, 300, seed=3, n_val=50)
    query, train, val, db = (set(idx[k].tolist()) for k in ("query", "train", "val", "database"))
    assert (len(query), len(train), len(val), len(db)) == (100, 300, 50, 450)
    assert not query & db and not val & (query | db) and train <= db
    assert query | val | db == set(range(600))
    plain = split_indices(600, 100, 300, seed=3)  # n_val = 0: the DSPH protocol, same queries and train
    assert np.array_equal(plain["query"], idx["query"]) and np.array_equal(plain["train"], idx["train"])
    assert len(plain["val"]) == 0 and set(plain["database"].tolist()) == db | val
    assert np.array_equal(split_indices(600, 100, 300, seed=3, n_val=50)["val"], idx["val"])


def test_default_splits_hold_enough_forget_queries():
    """1,000 test and 1,000 validation queries; the forget class `six` in about 18 % of each."""
    bench = digit_scenes(seed=0)
    assert (len(bench.query), len(bench.val), len(bench.train), len(bench.database)) == (1000, 1000, 2500, 4500)
    six = DIGIT_NAMES.index("six")
    counts = [int(split.labels[:, six].sum()) for split in (bench.query, bench.val)]
    assert all(150 <= c <= 220 for c in counts), counts


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
    for split, per_class in ((bench.train, 240), (bench.val, 80), (bench.test, 80)):
        assert torch.bincount(split.labels).tolist() == [per_class] * 10
    image, label = bench.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and 0 <= int(label) < 10
    again, other = digits(per_class=30, seed=0), digits(per_class=30, seed=1)
    assert torch.equal(again.test.base.images, digits(per_class=30, seed=0).test.base.images)
    assert not torch.equal(again.test.base.images, other.test.base.images)


def test_digits_splits_share_no_glyph():
    """Without jitter every image is one of sklearn's glyphs: no glyph serves two splits."""
    glyphs, _ = _load_glyphs()
    glyph_of = {bytes((g * 255).round().astype(np.uint8)): i for i, g in enumerate(glyphs)}
    bench = digits(per_class=60, size=8, shift=0, rotation=0, scale=0)
    used = [[glyph_of[bytes(split[i][0][0].numpy())] for i in range(len(split))]
            for split in (bench.train, bench.val, bench.test)]
    train, val, test = map(set, used)
    assert not train & val and not train & test and not val & test
    assert len(used[2]) == len(test) == 120  # 12 test images per class, each from its own glyph
