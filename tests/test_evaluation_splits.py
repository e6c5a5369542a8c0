"""Which samples the evaluators score: the test or the validation split, and which forget queries."""

import pytest
import torch
from omegaconf import OmegaConf
from tiny_contexts import TinyClassifier
from torch import nn

from ppp.data.base import carries_any
from ppp.data.digits import digit_scenes, digits
from ppp.errors import ConfigError
from ppp.evaluation import EVALUATORS
from ppp.evaluation.queries import check_query_settings, evaluation_set
from ppp.forget_set import ForgetSet
from ppp.methods import UnlearnContext
from ppp.models.base import System

SIX = 6


def context(bench, sample_seed=0) -> UnlearnContext:
    return UnlearnContext(
        cfg=OmegaConf.create({"sample_seed": sample_seed, "num_workers": 0}),
        bench=bench,
        forget_set=ForgetSet("classes", [SIX], None, None),
        device=torch.device("cpu"),
        cache=None,
    )


def settings(**kw):
    return OmegaConf.create(
        {
            "forget_relevance": "forget_classes",
            "ties": "average",
            "batch_size": 64,
            "mia": [],
            "split": "test",
            "forget_queries": "all",
            "forget_query_samples": 20,
            **kw,
        }
    )


@pytest.fixture(scope="module")
def scenes():
    return digit_scenes(n_total=400, n_query=60, n_train=150, n_val=90)


class LabelCodes(System):
    """Codes that are a fixed function of the labels; records the labels of everything it encodes."""

    task = "retrieval"

    def __init__(self):
        super().__init__()
        self.net = nn.Identity()
        self.projection = torch.randn(10, 16, generator=torch.Generator().manual_seed(0))
        self.seen = []

    def transform(self, image):
        return image

    def collate(self, items):
        return {"label": torch.stack([label for _, _, label in items])}

    def codes(self, batch):
        self.seen.append(batch["label"])
        code = batch["label"] @ self.projection
        return code, code


class SixBlind(TinyClassifier):
    """Right on every image but the sixes, which it calls 'zero'; counts the images it scores."""

    def __init__(self):
        super().__init__(10, 8, 4)
        self.scored = 0

    def logits(self, batch):
        self.scored += len(batch["label"])
        return 10 * nn.functional.one_hot(torch.where(batch["label"] == SIX, 0, batch["label"]), 10).float()


def test_retrieval_on_val_scores_the_validation_queries(scenes):
    ctx = context(scenes)
    model = LabelCodes()
    m = EVALUATORS.get("retrieval")(model, ctx, settings(split="val"))
    is_six = scenes.val.labels[:, SIX] > 0
    assert (m["count/forget_queries"], m["count/retain_queries"]) == (int(is_six.sum()), int((~is_six).sum()))
    encoded = torch.cat(model.seen)
    assert len(encoded) == len(scenes.val) + len(scenes.database)
    assert torch.equal(encoded[: len(scenes.val)], scenes.val.labels)  # the queries encoded are the validation ones
    test = EVALUATORS.get("retrieval")(LabelCodes(), ctx, settings())
    assert test["count/forget_queries"] + test["count/retain_queries"] == len(scenes.query) == 60
    assert test["count/forget_queries"] == int(scenes.query.labels[:, SIX].sum())


def test_classification_on_val_scores_the_validation_images():
    bench = digits(per_class=40, size=8)
    model = SixBlind()
    m = EVALUATORS.get("classification")(model, context(bench), settings(split="val"))
    assert model.scored == len(bench.val) == 80 and len(bench.test) == 80
    assert (m["count/forget_images"], m["count/retain_images"]) == (8, 72)
    assert m["forget/acc"] == 0.0 and m["retain/acc"] == 1.0


