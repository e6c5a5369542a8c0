"""The paper's retrieval backbone, CLIP ViT-B/32 (random init, DSPH's 32-token text on its 77 positions),
end to end through every method family (reference, dampening, training baseline) on a few dozen digit
scenes, one training epoch. One method per family keeps it to a few CPU minutes: the others of a family
share its code path and run on clip_tiny elsewhere in the suite.

Original and Retrain are trained once for the module (one cache); every run goes through
`run_experiment`, and the model its evaluator scored is kept for the parameter checks.
"""

import math
import time

import pytest
from scored import scored_models

pytestmark = pytest.mark.slow  # ViT-B/32: 151M parameters, a few CPU minutes

SMALL = [
    "backbone=clip_vit_b32",
    "backbone.pretrained=null",
    "device=cpu",
    "dataset.n_total=32",
    "dataset.n_query=6",
    "dataset.n_train=12",
    "dataset.n_val=6",
    "backbone.train.epochs=1",
    "backbone.train.batch_size=8",
]
# Per-sample gradients of 151M parameters: a chunk of 2 is ~1.2 GB.
METHOD_ARGS = {
    "ppp": [
        "method.fisher_chunk=2",
        "method.forget_samples=2",
        "method.neighbour_samples=1",
        "method.retain_samples=1",
    ],
    "finetune": ["method.train.retrieval.epochs=1"],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """run(method) -> (metrics, the model the evaluator scored), all runs sharing one cache."""
    root = tmp_path_factory.mktemp("vit_b32")

    def run_method(method: str):
        wall, cpu = time.perf_counter(), time.process_time()
        result, model = run_scored(
            [
                *SMALL,
                f"method={method}",
                *METHOD_ARGS.get(method, []),
                f"cache_dir={root / 'cache'}",
                f"out_dir={root / method}",
            ]
        )
        print(f"\n[vit_b32] {method}: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU")
        assert result["backbone"] == "clip_vit_b32"
        metrics = result["metrics"]
        for key in ("forget/i2t_map", "forget/t2i_map", "retain/i2t_map", "retain/t2i_map"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
        return metrics, model

    with scored_models() as run_scored:
        yield run_method


@pytest.fixture(scope="module")
def original(run):
    metrics, model = run("original")
    assert metrics["time/train_s"] > 0
    return {n: p.detach().clone() for n, p in model.net.named_parameters()}


def changed_entries(model, reference: dict) -> dict[str, int]:
    return {n: int((p.detach() != reference[n]).sum()) for n, p in model.net.named_parameters()}


def test_architecture_and_text_context(original):
    assert original["clip.positional_embedding"].shape == (77, 512)  # all 77 rows kept, 32 used
    assert original["clip.visual.conv1.weight"].shape == (768, 3, 32, 32)
    assert 150e6 < sum(p.numel() for p in original.values()) < 152e6


@pytest.mark.parametrize("method", ["bad"])  # Retrain trains as Original does
def test_reference_models_differ_from_the_original_everywhere(run, original, method):
    _, model = run(method)
    changed = changed_entries(model, original)
    assert changed["image_head.0.weight"] == original["image_head.0.weight"].numel()
    assert (
        changed["clip.visual.transformer.resblocks.0.attn.in_proj_weight"]
        > 0.99 * original["clip.visual.transformer.resblocks.0.attn.in_proj_weight"].numel()
    )


@pytest.mark.parametrize("method", ["ppp"])  # SSD shares the rule; its batch Fisher runs on clip_tiny
def test_dampening_scales_only_selected_entries(run, original, method):
    metrics, model = run(method)
    selected = metrics[f"{method}/n_buffer"] + metrics[f"{method}/n_core"]
    assert 0 < selected < sum(p.numel() for p in original.values())
    # a dampened entry changes unless it was 0 or its factor is 1; the shared region never does
    assert 0 < sum(changed_entries(model, original).values()) <= selected
    assert metrics["time/unlearn_s"] > 0


@pytest.mark.parametrize("method", ["finetune"])  # one family: amnesiac and bad teacher share the loop
def test_training_baselines_update_both_towers_and_heads(run, original, method):
    metrics, model = run(method)
    changed = changed_entries(model, original)
    for name in ("image_head.0.weight", "text_head.0.weight", "clip.visual.proj", "clip.text_projection"):
        assert changed[name] > 0.5 * original[name].numel(), name
    assert metrics["time/unlearn_s"] > 0
