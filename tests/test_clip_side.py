"""CLIP-side unlearning: the closed-form projection (ppp/methods/projection.py), CCUP and the multimodal
nullspace (ppp/methods/clip_side.py), CLIPErase's terms (ppp/methods/cliperase.py)."""

import copy
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY
from omegaconf import OmegaConf
from test_configs import compose_with, valid
from tiny_contexts import make_hashing_context

from ppp.data.digits import DIGIT_NAMES
from ppp.errors import ConfigError
from ppp.methods import METHODS
from ppp.methods.clip_side import select_cells
from ppp.methods.cliperase import cliperase_terms
from ppp.methods.projection import forget_operator, orthonormal_basis, partial
from ppp.models.clip_hashing import ClipHashingSystem, contrastive_loss
from ppp.models.clip_space import class_text_embeddings

GEN = torch.Generator().manual_seed(0)
FORGET, RETAIN = torch.randn(8, 2, generator=GEN), torch.randn(8, 3, generator=GEN)
TEMPLATES = ["a picture of {}", "{}"]


def test_plain_projection_removes_the_forget_span_and_keeps_its_complement():
    m = forget_operator(FORGET, RETAIN, "plain")
    assert torch.allclose(m @ FORGET, torch.zeros_like(FORGET), atol=1e-5)
    q = orthonormal_basis(FORGET)
    orthogonal = torch.randn(8, 4, generator=GEN)
    orthogonal -= q @ (q.T @ orthogonal)
    assert torch.allclose(m @ orthogonal, orthogonal, atol=1e-5)
    assert torch.allclose(partial(m, 0.0), torch.eye(8)) and torch.allclose(
        partial(m, 0.5) @ FORGET, FORGET / 2, atol=1e-5
    )


def test_orthogonalised_projection_keeps_every_retained_direction():
    m = forget_operator(FORGET, RETAIN, "orthogonalised")
    assert torch.allclose(m @ RETAIN, RETAIN, atol=1e-5)
    q_r = orthonormal_basis(RETAIN)
    unique = FORGET - q_r @ (q_r.T @ FORGET)  # the forget part outside the retained span
    assert torch.allclose(m @ unique, torch.zeros_like(unique), atol=1e-5)


def test_ridge_projection_solves_its_normal_equations():
    lam, mu = 2.0, 0.1
    m = forget_operator(FORGET, RETAIN, "ridge", lam, mu)
    keep = lam * RETAIN @ RETAIN.T + mu * torch.eye(8)
    assert torch.allclose(m @ (FORGET @ FORGET.T + keep), keep, atol=1e-4)
    assert (m @ FORGET).norm() < 0.1 * FORGET.norm()


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return ClipHashingSystem("clip_tiny", bits=16, num_classes=10, context_length=24).eval()


def ctx_for(domains=None, forget=("six",)):
    cfg = OmegaConf.create({"dataset": {"domains": domains, "grid": 4}})
    return SimpleNamespace(
        cfg=cfg,
        bench=SimpleNamespace(class_names=list(DIGIT_NAMES)),
        sample_seed=0,
        forget_idx=[DIGIT_NAMES.index(f) for f in forget],
        device=torch.device("cpu"),
    )


def method_cfg(name, **kw):
    base = {
        "name": name,
        "templates": TEMPLATES,
        "domain_template": "a {domain} image of {}",
        "alpha": 1.0,
        "variant": "plain",
        "ridge_lambda": 1.0,
        "ridge_mu": 1e-3,
        "paradigm": "global",
        "domains": [],
        "prototypes": "none",
        "gap_images": 8,
    }
    return OmegaConf.create({**base, **kw})


def unlearned(clip, name, ctx, **kw):
    return METHODS.get(name)(copy.deepcopy(clip), ctx, method_cfg(name, **kw))


def test_ccup_zeroes_image_text_similarity_along_the_forget_directions(clip):
    images = torch.randn(6, 3, 32, 32, generator=GEN)
    text = class_text_embeddings(clip, DIGIT_NAMES, TEMPLATES)
    forget = text[[6, 8]]
    before = clip.net.clip.encode_image(images).detach()
    model, diagnostics = unlearned(clip, "ccup", ctx_for(forget=("six", "eight")))
    after = model.net.clip.encode_image(images).detach()
    assert diagnostics == {"ccup/forget_rank": 2}
    assert (after @ forget.T).abs().max() < 1e-5 < (before @ forget.T).abs().max()
    q = orthonormal_basis(forget.T)
    assert torch.allclose(after, before - (before @ q) @ q.T, atol=1e-5)  # the orthogonal part is untouched
    assert torch.allclose(class_text_embeddings(model, DIGIT_NAMES, TEMPLATES), text)  # the text tower too
    identity, _ = unlearned(clip, "ccup", ctx_for(), alpha=0.0)
    assert torch.equal(identity.net.clip.visual.proj, clip.net.clip.visual.proj)


