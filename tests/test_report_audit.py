"""The audit's table and ROC figure (ppp/report/audit.py) on hand-made runs."""

import numpy as np
from test_report import cell, write_run

from ppp.report import write_report

LEAVE_ONE_OUT = {"audit/lira_online/loo_forget/auc": 0.61, "audit/lira_online/loo_forget/auc_lo": 0.58}
LEAVE_ONE_OUT["audit/lira_online/loo_forget/auc_hi"] = 0.64


def audit_metrics(forget_auc: float, lo: float, hi: float, steps: float, back: int, js: float) -> dict:
    return {
        "forget/acc": 0.5,
        "retain/acc": 0.9,
        **{f"audit/lira_online/{s}/auc": forget_auc for s in ("forget", "retain")},
        **{f"audit/lira_online/{s}/auc_lo": lo for s in ("forget", "retain")},
        **{f"audit/lira_online/{s}/auc_hi": hi for s in ("forget", "retain")},
        "audit/lira_online/forget/tpr@0.1": 0.3,
        "audit/lira_online/forget/tpr@0.01": float("nan"),
        "audit/lira_online/forget/n_nonmembers": 80,
        "audit/lira_online/retain/n_nonmembers": 720,
        # RMIA: the Original's members told apart, but its interval reaches into Retrain's (wider on both sides)
        "audit/rmia/forget/auc": forget_auc - 0.1,
        "audit/rmia/forget/auc_lo": lo - 0.1,
        "audit/rmia/forget/auc_hi": hi + 0.1,
        "audit/baseline/forget/auc": 0.52,
        "audit/baseline/forget/auc_lo": 0.45,
        "audit/baseline/forget/auc_hi": 0.6,
        "relearn/k5/steps": steps,
        "relearn/k5/back": back,
        "dist/forget/js": js,
        "dist_floor/forget/js": 0.01,
    }


def test_audit_table_marks_attacks_that_cannot_tell_the_originals_members(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        f"{model}/audit/{attack}/forget/{side}": rng.normal(shift if side == "member_scores" else 0, 1, 200)
        for model, shift in (("method", 0.2), ("original", 2.0), ("retrain", 0.0))
        for attack in ("lira_online", "baseline")
        for side in ("member_scores", "nonmember_scores")
    }
    write_run(
        tmp_path / "ppp",
        "ppp",
        audit_metrics(0.55, 0.47, 0.63, 40, 1, 0.2),
        dataset="digits",
        task="classification",
        references={
            "original": {**audit_metrics(0.80, 0.74, 0.86, 0, 1, 0.3), **LEAVE_ONE_OUT},
            "retrain": audit_metrics(0.50, 0.42, 0.58, float("nan"), 0, 0.0),
        },
        arrays=arrays,
    )
    written = write_report([tmp_path], tmp_path / "out")
    markdown = (tmp_path / "out" / "audit.md").read_text()
    assert "### digits (forget six), clip_tiny, audit" in markdown  # a classifier's table names no code length
    assert cell(markdown, "LiRA online AUC, D_f", "Original") == "0.800 [0.74, 0.86]"
    assert cell(markdown, "LiRA online AUC, D_f", "PPP") == "0.550 [0.47, 0.63]"
    # the baseline's interval on the Original covers 0.5: uninformative on every model
    assert cell(markdown, "baseline AUC, D_f", "Retrain").endswith("†")
    # RMIA tells the Original's members (interval above 0.5) but not the Original from Retrain: ‡ on D_f
    assert cell(markdown, "RMIA AUC, D_f", "Original") == "0.700 [0.64, 0.96]‡"
    assert cell(markdown, "LiRA online AUC, D_f", "Retrain") == "0.500 [0.42, 0.58]"
    # the references' leave-one-out power, once (under the Original)
    row = "LiRA online AUC, D_f, leave-one-out over the references"
    assert cell(markdown, row, "Original") == "0.610 [0.58, 0.64]" and cell(markdown, row, "PPP") == ""
    assert cell(markdown, "LiRA online TPR@0.1, D_f", "PPP") == "30.0"
    assert cell(markdown, "relearn steps, 5-shot", "PPP") == "40"
    assert cell(markdown, "relearn steps, 5-shot", "Retrain") == "not back"
    assert cell(markdown, "to Retrain, D_f js (floor 0.010)", "Retrain") == "0.000"
    rocs = sorted(p.name for p in written if p.name.startswith("roc_") and p.suffix == ".png")
    assert rocs == ["roc_baseline_digits_clip_tiny_six_16.png", "roc_lira_online_digits_clip_tiny_six_16.png"]
