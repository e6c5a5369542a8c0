import re

import numpy as np
import pytest
import torch

from ppp.data.digits import (
    DEFAULT_TOPICS,
    DIGIT_NAMES,
    PALETTE,
    POSITIONS,
    SCENE_POOLS,
    _load_glyphs,
    contributor_hands,
    digit_scenes,
    digits,
    glyph_pools,
    one_digit_images,
    position,
    sample_scene_classes,
    split_indices,
)
from ppp.errors import ConfigError


def small(seed=0, **kw):
    return digit_scenes(n_total=700, n_query=100, n_train=300, n_val=100, seed=seed, **kw)


@pytest.fixture(scope="module")
def default_scenes():
    return digit_scenes(seed=0)


def same_data(a, b) -> bool:
    """Two builds hold the same items, captions, labels, glyph records and splits."""
    texts = getattr(a.train.base, "texts", None) == getattr(b.train.base, "texts", None)
    splits = all(
        (x is None and y is None) or torch.equal(x.indices, y.indices)
        for x, y in (
            (getattr(a, n), getattr(b, n)) for n in ("train", "query", "database", "test", "val", "population")
        )
    )
    return (
        torch.equal(a.train.base.images, b.train.base.images)
        and torch.equal(a.train.base.labels, b.train.base.labels)
        and texts
        and a.info == b.info
        and splits
    )


def test_deterministic_given_seed():
    a, b, c = small(0), small(0), small(1)
    assert same_data(a, b) and not same_data(a, c)
    assert not torch.equal(a.train.labels, c.train.labels)
    assert same_data(digits(per_class=30, size=8, seed=0), digits(per_class=30, size=8, seed=0))
    assert not same_data(digits(per_class=30, size=8, seed=0), digits(per_class=30, size=8, seed=1))


def split_glyphs(bench) -> dict[str, set[int]]:
    """The sklearn glyph ids each split's items were drawn from (`info["glyphs"]`), the database's items
    outside the training set on their own."""
    glyphs = bench.info["glyphs"]
    splits = {
        n: getattr(bench, n).indices for n in ("train", "query", "val", "test", "population") if getattr(bench, n)
    }
    if bench.database is not None:
        db = bench.database.indices
        splits["database-train"] = db[~torch.isin(db, bench.train.indices)]
    return {name: {g for i in idx.tolist() for g in glyphs[i]} for name, idx in splits.items()}


def assert_disjoint(used: dict[str, set[int]]):
    names = list(used)
    for i, a in enumerate(names):
        assert used[a], a
        for b in names[i + 1 :]:
            assert not used[a] & used[b], (a, b, sorted(used[a] & used[b])[:5])


def test_no_two_scene_splits_share_a_glyph():
    """Training, validation, queries, the other database items and both zero-shot draws: six glyph pools."""
    bench = small()
    _, targets = _load_glyphs()
    for i, label in enumerate(bench.train.base.labels):  # the record names one glyph of each labelled class
        assert sorted(targets[bench.info["glyphs"][i]].tolist()) == torch.nonzero(label).flatten().tolist()
    used = split_glyphs(bench)
    for split in ("test", "val"):
        used[f"zeroshot_{split}"] = set(one_digit_images(5, split=split, dataset_seed=0)[3].tolist())
    assert_disjoint(used)
    pools = glyph_pools(0)
    for name, pool in (("query", "query"), ("val", "val"), ("train", "train"), ("database-train", "database")):
        assert used[name] <= set(np.concatenate(pools[pool]).tolist()), name
    sizes = {name: sum(map(len, p)) for name, p in pools.items()}
    assert (
        sum(sizes.values()) == 1797 and sizes["train"] > 880 and all(170 <= n <= 190 for n in sizes.values() if n < 880)
    )


def test_no_two_digits_splits_share_a_glyph():
    bench = digits(per_class=40, population_per_class=16, size=8)
    assert_disjoint(split_glyphs(bench))
    assert [len(bench.train), len(bench.val), len(bench.test), len(bench.population)] == [240, 80, 80, 160]


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


def test_default_splits_hold_enough_forget_queries(default_scenes):
    """1,000 test and 1,000 validation queries; the forget class `six` in about 18 % of each."""
    bench = default_scenes
    assert (len(bench.query), len(bench.val), len(bench.train), len(bench.database)) == (1000, 1000, 2500, 4500)
    six = DIGIT_NAMES.index("six")
    counts = [int(split.labels[:, six].sum()) for split in (bench.query, bench.val)]
    assert all(150 <= c <= 220 for c in counts), counts


