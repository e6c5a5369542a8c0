"""Embedded datasets are built once per dataset config identity and loaded from the cache afterwards."""

import torch
from omegaconf import OmegaConf

from ppp.data import build_benchmark
from ppp.data.base import SPLITS


def dataset_cfg(name="digit_scenes", **overrides):
    base = {
        "digit_scenes": {
            "name": "digit_scenes",
            "forget": ["six"],
            "n_total": 120,
            "n_query": 20,
            "n_train": 60,
            "n_val": 10,
            "seed": 0,
        },
        "digits": {"name": "digits", "forget": ["six"], "per_class": 12, "seed": 0},
    }[name]
    return OmegaConf.create({**base, **overrides})


def assert_same(a, b):
    assert (a.name, a.class_names, a.task, a.info) == (b.name, b.class_names, b.task, b.info)
    for split in SPLITS:
        x, y = getattr(a, split), getattr(b, split)
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.equal(x.indices, y.indices) and len(x) == len(y)
            for i in (0, len(x) - 1):
                for u, v in zip(x[i], y[i]):
                    assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v


def test_embedded_datasets_come_back_identical_from_the_cache(tmp_path):
    for name in ("digit_scenes", "digits"):
        built = build_benchmark(dataset_cfg(name))
        first = build_benchmark(dataset_cfg(name), tmp_path)  # builds and stores
        again = build_benchmark(dataset_cfg(name), tmp_path)  # loads
        assert_same(first, built)
        assert_same(again, built)
    assert len(list((tmp_path / "datasets").glob("*.pt"))) == 2


def test_dataset_key_follows_the_config_identity(tmp_path, ppp_log):
    build_benchmark(dataset_cfg(), tmp_path)
    build_benchmark(dataset_cfg(forget=["two"]), tmp_path)  # forget never changes the dataset: reused
    assert any(m.startswith("[cache] reusing digit_scenes dataset") for m in ppp_log.messages)
    other = build_benchmark(dataset_cfg(seed=1), tmp_path)
    assert len(list((tmp_path / "datasets").glob("*.pt"))) == 2
    assert not torch.equal(other.train.base.images, build_benchmark(dataset_cfg()).train.base.images)


def test_coco_annotations_are_parsed_once_until_a_file_changes(tmp_path, ppp_log):
    import os

    from test_real_datasets import make_coco

    from ppp.cache import Cache
    from ppp.data.coco import coco

    root = tmp_path / "coco"
    make_coco(root)
    cache = Cache(tmp_path / "cache")
    plain = coco(root, n_query=5, n_train=12, n_val=4)
    first = coco(root, n_query=5, n_train=12, n_val=4, annotation_cache=cache)
    again = coco(root, n_query=5, n_train=12, n_val=4, annotation_cache=cache)
    for bench in (first, again):
        assert bench.train.base.texts == plain.train.base.texts and bench.train.base.paths == plain.train.base.paths
        assert torch.equal(bench.train.base.labels, plain.train.base.labels)
    printed = "\n".join(ppp_log.messages)
    ppp_log.clear()
    assert printed.count("[cache] saved coco") == 2 and printed.count("[cache] reusing coco") == 2  # two splits

    captions = root / "annotations" / "captions_val2017.json"
    stat = captions.stat()
    os.utime(captions, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: val2017 parsed again
    coco(root, n_query=5, n_train=12, n_val=4, annotation_cache=cache)
    printed = "\n".join(ppp_log.messages)
    assert "[cache] saved coco val2017 annotations" in printed and "[cache] reusing coco train2017" in printed
