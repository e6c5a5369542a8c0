"""CLIP's own embedding space (the towers' outputs before any hash head): prompt-averaged class text
embeddings and image embeddings, what zero-shot classification and the CLIP-side methods (CCUP, the
multimodal nullspace) work on.

A system serves this space with `embed_images(images) -> (N, d)` and `embed_texts(texts) -> (N, d)`, both
unit-norm (`ClipHashingSystem` does). Prompts: each template's `{}` takes the class word; with a domain,
`domain_template`'s `{domain}` takes the domain word and its `{}` the templated prompt, as the captions of
`digit_scenes` with `dataset.domains` read ("a negative image of a picture of six").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ppp.models.base import System
from ppp.schema import prompt_template, schema, setting


@schema
class Prompts:
    """The prompt block (`prompts/digits.yaml`), mounted by the zero-shot settings and the CLIP-side methods."""

    templates: list[str] = setting(prompt_template())
    domain_template: str = setting(prompt_template("domain"))


def prompts(
    word: str, templates: list[str], domains: list[str] | None = None, domain_template: str | None = None
) -> list[str]:
    """The prompts of the class `word`: one per template, or one per template and domain."""
    texts = [t.format(word) for t in templates]
    return [domain_template.format(t, domain=d) for d in domains for t in texts] if domains else texts


def similarity_logits(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """(N, M): `scale` times the cosine of image embedding i and text embedding j, CLIP's logits."""
    return scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T


@torch.no_grad()
def class_text_embeddings(
    system: System,
    words: list[str],
    templates: list[str],
    domains: list[str] | None = None,
    domain_template: str | None = None,
) -> torch.Tensor:
    """(C, d): per class, the mean of its prompts' unit text embeddings, renormalised (CLIP's prompt
    ensembling); with `domains`, over the prompts of every one of them (one domain: that cell's embedding)."""
    per_class = [prompts(w, templates, domains, domain_template) for w in words]
    emb = system.embed_texts([p for ps in per_class for p in ps]).reshape(len(words), len(per_class[0]), -1).mean(1)
    return F.normalize(emb, dim=-1)


@torch.no_grad()
def image_embeddings(system: System, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """(N, d) unit image embeddings of uint8 images (N, 3, H, W), through the system's own transform."""
    system.eval().to(device)
    parts = [
        system.embed_images(torch.stack([system.transform(i) for i in images[s : s + batch_size]]).to(device))
        for s in range(0, len(images), batch_size)
    ]
    return torch.cat(parts).cpu()
