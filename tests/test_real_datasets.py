"""The on-disk benchmarks, each read from a tiny fixture tree in its official layout, and CLIP weights offline."""

import copy
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from ppp.config import CONF_DIR
from ppp.data import build_benchmark
from ppp.data.coco import coco
from ppp.data.deepfashion import deepfashion
from ppp.data.flickr25k import flickr25k
from ppp.data.imagenet100 import BUNDLED_CLASSES, imagenet100, read_synset_names
from ppp.errors import ConfigError


def write_jpeg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = tuple(int(c) for c in np.random.default_rng(seed).integers(0, 256, size=3))
    Image.new("RGB", (12, 10), colour).save(path, "JPEG")


# --- MS-COCO ------------------------------------------------------------------------------------------------------
COCO_CATEGORIES = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 9, "name": "boat"}]  # shuffled ids
COCO_CLASSES = ["person", "boat", "dog"]  # id order


def make_coco(root, n_train=24, n_val=8):
    """Images 1..n in train2017/val2017; every 6th image has no instance annotation (so is dropped)."""
    rng = np.random.default_rng(0)
    truth = {}
    for split, ids in (("train2017", range(1, n_train + 1)), ("val2017", range(n_train + 1, n_train + n_val + 1))):
        images, instances, captions = [], [], []
        for image_id in ids:
            name = f"{image_id:012d}.jpg"
            write_jpeg(root / split / name, image_id)
            images.append({"id": image_id, "file_name": name})
            for k in range(3):
                captions.append(
                    {"id": 1000 * image_id + k, "image_id": image_id, "caption": f"photo {image_id} take {k} "}
                )
            if image_id % 6 == 0:
                continue
            cats = rng.choice([1, 9, 18], size=int(rng.integers(1, 3)), replace=False).tolist()
            truth[image_id] = {COCO_CLASSES[[1, 9, 18].index(c)] for c in cats}
            instances += [{"id": 50 * image_id + j, "image_id": image_id, "category_id": c} for j, c in enumerate(cats)]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images[::-1], "annotations": instances, "categories": COCO_CATEGORIES})
        )
        (root / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"images": images, "annotations": captions})
        )
    return truth


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "coco"
    return root, make_coco(root)


def image_id_of(pairs, i):
    return int(pairs.paths[i].rsplit("/", 1)[1][:-4])


def test_coco_classes_labels_and_captions(coco_root):
    root, truth = coco_root
    bench = coco(root, n_query=5, n_train=12, n_val=4)
    assert bench.class_names == COCO_CLASSES and bench.task == "retrieval"
    pairs = bench.database.base
    assert len(pairs) == len(truth) == 27 and bench.info["pairs"] == 27
    for i in range(len(pairs)):
        image_id = image_id_of(pairs, i)
        image, text, label = pairs[i]
        assert {COCO_CLASSES[c] for c in torch.nonzero(label).flatten().tolist()} == truth[image_id]
        assert label.dtype == torch.float32
        assert text in {f"photo {image_id} take {k}" for k in range(3)}
        assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert "/val2017/" in pairs.paths[-1]
    again, other = coco(root, n_query=5, n_train=12, n_val=4), coco(root, n_query=5, n_train=12, n_val=4, seed=1)
    assert again.database.base.texts == pairs.texts != other.database.base.texts  # caption choice fixed by seed


def test_retrieval_split_protocol_scaled(coco_root):
    root, _ = coco_root
    bench = coco(root, n_query=5, n_train=12, n_val=4)
    query, train, val, db = (set(s.indices.tolist()) for s in (bench.query, bench.train, bench.val, bench.database))
    assert (len(query), len(train), len(val), len(db)) == (5, 12, 4, 18)
    assert not query & db and train <= db and query | db | val == set(range(27))
    assert not val & (query | db)  # validation queries are neither test queries nor in the database
    plain = coco(root, n_query=5, n_train=12, n_val=0)  # the DSPH split: the same queries and train set
    assert torch.equal(plain.query.indices, bench.query.indices)
    assert torch.equal(plain.train.indices, bench.train.indices)
    assert set(plain.database.indices.tolist()) == db | val and len(plain.val) == 0
    assert torch.equal(coco(root, n_query=5, n_train=12, n_val=4).query.indices, bench.query.indices)
    assert not torch.equal(coco(root, n_query=5, n_train=12, n_val=4, split_seed=7).query.indices, bench.query.indices)
    with pytest.raises(ConfigError, match="n_query \\+ n_train \\+ n_val = 32 exceeds the 27"):
        coco(root, n_query=10, n_train=12, n_val=10)


