"""Residual knowledge per tower: what cross-modal mAP cannot see (`evaluator.residual`).

A method can cut the link between the towers (I->T and T->I drop to Retrain's level) while one tower
still finds and separates the forgotten class. Two measures on the same binary codes retrieval uses:
- unimodal mAP (`forget/i2i_map`, `forget/t2t_map`, and the retain side): image queries against the
  database images, text queries against the database texts, with the forget relevance of the
  cross-modal mAP (`ppp/evaluation/retrieval.py`);
- a linear probe (`probe/image_auc`, `probe/text_auc`): logistic regression fitted on the database
  codes of one modality, target "carries a forget class", scored (ROC AUC) on the evaluated queries.
Neither is a quality metric of |Δ| (`ppp/evaluation/delta.py`) or of any search objective.
"""

from __future__ import annotations

import numpy as np
import torch

UNIMODAL = (("i2i", 0, 0), ("t2t", 1, 1))  # (direction, query modality, database modality); 0 image, 1 text


def linear_probe_auc(
    train_codes: torch.Tensor, train_target: torch.Tensor, test_codes: torch.Tensor, test_target: torch.Tensor
) -> float:
    """ROC AUC on the test codes of a logistic regression fitted on the training codes (NaN when either
    side holds one class only, where neither a fit nor an AUC is defined)."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn only for runs that probe (~1.4 s import)
    from sklearn.metrics import roc_auc_score

    train_y, test_y = train_target.numpy().astype(int), test_target.numpy().astype(int)
    if len(np.unique(train_y)) < 2 or len(np.unique(test_y)) < 2:
        return float("nan")
    probe = LogisticRegression(class_weight="balanced", max_iter=2000)  # lbfgs: deterministic
    probe.fit(train_codes.float().numpy(), train_y)
    return float(roc_auc_score(test_y, probe.decision_function(test_codes.float().numpy())))


def probe_aucs(
    query_codes: tuple[torch.Tensor, torch.Tensor],
    db_codes: tuple[torch.Tensor, torch.Tensor],
    query_forget: torch.Tensor,
    db_forget: torch.Tensor,
) -> dict[str, float]:
    """`probe/image_auc` and `probe/text_auc`: how well each tower's codes still tell the forget class."""
    return {
        f"probe/{modality}_auc": linear_probe_auc(db_codes[m], db_forget, query_codes[m], query_forget)
        for m, modality in enumerate(("image", "text"))
    }
