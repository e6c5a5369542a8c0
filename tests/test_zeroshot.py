"""Zero-shot classification in CLIP's own space (`ppp/evaluation/zeroshot.py`), the one-digit test images
and the `dataset.domains` renderings."""

import hashlib
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from test_configs import compose_with, valid
from tiny_contexts import make_hashing_context

from ppp.config import compose_config, configs_initialised, group_options
from ppp.data.digits import DIGIT_NAMES, _load_glyphs, digit_scenes, one_digit_images, render_domain
from ppp.errors import ConfigError
from ppp.evaluation import EVALUATORS
from ppp.evaluation.zeroshot import zeroshot_accuracy
from ppp.models.base import System
from ppp.models.clip_space import prompts

SIX, THREE = DIGIT_NAMES.index("six"), DIGIT_NAMES.index("three")


class HandMade(System):
    """Known answers: an image's pixel (0, 0, 0) holds its class and (1, 0, 0) its domain; it embeds as
    its class, except that every six looks like a seven and a three in domain 1 like a two. A text
    embeds as the digit word it contains."""

    task = "retrieval"

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Identity()

    def transform(self, image):
        return image.float()

    def embed_images(self, x):
        cls, dom = x[:, 0, 0, 0].long(), x[:, 1, 0, 0].long()
        seen = torch.where(cls == SIX, SIX + 1, cls)
        seen = torch.where((cls == THREE) & (dom == 1), THREE - 1, seen)
        return F.one_hot(seen, 10).float()

    def embed_texts(self, texts):
        words = [next(i for i, n in enumerate(DIGIT_NAMES) if n in t.split()) for t in texts]
        return F.one_hot(torch.tensor(words), 10).float()


def test_zeroshot_accuracy_on_a_hand_made_model():
    classes = torch.arange(10).repeat_interleave(3).repeat(2)  # 3 images per class, 2 domains
    domain_idx = torch.arange(2).repeat_interleave(30)
    images = torch.zeros(60, 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 1, 0, 0] = classes.to(torch.uint8), domain_idx.to(torch.uint8)
    out = zeroshot_accuracy(
        HandMade(),
        images,
        classes,
        domain_idx,
        DIGIT_NAMES,
        ["ink", "negative"],
        [SIX],
        ["a picture of {}", "{}"],
        "a {domain} image of {}",
        torch.device("cpu"),
        batch_size=7,
    )
    assert out["forget/zs_acc"] == 0.0
    assert out["retain/zs_acc"] == pytest.approx(17 / 18)  # 9 classes x 2 domains, one cell wrong
    assert out["zs_acc/three/negative"] == 0.0 and out["zs_acc/three/ink"] == 1.0
    assert out["zs_acc/six/ink"] == 0.0 and out["zs_acc/seven/negative"] == 1.0
    assert len([k for k in out if k.startswith("zs_acc/")]) == 20
    plain = zeroshot_accuracy(
        HandMade(),
        images,
        classes,
        domain_idx,
        DIGIT_NAMES,
        [],
        [SIX, THREE],
        ["{}"],
        "a {domain} image of {}",
        torch.device("cpu"),
    )
    assert plain == {"forget/zs_acc": 0.5 * 0.5, "retain/zs_acc": 1.0}  # no grid without domains


def test_one_digit_images_hold_one_glyph_of_their_class():
    images, classes, domain_idx, glyphs = one_digit_images(
        3, grid=4, seed=0, domains=["ink", "negative"], dataset_seed=0
    )
    assert images.shape == (60, 3, 32, 32) and images.dtype == torch.uint8
    assert classes.tolist() == list(np.repeat(np.arange(10), 3)) * 2 and domain_idx.tolist() == [0] * 30 + [1] * 30
    cells = images[:30].float().amax(1).reshape(30, 4, 8, 4, 8).amax(dim=(2, 4))
    assert ((cells > 100).sum(dim=(1, 2)) == 1).all()  # ink: one bright cell
    assert images[30:].float().mean() > 200  # negative: a light canvas
    assert (_load_glyphs()[1][glyphs.numpy()] == classes.numpy()).all()  # a glyph of the image's class
    again, _, _, _ = one_digit_images(3, grid=4, seed=0, domains=["ink", "negative"], dataset_seed=0)
    assert torch.equal(images, again)