def test_ccup_rows_apply_the_plain_and_the_ridge_operator(clip):
    """`method=ccup` is the paper's plain projection I - B B^T on the forget text embeddings' basis B;
    `method=ccup_ridge` the ridge operator of projection.py at mu 0.001 (the shipped configs of both rows)."""
    plain_cfg, ridge_cfg = (compose_with([f"method={name}"]).method for name in ("ccup", "ccup_ridge"))
    assert (plain_cfg.variant, ridge_cfg.variant, ridge_cfg.ridge_mu) == ("plain", "ridge", 0.001)
    assert {k: v for k, v in plain_cfg.items() if k not in ("name", "variant", "ridge_mu")} == {
        k: v for k, v in ridge_cfg.items() if k not in ("name", "variant", "ridge_mu")
    }  # one shared block: prompts, alpha, lambda
    ctx = ctx_for(forget=("six", "eight"))
    text = class_text_embeddings(clip, DIGIT_NAMES, list(plain_cfg.templates)).cpu()
    forget, retain = text[[6, 8]].T, text[[c for c in range(10) if c not in (6, 8)]].T
    proj = clip.net.clip.visual.proj.detach()
    edited = {}
    for cfg in (plain_cfg, ridge_cfg):
        model, diagnostics = METHODS.get(cfg.name)(copy.deepcopy(clip), ctx, cfg)
        assert diagnostics == {f"{cfg.name}/forget_rank": 2}
        edited[cfg.name] = model.net.clip.visual.proj.detach()
    b = orthonormal_basis(forget)
    assert torch.allclose(edited["ccup"], proj @ (torch.eye(len(b)) - b @ b.T), atol=1e-5)
    lam, mu = float(ridge_cfg.ridge_lambda), float(ridge_cfg.ridge_mu)
    keep = (lam * retain @ retain.T + mu * torch.eye(len(b))).double()
    ridge = keep @ torch.linalg.inv(forget.double() @ forget.double().T + keep)
    assert torch.allclose(edited["ccup_ridge"], proj @ ridge.float(), atol=1e-4)
    assert not torch.allclose(edited["ccup"], edited["ccup_ridge"], atol=1e-3)


def test_select_cells_per_paradigm():
    domains = ["ink", "negative", "outline"]
    forget, retain = select_cells("global", 10, [6], domains, [])
    assert forget == [(6, 0), (6, 1), (6, 2)] and len(retain) == 27
    forget, retain = select_cells("domain", 10, [6, 8], domains, ["negative"])
    assert forget == [(6, 1), (8, 1)] and (6, 0) in retain and (6, 2) in retain and (7, 1) in retain
    forget, retain = select_cells("complete", 10, [6], domains, ["ink", "outline"])
    assert sorted(forget) == sorted([(c, d) for c in range(10) for d in (0, 2)])
    assert retain == [(c, 1) for c in range(10)]
    assert set(forget) | set(retain) == {(c, d) for c in range(10) for d in range(3)}


def test_domain_specific_nullspace_keeps_the_other_cells(clip):
    domains = ["ink", "negative", "outline"]
    images = torch.randn(6, 3, 32, 32, generator=GEN)
    cells = torch.stack(
        [class_text_embeddings(clip, DIGIT_NAMES, TEMPLATES, [d], "a {domain} image of {}") for d in domains], 1
    )
    before = clip.net.clip.encode_image(images).detach()
    model, diagnostics = unlearned(
        clip,
        "clip_nullspace",
        ctx_for(domains),
        paradigm="domain",
        domains=["negative"],
        variant="orthogonalised",
        prototypes="modality_gap",
    )
    after = model.net.clip.encode_image(images).detach()
    assert diagnostics["clip_nullspace/forget_cells"] == 1 and diagnostics["clip_nullspace/forget_rank"] == 2
    kept = torch.cat([cells[c, d][None] for c in range(10) for d in range(3) if (c, d) != (6, 1)])
    assert torch.allclose(after @ kept.T, before @ kept.T, atol=1e-4)  # every retained cell's similarity
    assert not torch.allclose(after @ cells[6, 1], before @ cells[6, 1], atol=1e-3)


