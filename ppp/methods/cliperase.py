"""CLIPErase (Yang et al., ACL 2025): fine-tune both CLIP towers on forget and retain image-text pairs
with three terms, on the shared training loop. Term shapes follow the third-party reimplementation
described in ../shared/reference/clip-unlearning-and-benchmarks.md §1 (the paper's method section
could not be read); every open point is a config key (docs/decisions.md, "CLIP-side unlearning").

On a batch of forget and retain pairs, S = scale * cos(image_i, text_j) in CLIP's own space (the
towers' outputs before the hash heads), scale = the frozen original's logit scale:
- forgetting (`forget_loss`): `ascent`, minus the InfoNCE of the forget pairs in both directions
  (gradient ascent, unbounded); `bounded`, the mean squared distance of each forget pair's logit
  S_kk to the original's logit for a mismatched pair (its row's next pair in the batch);
- retention: the InfoNCE of the retain pairs, both directions;
- consistency: KL(original || model) of the retain rows' similarity distributions, both directions.
L = forget_weight * forget + retain_weight * retain + consistency_weight * consistency.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ppp.data.base import ForgetTagged
from ppp.errors import choose
from ppp.methods.baselines import Trained, _train
from ppp.methods.registry import CLIP_SPACE, METHODS
from ppp.models.clip_space import similarity_logits
from ppp.schema import integer, number, one_of, schema, setting

FORGET_LOSSES = ("ascent", "bounded")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` holds; 0 (with a gradient path) when it holds nowhere."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def cliperase_terms(
    img: torch.Tensor,
    txt: torch.Tensor,
    teacher_img: torch.Tensor,
    teacher_txt: torch.Tensor,
    is_forget: torch.Tensor,
    scale: torch.Tensor | float,
    forget_loss: str,
) -> dict[str, torch.Tensor]:
    """The three terms on one batch of pairs (row k: image k, text k), `is_forget` marking forget pairs."""
    choose("method.forget_loss", forget_loss, FORGET_LOSSES)
    logits = similarity_logits(img, txt, scale)
    with torch.no_grad():
        teacher = similarity_logits(teacher_img, teacher_txt, scale)
    target = torch.arange(len(logits), device=logits.device)
    ce_i2t = F.cross_entropy(logits, target, reduction="none")
    ce_t2i = F.cross_entropy(logits.T, target, reduction="none")
    forget, retain = is_forget.float(), (~is_forget).float()
    if forget_loss == "ascent":
        forgetting = -(_masked_mean(ce_i2t, forget) + _masked_mean(ce_t2i, forget))
    else:
        mismatched = teacher[target, target.roll(-1)]
        forgetting = _masked_mean((logits.diagonal() - mismatched) ** 2, forget)
    kl = [
        F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), log_target=True, reduction="none").sum(1)
        for s, t in ((logits, teacher), (logits.T, teacher.T))
    ]
    return {
        "forget": forgetting,
        "retain": _masked_mean(ce_i2t, retain) + _masked_mean(ce_t2i, retain),
        "consistency": _masked_mean(kl[0], retain) + _masked_mean(kl[1], retain),
    }


@schema
class CLIPEraseSettings(Trained):
    needs = frozenset({CLIP_SPACE})

    forget_loss: str = setting(one_of(*FORGET_LOSSES))
    forget_weight: float = setting(number(0))
    retain_weight: float = setting(number(0))
    consistency_weight: float = setting(number(0))
    retain_samples: int | None = setting(integer(1, optional=True))


@METHODS.register("cliperase", schema=CLIPEraseSettings)
def cliperase(system, ctx, cfg: DictConfig):
    """Fine-tune on D_f and `retain_samples` pairs of D_r (all when null) against a frozen copy of the original."""
    original = copy.deepcopy(system).eval().requires_grad_(False)
    scale = float(original.net.clip.logit_scale.exp().clamp(max=100))
    data = ForgetTagged(ctx.forget_train, ctx.retain_train.sample(cfg.retain_samples, ctx.sample_seed))
    weights = {
        "forget": float(cfg.forget_weight),
        "retain": float(cfg.retain_weight),
        "consistency": float(cfg.consistency_weight),
    }

    def objective(student, batch):
        img, txt = student.net.embeddings(batch["image"], batch["text"])
        with torch.no_grad():
            teacher_img, teacher_txt = original.net.embeddings(batch["image"], batch["text"])
        terms = cliperase_terms(img, txt, teacher_img, teacher_txt, batch["forget"], scale, cfg.forget_loss)
        return sum(weights[k] * v for k, v in terms.items())

    return _train(system, data, ctx, cfg, objective)