def test_default_captions_are_mostly_unique(default_scenes):
    texts = default_scenes.train.base.texts
    train = [texts[i] for i in default_scenes.train.indices.tolist()]
    assert len(set(train)) / len(train) > 0.95 and len(set(texts)) / len(texts) > 0.9


MENTION = re.compile(
    rf"\ba ({'|'.join(PALETTE)}) ({'|'.join(DIGIT_NAMES)}) ({'|'.join(sorted((p for r in POSITIONS for p in r), key=len, reverse=True))})\b"
)


@pytest.mark.parametrize("kw", [{}, {"contributors": 12, "held_out_contributors": 3}], ids=["default", "hands"])
def test_captions_say_each_digits_true_colour_and_place(kw):
    """Every glyph's mention names the palette colour nearest its brightest pixel and the third of the
    canvas its cell lies in (a contributor's habitual colour, too)."""
    bench = small(**kw)
    palette = {name: np.asarray(rgb) / max(rgb) for name, rgb in PALETTE.items()}
    for i in range(len(bench.train.base)):
        image, text, label = bench.train.base[i]
        seen = []
        cells = image.float().amax(0).reshape(4, 8, 4, 8).amax(dim=(1, 3))
        for cell in torch.nonzero(cells.flatten() > 100).flatten().tolist():
            r, c = divmod(cell, 4)
            patch = image[:, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8].reshape(3, -1).float()
            rgb = patch[:, patch.amax(0).argmax()].numpy()
            colour = min(palette, key=lambda name: np.abs(rgb / rgb.max() - palette[name]).sum())
            seen.append((colour, position(cell, 4)))
        said = [(colour, place) for colour, _, place in MENTION.findall(text)]
        assert sorted(said) == sorted(seen) and len(said) == int(label.sum()), text
    assert [position(cell, 4) for cell in (0, 1, 5, 15)] == [
        "at the top left",
        "at the top",
        "in the middle",
        "at the bottom right",
    ]


def test_version_is_required_and_only_2_is_built():
    from ppp.config import compose_config
    from ppp.validation import check_config

    for overrides in ([], ["dataset=digits"]):
        assert compose_config(overrides).dataset.version == 2
        with pytest.raises(
            ConfigError, match=r"^dataset.version=1: only version 2 of the embedded digit data is built"
        ) as err:
            check_config(compose_config([*overrides, "dataset.version=1"]))
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="dataset.version=1"):
        digits(version=1)


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


def test_label_prototype_distance_ratio_is_moderate(default_scenes):
    """Other-class / nearest-neighbour prototype distance ratio stays in the 'real data' range."""
    bench = default_scenes
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
    for split, per_class in ((bench.train, 240), (bench.val, 80), (bench.test, 80), (bench.population, 160)):
        assert torch.bincount(split.labels).tolist() == [per_class] * 10
    assert len(bench.test) + len(bench.population) == len(bench.train)  # non-members enough for reference models
    image, label = bench.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and 0 <= int(label) < 10
    assert digits(per_class=30, population_per_class=0).population is None


def test_digits_splits_share_no_glyph():
    """Without jitter every image is one of sklearn's glyphs: no glyph serves two splits."""
    glyphs, _ = _load_glyphs()
    glyph_of = {bytes((g * 255).round().astype(np.uint8)): i for i, g in enumerate(glyphs)}
    bench = digits(per_class=60, size=8, shift=0, rotation=0, scale=0)
    used = [
        [glyph_of[bytes(split[i][0][0].numpy())] for i in range(len(split))]
        for split in (bench.train, bench.val, bench.test, bench.population)
    ]
    assert_disjoint(dict(zip(("train", "val", "test", "population"), map(set, used))))
    assert len(used[2]) == len(set(used[2])) == 120  # 12 test images per class, each from its own glyph
    recorded = [
        [g for i in split.indices.tolist() for g in bench.info["glyphs"][i]] for split in (bench.train, bench.test)
    ]
    assert recorded == used[::2]  # the record is true


def test_version_2_data_is_pinned():
    """The bytes of version 2 (digest from this code): a change to them needs a new `dataset.version`."""
    import hashlib

    pairs = digit_scenes(n_total=400, n_query=50, n_train=200, n_val=50).train.base
    digest = hashlib.sha256(
        pairs.images.numpy().tobytes() + "\n".join(pairs.texts).encode() + pairs.labels.numpy().tobytes()
    ).hexdigest()[:16]
    assert digest == "222cc3f42a52008f"