def test_val_and_test_draws_are_other_images_each_deterministic():
    domains = ["ink", "negative"]
    test, classes, domain_idx, test_glyphs = one_digit_images(3, grid=4, seed=0, domains=domains, dataset_seed=0)
    val, val_classes, val_domains, val_glyphs = one_digit_images(
        3, grid=4, seed=0, domains=domains, split="val", dataset_seed=0
    )
    assert torch.equal(classes, val_classes) and torch.equal(domain_idx, val_domains)
    flat_test, flat_val = test.flatten(1), val.flatten(1)
    assert not (flat_val[:, None] == flat_test[None]).all(-1).any()  # no validation image is a test image
    assert not set(val_glyphs.tolist()) & set(test_glyphs.tolist())  # nor drawn from a test glyph
    assert torch.equal(val, one_digit_images(3, grid=4, seed=0, domains=domains, split="val", dataset_seed=0)[0])
    assert torch.equal(test, one_digit_images(3, grid=4, seed=0, domains=domains, split="test", dataset_seed=0)[0])
    digest = hashlib.sha256(test.numpy().tobytes() + classes.numpy().tobytes() + domain_idx.numpy().tobytes())
    assert digest.hexdigest()[:16] == "d0cc7232bc14f032"  # version 2's test draw (ppp.data.digits.VERSION)


class PixelSum(HandMade):
    """An image embeds as the digit of its pixel sum mod 10: an answer that depends on the very images drawn."""

    def embed_images(self, x):
        return F.one_hot(x.sum(dim=(1, 2, 3)).long() % 10, 10).float()


def test_the_evaluator_split_picks_the_zeroshot_draw():
    ctx = SimpleNamespace(
        cfg=OmegaConf.create({"dataset": {"grid": 4, "domains": ["ink", "negative"], "seed": 1}}),
        bench=SimpleNamespace(class_names=DIGIT_NAMES),
        forget_idx=[SIX],
        device=torch.device("cpu"),
    )
    settings = {"per_class": 4, "seed": 0, "templates": ["{}"], "domain_template": "a {domain} image of {}"}
    metrics = {}
    for split in ("test", "val"):
        cfg = OmegaConf.create({"zeroshot_settings": settings, "batch_size": 64, "split": split})
        metrics[split] = EVALUATORS.get("zeroshot")(PixelSum(), ctx, cfg)
        images, classes, domain_idx, _ = one_digit_images(4, 4, 0, ["ink", "negative"], split, dataset_seed=1)
        assert metrics[split] == zeroshot_accuracy(
            PixelSum(),
            images,
            classes,
            domain_idx,
            DIGIT_NAMES,
            ["ink", "negative"],
            [SIX],
            ["{}"],
            "a {domain} image of {}",
            torch.device("cpu"),
        )
    assert metrics["test"] != metrics["val"]
    no_split = OmegaConf.create({"zeroshot_settings": settings, "batch_size": 64})  # evaluator=zeroshot: test
    assert EVALUATORS.get("zeroshot")(PixelSum(), ctx, no_split) == metrics["test"]


def all_prompts(block, domains) -> set[str]:
    return {p for w in DIGIT_NAMES for p in prompts(w, list(block.templates), domains, block.domain_template)}


def test_the_evaluators_prompts_are_held_out_from_every_methods_prompts():
    """Issue 21: the zero-shot evaluator's templates (prompts/digits_eval.yaml) share no template, and no
    composed prompt, with any method's prompt block; the methods' block is the one mounted as method_prompts."""
    with configs_initialised():
        held_out = compose_config(["evaluator=zeroshot"]).evaluator.zeroshot_settings
        methods = {m: compose_config([f"method={m}"]).method for m in group_options("method")}
        beside_map = compose_config(["evaluator.zeroshot=true"]).evaluator.zeroshot_settings
    with_prompts = {m: block for m, block in methods.items() if "templates" in block}
    assert {"ccup", "ccup_ridge", "clip_nullspace"} <= set(with_prompts)
    for name, block in with_prompts.items():
        assert not set(held_out.templates) & set(block.templates), name
        assert block.templates == held_out.method_prompts.templates, name
        for domains in (None, ["ink", "negative", "outline"]):
            assert not all_prompts(held_out, domains) & all_prompts(block, domains), name
    assert beside_map == held_out


class Recording(PixelSum):
    """PixelSum that records every batch of texts it embeds."""

    def __init__(self):
        super().__init__()
        self.texts = []

    def embed_texts(self, texts):
        self.texts.append(list(texts))
        return super().embed_texts(texts)


