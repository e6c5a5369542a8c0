"""CLIP-side unlearning without training: CCUP (`ccup`, the paper's plain projection; `ccup_ridge`, the
ridge operator) and the domain-aware multimodal nullspace
(`clip_nullspace`). Both build forget and retain directions in CLIP's own space from prompt-averaged
text embeddings (`ppp/models/clip_space.py`) and edit the image projection in closed form
(`ppp/methods/projection.py`); no image of the training data is used.

clip_nullspace works on (class, domain) cells, the domains being `dataset.domains` (one unnamed domain
without them). Paradigms (`method.paradigm`):
- `global`: the forget classes in every domain; retained: every other class in every domain;
- `domain`: the forget classes in the chosen domains (`method.domains`); retained: every other cell,
  the same classes in the other domains included;
- `complete`: every class in the chosen domains; retained: every cell of the other domains.
A cell's directions are its text embedding (its domain's prompts) and, with `prototypes: modality_gap`,
a synthesised visual prototype: the text embedding shifted by the modality gap, the mean image
embedding of `gap_images` seeded noise images minus the mean text embedding of every cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ppp.data.digits import DOMAINS, DigitScenesSettings
from ppp.errors import ConfigError
from ppp.methods.projection import Projection, edit_image_projection, forget_operator, orthonormal_basis, partial
from ppp.methods.registry import CLIP_SPACE, FORGET_CLASSES, METHODS, MethodSettings
from ppp.models.clip_space import Prompts, class_text_embeddings, image_embeddings
from ppp.schema import integer, one_of, read, schema, setting, subset_of

PARADIGMS = ("global", "domain", "complete")
PROTOTYPES = ("none", "modality_gap")


@schema
class CCUPSettings(Prompts, Projection, MethodSettings):
    """ccup: the prompt and projection blocks; it projects out the forget classes' prompt embeddings."""

    needs = frozenset({CLIP_SPACE, FORGET_CLASSES})


@schema
class NullspaceSettings(CCUPSettings):
    paradigm: str = setting(one_of(*PARADIGMS))
    domains: list[str] = setting(subset_of(*DOMAINS))
    prototypes: str = setting(one_of(*PROTOTYPES))
    gap_images: int = setting(integer(1))

    @classmethod
    def check_run(cls, cfg) -> None:
        """The domain and complete paradigms remove chosen renderings: the data must have them."""
        method = cfg.method
        if method.paradigm not in ("domain", "complete"):
            return
        chosen, available = list(method.domains), list(OmegaConf.select(cfg, "dataset.domains") or [])
        if not chosen:
            raise ConfigError(f"method.paradigm={method.paradigm} needs method.domains, e.g. method.domains=[negative]")
        missing = [d for d in chosen if d not in available]
        if missing:
            raise ConfigError(f"method.domains: {', '.join(missing)} not among dataset.domains ({available or 'none'})")


def dataset_domains(ctx) -> list[str]:
    """The data's domains (`dataset.domains` of digit_scenes; none for any other dataset)."""
    return list(read(DigitScenesSettings, ctx.cfg.dataset).domains or [])


def project_out(system, forget: torch.Tensor, retain: torch.Tensor, cfg: DictConfig) -> dict:
    """Edit the image projection to remove the forget directions (rows) under the method's variant and
    strength; the diagnostics: how many independent forget directions there were."""
    operator = forget_operator(
        forget.T.cpu(), retain.T.cpu(), cfg.variant, float(cfg.ridge_lambda), float(cfg.ridge_mu)
    )
    edit_image_projection(system.net.clip, partial(operator, float(cfg.alpha)))
    return {f"{cfg.name}/forget_rank": int(orthonormal_basis(forget.T.cpu()).shape[1])}


@METHODS.register("ccup", schema=CCUPSettings)
@METHODS.register("ccup_ridge", schema=CCUPSettings)
def ccup(system, ctx, cfg):
    """Remove the span of the forget classes' prompt-averaged text embeddings (averaged over the data's
    domains too, as zero-shot classification does) from the image embeddings. Two named rows, one code:
    `ccup` with the paper's plain projection, `ccup_ridge` with the ridge operator (their configs say which)."""
    domains = dataset_domains(ctx) or None
    text = class_text_embeddings(system, ctx.bench.class_names, list(cfg.templates), domains, cfg.domain_template)
    retained = [c for c in range(len(text)) if c not in ctx.forget_idx]
    return system, project_out(system, text[ctx.forget_idx], text[retained], cfg)


def select_cells(
    paradigm: str, num_classes: int, forget_idx: list[int], domains: list, chosen: list
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(forget cells, retained cells) as (class, domain index) pairs under `paradigm`."""
    cells = [(c, d) for d in range(len(domains)) for c in range(num_classes)]
    chosen_idx = [domains.index(d) for d in chosen]
    if paradigm == "global":
        forget = [(c, d) for c, d in cells if c in forget_idx]
    elif paradigm == "domain":
        forget = [(c, d) for c, d in cells if c in forget_idx and d in chosen_idx]
    elif paradigm == "complete":
        forget = [(c, d) for c, d in cells if d in chosen_idx]
    else:
        raise ConfigError(f"method.paradigm must be one of {', '.join(PARADIGMS)}; got '{paradigm}'")
    return forget, [cell for cell in cells if cell not in forget]


def modality_gap(system, text_cells: torch.Tensor, count: int, size: int, seed: int, device) -> torch.Tensor:
    """Mean unit image embedding of `count` seeded uniform-noise images minus the mean cell text
    embedding: the data-free estimate of the offset between CLIP's image and text clouds."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (count, 3, size, size), generator=gen, dtype=torch.uint8)
    return image_embeddings(system, noise, device).mean(0) - text_cells.mean(0)


@METHODS.register("clip_nullspace", schema=NullspaceSettings)
def clip_nullspace(system, ctx, cfg):
    """The multimodal nullspace of text prompts and synthesised visual prototypes of the forget cells,
    orthogonal to (or, with `ridge`, traded against) the retained cells', removed from the image projection."""
    domains = dataset_domains(ctx)
    names = ctx.bench.class_names
    per_domain = [
        class_text_embeddings(system, names, list(cfg.templates), [d] if d else None, cfg.domain_template)
        for d in (domains or [None])
    ]
    text = torch.stack(per_domain, 1).cpu()  # (class, domain, d)
    forget, retain = select_cells(cfg.paradigm, len(names), ctx.forget_idx, domains or [None], list(cfg.domains or []))
    directions = [text]
    if cfg.prototypes == "modality_gap":
        gap = modality_gap(
            system, text.flatten(0, 1), int(cfg.gap_images), 8 * int(ctx.cfg.dataset.grid), ctx.sample_seed, ctx.device
        )
        directions.append(F.normalize(text + gap, dim=-1))

    def rows(cells):
        """Every direction kind (text, prototype) of the cells, stacked."""
        return torch.cat([v[[c for c, _ in cells], [d for _, d in cells]] for v in directions])

    diagnostics = project_out(system, rows(forget), rows(retain), cfg)
    return system, {**diagnostics, "clip_nullspace/forget_cells": len(forget)}