def test_cliperase_terms_on_hand_made_inputs():
    eye = torch.eye(3)
    is_forget = torch.tensor([True, False, False])
    ce = math.log(math.e + 2) - 1  # InfoNCE of a row with logits (1, 0, 0)
    terms = cliperase_terms(eye, eye, eye, eye, is_forget, 1.0, "ascent")
    assert terms["forget"].item() == pytest.approx(-2 * ce)
    assert terms["retain"].item() == pytest.approx(2 * ce)
    assert terms["consistency"].item() == pytest.approx(0.0, abs=1e-7)  # the model is the original
    bounded = cliperase_terms(eye, eye, eye, eye, is_forget, 1.0, "bounded")
    assert bounded["forget"].item() == pytest.approx(1.0)  # logit 1 pulled to a mismatched pair's 0
    teacher_txt = eye[[1, 0, 2]]  # the original pairs image 1 with text 0
    drift = cliperase_terms(eye, eye, eye, teacher_txt, is_forget, 1.0, "ascent")["consistency"].item()
    p, q = torch.tensor([math.e, 1, 1]) / (math.e + 2), torch.tensor([1, math.e, 1]) / (math.e + 2)
    kl = float((p * (p / q).log()).sum())  # row 1 and column 1 each swap their two largest probabilities
    assert drift == pytest.approx(
        kl / 2 + kl / 2
    )  # mean over the retain rows 1, 2 (row 2 does not move), per direction


def test_cliperase_gradient_ascent_moves_forget_pairs_apart():
    img = torch.randn(4, 5, generator=GEN, requires_grad=True)
    txt = torch.randn(4, 5, generator=GEN)
    terms = cliperase_terms(img, txt, img.detach(), txt, torch.tensor([True, True, False, False]), 10.0, "ascent")
    terms["forget"].backward()
    stepped = img.detach() - 0.1 * img.grad
    cos = torch.nn.functional.cosine_similarity
    assert cos(stepped[:2], txt[:2]).sum() < cos(img[:2].detach(), txt[:2]).sum()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=ccup", "method.alpha=1.5"], "method.alpha must lie in [0, 1]"),
        (["method=clip_nullspace", "method.alpha=-0.1"], "method.alpha must lie in [0, 1]"),
        (["method=ccup", "method.templates=[digit]"], "must hold one {} slot"),
        (["method=clip_nullspace", "method.paradigm=domain"], "needs method.domains"),
        (["method=clip_nullspace", "method.paradigm=domain", "method.domains=[negative]"], "not among dataset.domains"),
        (["method=clip_nullspace", "method.domains=[sketch]"], "unknown value(s) sketch"),
        (["method=cliperase", "method.forget_loss=clamp"], "method.forget_loss must be one of"),
        (["method=ccup", "backbone=resnet18"], "needs a CLIP backbone"),
        (["method=ccup_ridge", "backbone=resnet18"], "needs a CLIP backbone"),
    ],
)
def test_bad_clip_side_values_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        valid(compose_with(overrides))


def test_nullspace_and_ccup_through_the_runner(cli, tmp_path):
    """ccup on the tiny CLIP with zero-shot beside mAP: recorded unlearning time, the metrics of both."""
    cli(["method=ccup", "evaluator.zeroshot=true", "evaluator.zeroshot_settings.per_class=5", "references=[]", *TINY])
    result = json.loads(next(Path(tmp_path / "run").glob("metrics.json")).read_text())["metrics"]
    assert 0 < result["time/unlearn_s"] < 1.0 and result["ccup/forget_rank"] == 1
    assert {"forget/zs_acc", "retain/zs_acc", "forget/i2t_map", "retain/t2i_map"} <= set(result)


def test_contrastive_backbone_adds_clip_infonce_to_the_hashing_loss():

    systems = []
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        systems.append(
            ClipHashingSystem("clip_tiny", bits=16, num_classes=10, context_length=24, contrastive_weight=weight).eval()
        )
    batch = {
        "image": torch.randn(4, 3, 32, 32, generator=GEN),
        "text": systems[0].tokenizer(["one", "two", "six", "a"]),
        "label": torch.eye(10)[:4],
    }
    img, txt = systems[1].net.embeddings(batch["image"], batch["text"])
    infonce = contrastive_loss(img, txt, systems[1].net.clip.logit_scale.exp())
    assert systems[1].loss(batch).item() == pytest.approx(
        systems[0].loss(batch).item() + 0.5 * infonce.item(), rel=1e-5
    )


def test_cliperase_trains_the_towers_and_leaves_the_hash_heads(tmp_path, single_thread):

    ctx = make_hashing_context(
        tmp_path, ["method=cliperase", "method.train.retrieval.epochs=1", "method.retain_samples=40"]
    )
    original = ctx.trained()[0]
    model, diagnostics = METHODS.get("cliperase")(copy.deepcopy(original), ctx, ctx.cfg.method)
    before, after = dict(original.net.named_parameters()), dict(model.net.named_parameters())
    assert diagnostics == {}
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("image_head.", "text_head.")))
    assert not torch.equal(before["clip.visual.proj"], after["clip.visual.proj"])
    assert not torch.equal(before["clip.text_projection"], after["clip.text_projection"])