def test_the_evaluator_scores_the_held_out_prompts_and_the_methods_apart():
    domains = ["ink", "negative"]
    ctx = SimpleNamespace(
        cfg=OmegaConf.create({"dataset": {"grid": 4, "domains": domains, "seed": 0}}),
        bench=SimpleNamespace(class_names=DIGIT_NAMES),
        forget_idx=[SIX],
        device=torch.device("cpu"),
    )
    cfg = compose_config(["evaluator=zeroshot", "evaluator.zeroshot_settings.per_class=2"]).evaluator
    system = Recording()
    out = EVALUATORS.get("zeroshot")(system, ctx, cfg)
    settings = cfg.zeroshot_settings
    assert [set(t) for t in system.texts] == [
        all_prompts(settings, domains),
        all_prompts(settings.method_prompts, domains),
    ]
    # the texts embed as their digit word whatever the template: the same answers under both prompt sets
    main = {k: v for k, v in out.items() if "method_prompts" not in k}
    assert {k.replace("zs_acc_method_prompts", "zs_acc"): v for k, v in out.items() if k not in main} == main
    images, classes, domain_idx, _ = one_digit_images(2, 4, 0, domains, "test", dataset_seed=0)
    expected = zeroshot_accuracy(
        PixelSum(), images, classes, domain_idx, DIGIT_NAMES, domains, [SIX], ["{}"], "a {domain} image of {}", "cpu"
    )
    assert main == expected and len(main) == 2 + 20


def test_domain_renderings():
    image = np.zeros((3, 8, 8), dtype=np.uint8)
    image[:, 2:6, 2:6] = 200  # a filled square
    assert np.array_equal(render_domain(image, "ink"), image)
    assert np.array_equal(render_domain(image, "negative"), 255 - image)
    outline = render_domain(image, "outline")
    assert outline[0, 3, 3] == 0 and outline[0, 2, 2] == 200 and outline[0, 1, 1] == 200 and outline[0, 0, 0] == 0


def test_domains_keep_the_scenes_and_name_the_rendering():
    kw = dict(n_total=300, n_query=50, n_train=150, n_val=50)
    plain, styled = digit_scenes(**kw), digit_scenes(domains=["ink", "negative", "outline"], **kw)
    assert torch.equal(plain.train.labels, styled.train.labels)
    seen = set()
    for i in range(60):
        (img, text, _), (img0, text0, _) = styled.database[i], plain.database[i]
        domain = text.split()[1]
        seen.add(domain)
        assert text == f"a {domain} image of {text0}"
        expected = {
            "ink": img0.numpy(),
            "negative": 255 - img0.numpy(),
            "outline": render_domain(img0.numpy(), "outline"),
        }
        assert np.array_equal(img.numpy(), expected[domain])
    assert seen == {"ink", "negative", "outline"}


def test_zeroshot_beside_retrieval_on_the_tiny_clip(tmp_path, single_thread):
    ctx = make_hashing_context(
        tmp_path,
        ["evaluator.zeroshot=true", "evaluator.zeroshot_settings.per_class=4", "dataset.domains=[ink,negative]"],
    )
    system = ctx.trained()[0]
    both = EVALUATORS.get("retrieval")(system, ctx, ctx.cfg.evaluator)
    alone = EVALUATORS.get("zeroshot")(system, ctx, ctx.cfg.evaluator)
    assert alone == {k: v for k, v in both.items() if "zs_acc" in k}
    assert "forget/i2t_map" in both and set(alone) >= {"forget/zs_acc", "retain/zs_acc", "zs_acc/six/negative"}
    assert {"forget/zs_acc_method_prompts", "zs_acc_method_prompts/six/negative"} <= set(alone)
    assert len(alone) == 2 * (2 + 20) and all(0.0 <= v <= 1.0 for v in alone.values())  # both prompt sets


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.domains=[ink,sketch]", "unknown value(s) sketch"),
        ("dataset.domains=[ink,ink]", "names a value twice"),
        ("evaluator.zeroshot_settings.templates=[a picture of]", "must hold one {} slot"),
        ("evaluator.zeroshot_settings.domain_template='{} image'", "a {domain} slot"),
        ("backbone.loss.contrastive_weight=-1", "must lie in"),
    ],
)
def test_bad_zeroshot_and_domain_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        valid(compose_with(["evaluator.zeroshot=true", override]))


def test_zeroshot_needs_a_clip_backbone_and_digit_scenes():
    with pytest.raises(ConfigError, match="needs a CLIP backbone"):
        valid(compose_with(["evaluator=zeroshot", "backbone=resnet18"]))
    with pytest.raises(ConfigError, match="digit_scenes generator"):
        valid(compose_with(["evaluator.zeroshot=true", "dataset=coco"]))
