"""What one model contributes to issue 23's forgetting quality over N models (`evaluator.example_statistics`).

Per forget example (D_f's items, the same ones on every model seed: classes and seeded shares do not depend on
`seed`), the statistic the competition's ε and U-LiRA compare across models: LiRA's logit-scaled confidence of
the true class (classification) or the pair's logit similarity against a fixed caption gallery (retrieval: the
audit's statistic; the gallery is `GALLERY` database captions drawn with a fixed seed, the pair's own caption
left out). And the model's quality on retained training data (`RETAIN_SAMPLES` of D_r, drawn with a fixed seed):
the competition's retain accuracy, for retrieval their mAP as queries against the database. The report stacks
these over the runs of N seeds (`ppp/report/forgetting.py`).
"""

from __future__ import annotations

import torch

from ppp.data.base import root_indices
from ppp.evaluation.map import average_precisions
from ppp.evaluation.membership_scores import logit_confidence, pair_logit_similarity
from ppp.evaluation.retrieval import CROSS, Encoder
from ppp.train import collect

GALLERY = 256
RETAIN_SAMPLES = 500
DRAW_SEED = 0  # the gallery and the retained sample: fixed, so every model is measured on the same items


def retrieval_statistics(encoder: Encoder, ctx) -> dict:
    forget, database = ctx.forget_train, ctx.bench.database
    draw = torch.randperm(len(database), generator=torch.Generator().manual_seed(DRAW_SEED))[:GALLERY].sort().values
    gallery = database.subset(draw)
    image, text = encoder(forget, binary=False)
    _, gallery_text = encoder(gallery, binary=False)
    own = root_indices(gallery)
    exclude = torch.tensor(
        [int(torch.nonzero(own == r).flatten()[0]) if r in own else -1 for r in root_indices(forget)]
    )
    statistic = pair_logit_similarity(image.float(), text.float(), gallery_text.float(), exclude=exclude)
    retain = ctx.retain_train.sample(RETAIN_SAMPLES, DRAW_SEED)
    q_codes, d_codes = encoder(retain), encoder(database)
    aps = [average_precisions(q_codes[q], d_codes[d], retain.labels, database.labels).mean() for _, q, d in CROSS]
    return {"fq/statistic": torch.as_tensor(statistic), "fq/retain_quality": float(torch.stack(aps).mean())}


def classification_statistics(system, ctx, batch_size: int, num_workers: int = 0) -> dict:
    forget = ctx.forget_train
    (logits,) = collect(system, forget, ctx.device, lambda b: system.logits(b).float(), batch_size, num_workers)
    retain = ctx.retain_train.sample(RETAIN_SAMPLES, DRAW_SEED)
    (predicted,) = collect(system, retain, ctx.device, lambda b: system.logits(b).argmax(1), batch_size, num_workers)
    return {
        "fq/statistic": torch.as_tensor(logit_confidence(logits, forget.labels)),
        "fq/retain_quality": float((predicted.cpu() == retain.labels).float().mean()),
    }