def test_coco_from_config_with_data_root(coco_root):
    from omegaconf import OmegaConf

    root, _ = coco_root
    dataset = OmegaConf.load(CONF_DIR / "dataset" / "coco.yaml")
    dataset.pop("defaults")  # Hydra's defaults list (the backbone it picks), not a dataset key
    cfg = OmegaConf.create({"data_root": str(root.parent), "dataset": dataset})
    cfg.dataset.n_query, cfg.dataset.n_train, cfg.dataset.n_val, cfg.dataset.splits = 2, 4, 1, ["val2017"]
    bench = build_benchmark(cfg.dataset)
    assert len(bench.query) + len(bench.val) + len(bench.database) == 7  # val2017 only: 8 images, one without instances
    assert bench.class_indices(list(cfg.dataset.forget)) == [2]


# --- MIRFlickr-25K ------------------------------------------------------------------------------------------------
def make_flickr(root, nested=True):
    """30 images; 26-30 carry no potential label; images 3 and 4 have no tags."""
    image_dir = root / "mirflickr" if nested else root
    for n in range(1, 31):
        write_jpeg(image_dir / f"im{n}.jpg", n)
        tags = [] if n in (3, 4) else [f"tag{n}", "sunny", "bw"][: 1 + n % 3]
        (image_dir / "meta" / "tags").mkdir(parents=True, exist_ok=True)
        (image_dir / "meta" / "tags" / f"tags{n}.txt").write_text("".join(t + "\n" for t in tags))
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "dog.txt").write_text("".join(f"{n}\n" for n in range(1, 26, 2)))
    (ann / "sky.txt").write_text("".join(f"{n}\n" for n in range(2, 26, 2)))
    (ann / "people.txt").write_text("1\n2\n3\n25\n")
    (ann / "dog_r1.txt").write_text("1\n30\n")  # the stricter relevance file: not a class, adds no image
    (ann / "README.txt").write_text("MIRFLICKR annotations\n")


@pytest.mark.parametrize("nested", [True, False])
def test_flickr_labels_tags_and_protocols(tmp_path, nested):
    make_flickr(tmp_path, nested)
    bench = flickr25k(tmp_path, n_query=5, n_train=10, n_val=3)
    assert bench.class_names == ["dog", "people", "sky"]
    pairs = bench.database.base
    assert len(pairs) == 25 and bench.info["protocol"] == "dsph"
    by_number = {int(p.rsplit("im", 1)[1][:-4]): i for i, p in enumerate(pairs.paths)}
    assert pairs.labels[by_number[1]].tolist() == [1.0, 1.0, 0.0] and pairs.labels[by_number[2]].tolist() == [0, 1, 1]
    assert pairs.texts[by_number[5]] == "tag5 sunny bw" and pairs.texts[by_number[3]] == ""

    dcmh = flickr25k(tmp_path, protocol="dcmh", n_query=4, n_train=10, n_val=3)
    assert len(dcmh.query) == 4 and len(dcmh.query) + len(dcmh.val) + len(dcmh.database) == 23  # untagged 3, 4 dropped
    assert set(dcmh.train.indices.tolist()) <= set(dcmh.database.indices.tolist())
    with pytest.raises(ConfigError, match="n_query"):
        flickr25k(tmp_path, protocol="dcmh", n_val=0)  # its own 2,000 queries do not fit the fixture
    with pytest.raises(ConfigError, match="dcmh, dsph"):
        flickr25k(tmp_path, protocol="nuswide")


# --- ImageNet-100 -------------------------------------------------------------------------------------------------
WNIDS = ["n02107142", "n02085620", "n01558993"]  # Doberman, Chihuahua, robin


def make_imagenet(root, nested=True, per_wnid=10):
    for w, wnid in enumerate(WNIDS):
        for k in range(per_wnid):
            write_jpeg((root / "train" if nested else root) / wnid / f"{wnid}_{k}.JPEG", 100 * w + k)


def test_bundled_imagenet100_list():
    names = read_synset_names(BUNDLED_CLASSES)
    assert len(names) == 100 and len(set(names.values())) == 100
    assert names["n02107142"] == "Doberman" and names["n01558993"] == "robin" and names["n04517823"] == "vacuum"


