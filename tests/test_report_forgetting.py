"""Forgetting quality over model seeds in the report (issue 23) on hand-made runs: a method whose statistics are
Retrain's scores one, the Original's separated statistics are flagged, U-LiRA reads 0.5 and 1."""

import numpy as np
from test_report import cell, write_run

from ppp.config import compose_config
from ppp.experiment import execute
from ppp.report import write_report

SEEDS = range(6)
EXAMPLES = 40


def test_a_method_drawn_like_retrain_scores_one_and_the_separated_original_zero(tmp_path):
    rng = np.random.default_rng(0)
    retrain_stats = {s: rng.normal(0, 1, EXAMPLES) for s in SEEDS}
    for seed in SEEDS:
        quality = {"retain/i2t_map": 0.8, "retain/t2i_map": 0.8, "fq/retain_quality": 0.9}
        write_run(
            tmp_path / f"finetune{seed}",
            "finetune",
            {**quality, "forget/i2t_map": 0.1, "forget/t2i_map": 0.1},
            seed=seed,
            references={"original": quality, "retrain": quality},
            arrays={
                "method/fq/statistic": retrain_stats[seed],  # the retrained model's own statistics
                "retrain/fq/statistic": retrain_stats[seed],
                "original/fq/statistic": 100 + rng.normal(0, 1, EXAMPLES),  # far from every retrained model
            },
        )
    written = write_report([tmp_path], tmp_path / "out")
    markdown = (tmp_path / "out" / "forgetting.md").read_text()
    assert (
        cell(markdown, "Finetune", "N") == "6" and cell(markdown, "Finetune", "ε cap") == f"{np.log(6 - 1 - 6e-5):.2f}"
    )
    assert cell(markdown, "Finetune", "forget score") == "1.000"  # every ε = 0: Retrain's very statistics
    assert cell(markdown, "Finetune", "final score") == "1.000"  # qualities equal Retrain's
    assert cell(markdown, "Original", "separated %") == "100" and cell(markdown, "Original", "forget score") == "0.000"
    assert cell(markdown, "Original", "U-LiRA AUC").startswith("1.000")
    assert cell(markdown, "Finetune", "U-LiRA AUC").startswith("0.500")  # members and non-members alike
    assert any(p.name.startswith("epsilon_") and p.suffix == ".png" for p in written)


def test_the_tiny_experiment_runs_end_to_end_at_four_seeds(tmp_path, single_thread):
    base = ["experiment=forgetting_quality_tiny", f"cache_dir={tmp_path / 'cache'}", f"run_index={tmp_path / 'index'}"]
    for seed in range(4):  # the experiment's grid, run in this process
        execute(compose_config([*base, "device=cpu", f"seed={seed}", f"out_dir={tmp_path / 'multi' / str(seed)}"]))
    written = write_report([tmp_path / "multi"], tmp_path / "report")
    markdown = (tmp_path / "report" / "forgetting.md").read_text()
    assert cell(markdown, "Amnesiac", "N") == "4" and cell(markdown, "Original", "N") == "4"
    assert cell(markdown, "Amnesiac", "ε cap") == f"{np.log(4 - 1 - 4e-5):.2f}"
    assert 0 <= float(cell(markdown, "Amnesiac", "forget score")) <= 1
    assert any(p.name.startswith("epsilon_") for p in written)