def named_classes(text: str) -> list[int]:
    """Every class a caption names by any of its surface forms (whole words), with repeats."""
    import re

    from ppp.data.digits import SURFACE_FORMS

    return [
        c
        for c, name in enumerate(DIGIT_NAMES)
        for form in SURFACE_FORMS[name]
        for _ in re.finditer(rf"(?<![\w-]){re.escape(form)}(?![\w-])", text)
    ]


def test_harder_captions_name_some_digits_by_many_forms_on_the_same_scenes():
    from ppp.data.digits import SURFACE_FORMS, UNNAMED

    plain, hard = small(), small(surface_forms=True, mention_prob=0.7)
    assert torch.equal(plain.database.labels, hard.database.labels)
    assert torch.equal(plain.database.base.images, hard.database.base.images)
    present = named = 0
    forms_used = {name: set() for name in DIGIT_NAMES}
    for i in range(len(hard.database)):
        _, text, label = hard.database[i]
        classes = named_classes(text)
        labelled = set(torch.nonzero(label).flatten().tolist())
        assert set(classes) <= labelled and len(classes) == len(set(classes)), text  # never a digit not there
        assert classes or UNNAMED in text, text
        present, named = present + len(labelled), named + len(classes)
        for c in classes:
            forms_used[DIGIT_NAMES[c]] |= {f for f in SURFACE_FORMS[DIGIT_NAMES[c]] if f in text}
    assert abs(named / present - 0.7) < 0.03  # about 1,900 labelled digits in the database
    assert all(len(forms) == 4 for forms in forms_used.values())  # word, numeral and both synonyms occur
    only_forms = small(surface_forms=True)  # every digit named, by varied forms
    assert all(
        sorted(named_classes(only_forms.database[i][1])) == torch.nonzero(only_forms.database[i][2]).flatten().tolist()
        for i in range(len(only_forms.database))
    )


def test_harder_keys_enter_cache_keys_only_when_set():
    from ppp.cache import config_identity
    from ppp.config import compose_config
    from ppp.errors import ConfigError
    from ppp.validation import check_config

    def dataset(*overrides):
        return compose_config(overrides)

    default = config_identity(dataset().dataset, "dataset")
    assert default == {
        "name": "digit_scenes",
        "version": 2,
        "seed": 0,
        "n_total": 6500,
        "n_query": 1000,
        "n_train": 2500,
        "n_val": 1000,
        "grid": 4,
        "topic_prob": 0.5,
    }  # the key of every cached model of version 2
    harder = config_identity(dataset("dataset.surface_forms=true", "dataset.mention_prob=0.7").dataset, "dataset")
    assert harder == {**default, "surface_forms": True, "mention_prob": 0.7}
    for bad, message in (
        ("dataset.mention_prob=0", "dataset.mention_prob must lie in (0, 1]"),
        ("dataset.surface_forms=maybe", "dataset.surface_forms must be one of True, False"),
    ):
        try:
            check_config(dataset(bad))
        except ConfigError as err:
            assert message in str(err) and "\n" not in str(err)
        else:
            raise AssertionError(f"{bad} was accepted")


HANDED = {"n_total": 600, "n_query": 100, "n_train": 200, "n_val": 100, "contributors": 12, "held_out_contributors": 3}


@pytest.fixture(scope="module")
def handed():
    return digit_scenes(**HANDED)


def scene_pool(bench) -> list[str]:
    """The glyph pool (`glyph_pools`) each item's scene draws from: its split's (the database's training
    items: training's)."""
    pool = ["database"] * len(bench.info["glyphs"])
    for name in ("train", "query", "val"):
        for i in getattr(bench, name).indices.tolist():
            pool[i] = name
    return pool


def test_contributors_off_is_the_data_without_the_keys():
    """`contributors: 0` builds the bytes of the data the key did not exist for, whatever the hand keys say,
    and records nothing new."""
    before = small()
    off = small(contributors=0, held_out_contributors=0, hand_colour_prob=0.1, hand_glyph_share=0.9)
    assert same_data(before, off) and before.train.base.texts == off.train.base.texts
    assert sorted(off.info) == ["domains", "glyphs", "mention_prob", "surface_forms", "topics"]