@pytest.mark.parametrize("nested", [True, False])
def test_imagenet100_sampling_split_and_names(tmp_path, nested):
    make_imagenet(tmp_path, nested)
    bench = imagenet100(tmp_path, classes=WNIDS, per_class=6, test_fraction=0.5, val_fraction=1 / 3)
    assert bench.task == "classification" and bench.class_names == ["Doberman", "Chihuahua", "robin"]
    assert bench.class_indices(["Doberman"]) == [0]
    assert torch.bincount(bench.train.labels).tolist() == [2, 2, 2]
    assert torch.bincount(bench.val.labels).tolist() == [1, 1, 1]
    assert torch.bincount(bench.test.labels).tolist() == [3, 3, 3]
    train, val, test = (set(s.indices.tolist()) for s in (bench.train, bench.val, bench.test))
    assert not train & test and not val & (train | test) and len(train | val | test) == 18
    no_val = imagenet100(tmp_path, classes=WNIDS, per_class=6, test_fraction=0.5, val_fraction=0)
    assert torch.equal(no_val.test.indices, bench.test.indices) and set(no_val.train.indices.tolist()) == train | val
    image, label = bench.train[0]
    assert isinstance(image, Image.Image) and label.dtype == torch.long and label.dim() == 0
    images = bench.train.base
    assert all(p.split("/")[-2] == WNIDS[int(lab)] for p, lab in zip(images.paths, images.labels))
    same, other = (
        imagenet100(tmp_path, classes=WNIDS, per_class=6, test_fraction=0.5),
        imagenet100(tmp_path, classes=WNIDS, per_class=6, test_fraction=0.5, seed=1),
    )
    assert same.train.base.paths == images.paths != other.train.base.paths


def test_imagenet100_names_from_synset_mapping_and_errors(tmp_path):
    make_imagenet(tmp_path)
    (tmp_path / "LOC_synset_mapping.txt").write_text(
        "n02107142 Dobie, Doberman pinscher\nn02085620 Chihuahua\nn01558993 robin, American robin\n"
    )
    assert imagenet100(tmp_path, classes=WNIDS, per_class=2).class_names == ["Dobie", "Chihuahua", "robin"]
    with pytest.raises(ConfigError, match="n09999999"):
        imagenet100(tmp_path, classes=WNIDS + ["n09999999"])
    with pytest.raises(ConfigError, match="n02869837"):  # default list: the first missing class is named
        imagenet100(tmp_path)


# --- DeepFashion --------------------------------------------------------------------------------------------------
DF_COUNTS = {"Anorak": 3, "Blazer": 8, "Trunks": 7, "Tee": 9}


def make_deepfashion(root, anno="Anno_coarse"):
    """Four categories; with min_per_class=5, Anorak (3 images) is dropped."""
    (root / anno).mkdir(parents=True, exist_ok=True)
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    cloth = [f"{len(DF_COUNTS)}", "category_name  category_type"]
    cloth += [f"{name:<28} {1 + i % 3}" for i, name in enumerate(DF_COUNTS)]
    rows, partition = [], []
    for cat, (name, count) in enumerate(DF_COUNTS.items(), start=1):
        for k in range(count):
            rel = f"img/Some_{name}_{k // 4}/img_{k:08d}.jpg"
            write_jpeg(root / rel, 10 * cat + k)
            rows.append(f"{rel:<60} {cat}")
            partition.append(f"{rel:<60} {['train', 'train', 'val', 'test'][k % 4]}")
    (root / anno / "list_category_cloth.txt").write_text("\n".join(cloth) + "\n")
    header = [str(len(rows))]
    (root / anno / "list_category_img.txt").write_text("\n".join(header + ["image_name  category_label"] + rows) + "\n")
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "\n".join(header + ["image_name  evaluation_status"] + partition) + "\n"
    )


@pytest.mark.parametrize("anno", ["Anno_coarse", "Anno"])
def test_deepfashion_categories_sampling_and_partition(tmp_path, anno):
    make_deepfashion(tmp_path, anno)
    bench = deepfashion(tmp_path, per_class=6, min_per_class=5, val_fraction=0.5)
    assert bench.class_names == ["Blazer", "Trunks", "Tee"] and bench.task == "classification"
    assert bench.class_indices(["Trunks"]) == [1]
    images = bench.train.base
    assert torch.bincount(images.labels).tolist() == [6, 6, 6]
    # k % 4: train, train, val, test (the official val goes to our test split)
    for split, wanted in ((bench.train, {0, 1}), (bench.val, {0, 1}), (bench.test, {2, 3})):
        assert {int(images.paths[i][-12:-4]) % 4 for i in split.indices} <= wanted
    assert len(bench.train) + len(bench.val) + len(bench.test) == 18 and len(bench.val) > 0
    assert not set(bench.val.indices.tolist()) & set(bench.train.indices.tolist())
    no_val = deepfashion(tmp_path, per_class=6, min_per_class=5, val_fraction=0)
    assert torch.equal(no_val.test.indices, bench.test.indices) and len(no_val.train) == len(bench.train) + len(
        bench.val
    )
    names = [p.split("/")[-2].split("_")[1] for p in images.paths]
    assert names == [bench.class_names[int(lab)] for lab in images.labels]
    assert deepfashion(tmp_path, per_class=6, min_per_class=5).train.base.paths == images.paths