@pytest.mark.parametrize("split", ["test", "val"])
def test_sampled_forget_queries_are_seeded_and_sized(scenes, split):
    data = scenes.evaluation_split(split)
    forget_items = set(data.root_indices()[carries_any(data.labels, [SIX])].tolist())
    draws = []
    for seed in (0, 0, 1):
        queries = evaluation_set(
            context(scenes, seed), settings(split=split, forget_queries="sampled", forget_query_samples=5)
        )
        retain, forget = queries.parts
        assert torch.equal(retain.labels, data.labels[data.labels[:, SIX] == 0])  # every retain query, untouched
        assert len(forget) == 5 and set(forget.root_indices().tolist()) <= forget_items
        draws.append(forget.root_indices())
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert len(forget_items) > 5


def test_forget_samples_are_the_methods_forget_samples(scenes):
    ctx = context(scenes, sample_seed=3)
    retain, forget = evaluation_set(ctx, settings(forget_queries="forget_samples", forget_query_samples=15)).parts
    assert torch.equal(forget.root_indices(), ctx.forget_train.sample(15, 3).root_indices())  # PPP draws D_f so
    assert set(forget.root_indices().tolist()) <= set(scenes.train.root_indices().tolist())
    m = EVALUATORS.get("retrieval")(
        LabelCodes(), ctx, settings(forget_queries="forget_samples", forget_query_samples=15)
    )
    assert m["count/forget_queries"] == 15
    assert m["count/retain_queries"] == int((scenes.query.labels[:, SIX] == 0).sum())


def test_validation_forget_samples_are_drawn_apart_from_the_test_draw(scenes):
    """split=val with forget_samples scores its own D_f training samples, none of the test draw's (which stays
    the methods' draw), seeded by the sample seed; D_f must hold twice the count."""
    ctx = context(scenes, sample_seed=3)
    draw = {
        split: evaluation_set(
            ctx, settings(split=split, forget_queries="forget_samples", forget_query_samples=10)
        ).parts[1]
        for split in ("test", "val")
    }
    test, val = (set(draw[s].root_indices().tolist()) for s in ("test", "val"))
    assert torch.equal(draw["test"].root_indices(), ctx.forget_train.sample(10, 3).root_indices())
    assert len(val) == 10 and not val & test and val <= set(ctx.forget_train.root_indices().tolist())
    again = evaluation_set(ctx, settings(split="val", forget_queries="forget_samples", forget_query_samples=10))
    assert torch.equal(again.parts[1].root_indices(), draw["val"].root_indices())
    other = evaluation_set(
        context(scenes, sample_seed=4), settings(split="val", forget_queries="forget_samples", forget_query_samples=10)
    )
    assert set(other.parts[1].root_indices().tolist()) != val
    half = len(ctx.forget_train) // 2
    check_query_settings(
        settings(split="val", forget_queries="forget_samples", forget_query_samples=half), scenes, [SIX]
    )
    too_many = settings(split="val", forget_queries="forget_samples", forget_query_samples=half + 1)
    with pytest.raises(ConfigError, match=f"needs {2 * half + 2}, D_f has {len(ctx.forget_train)}") as err:
        check_query_settings(too_many, scenes, [SIX])
    assert "\n" not in str(err.value)
    check_query_settings(settings(forget_queries="forget_samples", forget_query_samples=half + 1), scenes, [SIX])


def test_bad_settings_are_one_line_errors(scenes):
    no_val = digit_scenes(n_total=200, n_query=40, n_train=100, n_val=0)
    cases = [
        (settings(split="train"), scenes, "evaluator.split 'train'; valid choices: test, val"),
        (settings(forget_queries="some"), scenes, "valid choices: all, forget_samples, sampled"),
        (settings(forget_queries="sampled", forget_query_samples=0), scenes, "positive integer"),
        (settings(forget_queries="sampled", forget_query_samples="x"), scenes, "positive integer"),
        (settings(split="val"), no_val, "no val samples; set dataset.n_val"),
        (settings(split="val"), digits(per_class=20, size=8, val_fraction=0), "set dataset.val_fraction"),
    ]
    for cfg, bench, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            check_query_settings(cfg, bench)
        assert "\n" not in str(err.value)
    check_query_settings(settings(split="val", forget_queries="sampled"), scenes)
    check_query_settings(OmegaConf.create({}), scenes)  # absent keys: the test split, every forget query
