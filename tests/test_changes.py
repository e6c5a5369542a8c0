"""Parameter-change shares (`changed/*`), per module and tower, and their place in a run's metrics."""

import copy

import pytest
import torch
from test_runner import composed
from tiny_contexts import TinyClassifier

from ppp.evaluation.changes import parameter_changes
from ppp.experiment import execute
from ppp.models.clip_hashing import ClipHashingSystem


@pytest.fixture(scope="module")
def clip_pair():
    torch.manual_seed(0)
    original = ClipHashingSystem("clip_tiny", 16, 10)
    return original, copy.deepcopy(original)


def test_shares_counts_and_median_per_module_and_tower(clip_pair):
    original, changed = clip_pair
    net = changed.net
    with torch.no_grad():
        net.clip.token_embedding.weight[7].mul_(-1.0)  # one token row: rel. change 2 per entry
        net.clip.visual.conv1.weight.view(-1)[:10].mul_(0.5)  # 10 image entries: rel. change 0.5
        net.image_head[0].bias.add_(1e-9)  # below the threshold
    out = parameter_changes(changed, original)
    token = net.clip.token_embedding.weight
    nonzero_row = int((original.net.clip.token_embedding.weight[7] != 0).sum())
    assert out["changed/token_table_count"] == nonzero_row == token.shape[1]
    assert out["changed/token_table_share"] == pytest.approx(nonzero_row / token.numel())
    assert out["changed/token_table_median_rel"] == pytest.approx(2.0)
    assert out["changed/image_tower_count"] == 10 and out["changed/image_tower_median_rel"] == pytest.approx(0.5)
    assert out["changed/heads_count"] == 0 and out["changed/heads_median_rel"] == 0.0
    assert out["changed/text_tower_count"] == 0
    image_total = sum(p.numel() for n, p in net.named_parameters() if n.startswith(("clip.visual.", "image_head.")))
    assert out["changed/image_share"] == pytest.approx(10 / image_total)
    assert out["changed/text_count"] == nonzero_row and out["changed/all_count"] == nonzero_row + 10
    assert out["changed/all_median_rel"] == pytest.approx(2.0)  # 64 entries at 2, 10 at 0.5
    total = sum(p.numel() for p in net.parameters())
    assert out["changed/all_share"] == pytest.approx((nonzero_row + 10) / total)


def test_classifier_body_and_head():
    torch.manual_seed(0)
    original = TinyClassifier(10, 8, 16)
    changed = copy.deepcopy(original)
    with torch.no_grad():
        for p in changed.net.fc.parameters():
            p.add_(1.0)
    out = parameter_changes(changed, original)
    head = sum(p.numel() for p in changed.net.fc.parameters())
    assert out["changed/head_share"] == 1.0 and out["changed/body_share"] == 0.0
    assert out["changed/image_count"] == out["changed/all_count"] == head
    assert parameter_changes(original, original)["changed/all_share"] == 0.0


def test_a_run_reports_changes_and_residual_metrics_for_method_and_references(tmp_path):
    cfg = composed(tmp_path, ["evaluator.residual=true", "method.forget_samples=12"])
    result = execute(cfg)
    metrics, references = result["metrics"], result["references"]
    for row in (metrics, references["original"], references["retrain"]):
        assert {
            "forget/i2i_map",
            "forget/t2t_map",
            "probe/image_auc",
            "probe/text_auc",
            "changed/all_share",
            "changed/token_table_median_rel",
            "changed/image_share",
        } <= set(row)
    assert references["original"]["changed/all_share"] == 0.0
    assert references["retrain"]["changed/image_tower_share"] > 0.9  # trained apart: nearly everything differs
    selected = metrics["ppp/n_buffer"] + metrics["ppp/n_core"]
    assert metrics["changed/all_count"] <= selected  # PPP scales only what it selects (a zero stays zero)
    assert metrics["objective/gap"] == pytest.approx(metrics["delta/forget"] + metrics["delta/retain"])