# --- errors -------------------------------------------------------------------------------------------------------
BUILDERS = {
    "coco": (coco, make_coco, "annotations/captions_train2017.json", {"n_query": 2, "n_train": 4, "n_val": 2}),
    "flickr25k": (flickr25k, make_flickr, "annotations", {"n_query": 2, "n_train": 4, "n_val": 2}),
    "imagenet100": (imagenet100, make_imagenet, "train/n02085620", {"classes": WNIDS}),
    "deepfashion": (deepfashion, make_deepfashion, "Eval/list_eval_partition.txt", {"min_per_class": 5}),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_missing_root_and_annotation_are_config_errors(tmp_path, name):
    builder, make, removable, kwargs = BUILDERS[name]
    with pytest.raises(ConfigError, match=f"{name}: .*not found; expected .*get the data from http"):
        builder(tmp_path / "nowhere", **kwargs)
    make(tmp_path)
    target = tmp_path / removable
    if target.is_dir():
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(ConfigError) as err:
        builder(tmp_path, **kwargs)
    assert removable.split("/")[-1] in str(err.value) and "\n" not in str(err.value)


def test_corrupt_image_raises_or_is_replaced_and_counted(tmp_path):
    make_flickr(tmp_path)
    (tmp_path / "mirflickr" / "im1.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "mirflickr" / "im2.jpg").write_bytes(
        (tmp_path / "mirflickr" / "im5.jpg").read_bytes()[:40]
    )  # truncated
    strict = flickr25k(tmp_path, n_query=2, n_train=4, n_val=2).database.base
    with pytest.raises(ConfigError, match="im1.jpg"):
        strict[0]
    with pytest.raises(ConfigError, match="im2.jpg"):
        strict[1]

    bench = flickr25k(tmp_path, n_query=2, n_train=4, n_val=2, skip_bad_images=True)
    pairs = bench.database.base
    image, text, label = pairs[0]
    assert image.mode == "RGB" and text == pairs.texts[0] and torch.equal(label, pairs.labels[0])
    pairs[0]
    assert bench.info["bad_images"].count == 1  # distinct images, not reads
    loader = torch.utils.data.DataLoader(pairs, batch_size=4, num_workers=1, collate_fn=len)
    assert sum(loader) == len(pairs)
    assert bench.info["bad_images"].count == 2  # im2 was met in a worker process
    assert sorted(p.rsplit("/", 1)[1] for p in bench.info["bad_images"].paths) == ["im1.jpg", "im2.jpg"]
    assert copy.deepcopy(bench.info["bad_images"]).count == 2  # pickles as a snapshot outside worker spawning


# --- open_clip weights ----------------------------------------------------------------------------------------------
def test_uncached_pretrained_tag_offline_fails_fast(monkeypatch):
    import open_clip  # noqa: F401  (imported up front: the import is not what is timed)
    from huggingface_hub import constants

    from ppp.models.clip_hashing import create_clip

    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-hf-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set.*backbone.pretrained=/path"):
        create_clip("ViT-B-32", "openai")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: as with no network
    with pytest.raises(ConfigError, match="127.0.0.1:9 is unreachable"):
        create_clip("ViT-B-32", "openai")
    assert time.perf_counter() - start < 10


def test_weights_from_local_file_and_cached_tag(tmp_path, monkeypatch):
    import open_clip
    from huggingface_hub import constants

    from ppp.models.clip_hashing import create_clip

    torch.manual_seed(3)
    source, *_ = create_clip("clip_tiny", None)
    torch.save(source.state_dict(), tmp_path / "tiny.pt")
    loaded, *_ = create_clip("clip_tiny", str(tmp_path / "tiny.pt"))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))

    snapshot = tmp_path / "hub" / "models--ppp--clip_tiny_test" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    torch.save(source.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(
        open_clip.pretrained._PRETRAINED,
        "clip_tiny",
        {
            "cachedtag": {
                "hf_hub": "ppp/clip_tiny_test/",
                "quick_gelu": True,
                "mean": (0.5, 0.5, 0.5),
                "std": (0.25,) * 3,
            }
        },
    )
    tagged, _, _, mean, std = create_clip("clip_tiny", "cachedtag")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), tagged.state_dict().values()))
    assert mean == (0.5, 0.5, 0.5) and std == (0.25,) * 3
    assert isinstance(tagged.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


# --- end to end -----------------------------------------------------------------------------------------------------
def test_cli_runs_on_coco_layout(cli, tmp_path):
    make_coco(tmp_path / "data" / "coco")
    cli(
        [
            "method=ppp",
            "dataset=coco",
            f"data_root={tmp_path / 'data'}",
            "backbone=clip_tiny",
            "bits=16",
            "method.k=1",
            "dataset.n_query=8",
            "dataset.n_train=16",
            "dataset.n_val=2",
            "backbone.train.epochs=1",
            "backbone.train.batch_size=8",
        ]
    )
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result["dataset"] == "coco" and result["forget"] == ["dog"]
    for key in ("forget/i2t_map", "forget/t2i_map", "retain/i2t_map", "retain/t2i_map"):
        assert 0.0 <= result["metrics"][key] <= 1.0
