"""The report of item deletions (issue 22): a row per model with the runs' numbers, and a stream's figure."""

import importlib.util

from conftest import ROOT
from test_forget_set import composed

from ppp.experiment import execute
from ppp.report import write_report


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_stream_is_tabled_per_model_and_drawn_per_request(tmp_path, single_thread):
    stream = ["forget_set=share", "forget_set.share=0.15", "forget_set.requests=2", "evaluator.index=true"]
    stream += ["~method_defaults"]  # the report's mechanics, at the plain methods' 3 epochs (not 8)
    results = [
        execute(composed(tmp_path, [f"method={m}", *stream, f"out_dir={tmp_path / 'runs' / m}"]))
        for m in ("amnesiac", "finetune")
    ]
    written = write_report([tmp_path / "runs"], tmp_path / "report")
    table = (tmp_path / "report" / "deletion.md").read_text()
    assert "forget share 0.15 (seed 0) in 2 requests" in table
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in table.splitlines() if line.startswith("| ")
    }
    assert list(rows)[1:] == ["Original", "Retrain", "Finetune", "Amnesiac"]
    metrics = results[0]["metrics"]
    r10 = 100 * (metrics["forget/i2t_r10"] + metrics["forget/t2i_r10"]) / 2
    assert rows["Amnesiac"][0] == f"{r10:.1f}"  # one run: no ±
    assert rows["Original"][7] == "0.0"  # the Original's served index is its own: no bit flipped
    figures = [p.name for p in written if p.name.startswith("stream_")]
    assert figures == [
        "stream_digit_scenes_share_0.15_seed_0_in_2_requests_clip_tiny.png",
        "stream_digit_scenes_share_0.15_seed_0_in_2_requests_clip_tiny.pdf",
    ]

    # the paired per-pair rank ratio against Retrain reads the same runs (the stream's last request's 9 pairs)
    ratios = script("item_rank_ratio").log_ratios(tmp_path / "runs")
    assert set(ratios) == {"amnesiac", "finetune", "original"}
    assert all(len(by_pair) == 9 and all(len(v) == 1 for v in by_pair.values()) for by_pair in ratios.values())