def test_held_out_contributors_draw_only_outside_training(handed):
    drawn_by = np.asarray(handed.info["contributors"])
    assert len(drawn_by) == 600 and handed.info["held_out_contributors"] == [9, 10, 11]
    train = handed.train.indices.numpy()
    outside = np.setdiff1d(np.arange(600), train)
    assert drawn_by[train].max() < 9 and set(drawn_by[train].tolist()) == set(range(9))
    assert set(drawn_by[outside].tolist()) == set(range(12))  # held-out hands are seen outside training


def test_each_contributor_draws_its_own_glyphs_in_its_habitual_colour(handed):
    """A contributor's glyphs of a class come from its subset of the split's pool, and its habitual colour
    tints about `hand_colour_prob` + (1 - p) / 7 of its glyphs (the habit, or a random draw that hits it)."""
    pools = glyph_pools(0)
    hands = contributor_hands({n: pools[n] for n in SCENE_POOLS}, 12, 0.3, 0.8, seed=0)
    _, targets = _load_glyphs()
    for name, by_contributor in hands.items():
        for hand in by_contributor:
            for own, pool in zip(hand.glyphs, pools[name]):
                assert len(own) == max(1, round(0.3 * len(pool))) and set(own) <= set(pool.tolist())
    habitual, glyph_count = np.zeros(12), np.zeros(12)
    for i, (c, pool) in enumerate(zip(handed.info["contributors"], scene_pool(handed))):
        hand = hands[pool][c]
        assert all(g in hand.glyphs[targets[g]] for g in handed.info["glyphs"][i])
        colours = [colour for colour, _, _ in MENTION.findall(handed.train.base.texts[i])]
        habitual[c] += sum(colour == hand.colour for colour in colours)
        glyph_count[c] += len(colours)
    expected = 0.8 + 0.2 / len(PALETTE)
    assert abs(habitual.sum() / glyph_count.sum() - expected) < 0.04
    assert (habitual / glyph_count > 0.6).all()  # every contributor's own colour dominates its glyphs


def test_contributors_keep_glyph_pools_disjoint_and_are_seeded(handed):
    used = split_glyphs(handed)
    for split in ("test", "val"):
        used[f"zeroshot_{split}"] = set(one_digit_images(5, split=split, dataset_seed=0)[3].tolist())
    assert_disjoint(used)
    assert same_data(handed, digit_scenes(**HANDED))
    assert not same_data(handed, digit_scenes(**{**HANDED, "seed": 1}))
    other_hands = digit_scenes(**HANDED, hand_glyph_share=0.5, hand_colour_prob=0.2)  # same contributors drew
    assert other_hands.info["contributors"] == handed.info["contributors"]


@pytest.mark.parametrize(
    "contributors, held_out, message",
    [
        (12, 12, "dataset.held_out_contributors=12 must be < dataset.contributors=12"),
        (0, 2, "dataset.held_out_contributors=2 must be 0 when dataset.contributors=0"),
    ],
)
def test_bad_held_out_contributors_is_one_line(contributors, held_out, message):
    from ppp.config import compose_config
    from ppp.validation import check_config

    overrides = [f"dataset.contributors={contributors}", f"dataset.held_out_contributors={held_out}"]
    for build in (
        lambda: check_config(compose_config(overrides)),
        lambda: digit_scenes(**{**HANDED, "contributors": contributors, "held_out_contributors": held_out}),
    ):
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}") as err:
            build()
        assert "\n" not in str(err.value)


def test_contributor_keys_enter_cache_keys_only_when_set(tmp_path):
    """The neutral defaults leave every existing key as it was; contributors change the key, and
    `build_benchmark` hands the keys to the builder (a cached build of one is not loaded for the other)."""
    from ppp.cache import config_identity
    from ppp.config import compose_config
    from ppp.data import build_benchmark

    sizes = [f"dataset.{k}={v}" for k, v in HANDED.items() if "contributors" not in k]
    off = compose_config(sizes).dataset
    on = compose_config([*sizes, "dataset.contributors=12", "dataset.held_out_contributors=3"]).dataset
    assert "contributors" not in config_identity(off, "dataset") and "hand_colour_prob" not in config_identity(
        on, "dataset"
    )
    assert config_identity(on, "dataset") == {
        **config_identity(off, "dataset"),
        "contributors": 12,
        "held_out_contributors": 3,
    }
    assert "contributors" not in build_benchmark(off, tmp_path).info
    built = build_benchmark(on, tmp_path)
    assert built.info["contributors"] == build_benchmark(on).info["contributors"]
