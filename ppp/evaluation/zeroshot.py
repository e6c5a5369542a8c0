"""Zero-shot classification in CLIP's own embedding space (`evaluator.zeroshot`, or `evaluator=zeroshot`).

Each image holds one digit (`ppp.data.digits.one_digit_images`, drawn with the dataset's grid and
domains and the evaluator's own seed, from glyphs no split of the dataset uses; `evaluator.split=val` draws
other images, from a stream and glyphs of their own, on which hyperparameters are chosen), so chance is 10 % and a forgotten class can fall to it; on
multi-label scenes a co-occurring digit would count as a hit. An image is assigned the class whose
prompt-averaged text embedding is the most cosine-similar (`ppp/models/clip_space.py`); with domains,
the prompts of every domain are averaged ("a negative image of six", ...), as the training captions
always name one.
Metrics: `forget/zs_acc` and `retain/zs_acc` over the images of forget / retained classes and, where the
data has domains, `zs_acc/<class>/<domain>` for every cell. Not quality metrics of |Δ|.
Two prompt sets (issue 21): the evaluator's own, held out from every method (`prompts/digits_eval.yaml`, the
keys above, what the tables report), and the CLIP-side methods' (`prompts/digits.yaml`, mounted as
`method_prompts`: `forget/zs_acc_method_prompts`, `retain/zs_acc_method_prompts`,
`zs_acc_method_prompts/<class>/<domain>`). A method that projects out its own prompts' directions is scored
on directions it never saw; the second set shows how much of its effect is tied to its prompts.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ppp.data.digits import DigitScenesSettings, one_digit_images
from ppp.models.clip_space import Prompts, class_text_embeddings, image_embeddings
from ppp.schema import block, integer, read, schema, setting

METHOD_PROMPTS = "_method_prompts"  # the suffix of the methods' prompt set's keys


@schema
class ZeroshotSettings(Prompts):
    """`evaluator.zeroshot_settings` (`zeroshot/default.yaml`): the evaluator's held-out prompt block, the
    methods' prompt block (`method_prompts`; none: not scored) and the images' draw."""

    per_class: int = setting(integer(1))
    seed: int = setting(integer(0))
    method_prompts: Prompts | None = block(Prompts, default=None)


def zeroshot_accuracy(
    system,
    images: torch.Tensor,
    classes: torch.Tensor,
    domain_idx: torch.Tensor,
    class_names: list[str],
    domains: list[str],
    forget_idx: list[int],
    templates: list[str],
    domain_template: str,
    device: torch.device,
    batch_size: int = 256,
    embedded: torch.Tensor | None = None,
    suffix: str = "",
) -> dict[str, float]:
    """Forget / retain zero-shot accuracy of `images` of known `classes`, and the class x domain grid
    when `domains` is not empty (`domain_idx` indexes it). `embedded`: the images' embeddings when already
    computed; `suffix` follows `zs_acc` in every key (`METHOD_PROMPTS` for the methods' prompt set)."""
    text = class_text_embeddings(system, class_names, templates, domains, domain_template)
    if embedded is None:
        embedded = image_embeddings(system, images, device, batch_size)
    predicted = (embedded @ text.to("cpu").T).argmax(1)
    correct = (predicted == classes).float()
    is_forget = torch.isin(classes, torch.as_tensor(forget_idx, dtype=classes.dtype))
    key = f"zs_acc{suffix}"
    out = {f"forget/{key}": float(correct[is_forget].mean()), f"retain/{key}": float(correct[~is_forget].mean())}
    for d, domain in enumerate(domains):
        for c, name in enumerate(class_names):
            cell = (classes == c) & (domain_idx == d)
            out[f"{key}/{name}/{domain}"] = float(correct[cell].mean())
    return out


def evaluate_zeroshot(
    system, ctx, settings: DictConfig, split: str = "test", batch_size: int = 256
) -> dict[str, float]:
    """Zero-shot metrics of `system` on `settings.per_class` one-digit images per class and domain of
    the `split` draw, under the evaluator's prompts and, when the settings name them, the methods'."""
    domains = list(read(DigitScenesSettings, ctx.cfg.dataset).domains or [])
    images, classes, domain_idx, _ = one_digit_images(
        int(settings.per_class),
        int(ctx.cfg.dataset.grid),
        int(settings.seed),
        domains or None,
        split,
        dataset_seed=int(ctx.cfg.dataset.seed),
    )
    embedded = image_embeddings(system, images, ctx.device, batch_size)
    sets = {"": settings}
    if read(ZeroshotSettings, settings).method_prompts is not None:
        sets[METHOD_PROMPTS] = settings.method_prompts
    out = {}
    for suffix, prompts in sets.items():
        out.update(
            zeroshot_accuracy(
                system,
                images,
                classes,
                domain_idx,
                ctx.bench.class_names,
                domains,
                ctx.forget_idx,
                list(prompts.templates),
                prompts.domain_template,
                ctx.device,
                batch_size,
                embedded,
                suffix,
            )
        )
    return out
