import csv
import json

import pytest

from ppp import bench

MAP_COLUMNS = [
    "bits",
    "queries",
    "items",
    "floor_s",
    "average_s",
    "stable_s",
    "argsort_s",
    "average/floor",
    "stable/floor",
    "argsort/floor",
    "argsort/average",
    "argsort/stable",
    "stable_vs_argsort_max_diff",
]


@pytest.fixture
def tiny_sizes(monkeypatch):
    monkeypatch.setitem(bench.MAP_SIZES, "quick", (60, 400))
    monkeypatch.setitem(bench.SCALING_SIZES, "quick", (20, (200, 400, 800)))


def test_map_sections_print_one_table_each_and_write_json_csv_and_plot(tiny_sizes, tmp_path, capsys):
    out = tmp_path / "bench.json"
    sections = bench.main(
        [
            "--quick",
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--json",
            str(out),
            "--figures",
            str(tmp_path / "fig"),
            "--only",
            "map,map_scaling",
        ]
    )
    printed = capsys.readouterr().out
    assert "| " + " | ".join(MAP_COLUMNS) + " |" in printed

    rows = sections["map"].rows
    assert [r["bits"] for r in rows] == [16, 32, 64] and list(rows[0]) == MAP_COLUMNS
    assert all(r["stable_vs_argsort_max_diff"] < 1e-12 for r in rows)  # the same values as the argsort
    assert all(r["argsort/stable"] == pytest.approx(r["argsort_s"] / r["stable_s"]) for r in rows)

    payload = json.loads(out.read_text())
    assert set(payload["sections"]) == {"map", "map_scaling"} and payload["machine"]["cores"] >= 1
    assert payload["command"].startswith("python -m ppp.bench --quick")
    with open(tmp_path / "bench.map.csv") as f:
        assert list(csv.DictReader(f).fieldnames) == MAP_COLUMNS

    scaling = sections["map_scaling"]
    assert [r["items"] for r in scaling.rows] == [200, 400, 800]
    assert list(scaling.rows[0]) == ["items", "floor_s", "average_s", "stable_s", "argsort_s"]
    assert (tmp_path / "fig" / "map_scaling.png").stat().st_size > 1000


def test_only_runs_the_named_section_and_rejects_unknown_ones(tiny_sizes, tmp_path):
    sections = bench.main(["--quick", "--device", "cpu", "--repeats", "1", "--only", "map"])
    assert list(sections) == ["map"]
    with pytest.raises(SystemExit):
        bench.main(["--only", "fisher_throughput_typo"])


def test_items_sets_the_database_size_and_the_scaling_plot_ends_there(tiny_sizes, tmp_path):
    sections = bench.main(
        [
            "--quick",
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--items",
            "500",
            "--figures",
            str(tmp_path),
            "--only",
            "map,map_scaling",
        ]
    )
    assert {r["items"] for r in sections["map"].rows} == {500}
    assert [r["items"] for r in sections["map_scaling"].rows] == [200, 400, 500]
    with pytest.raises(SystemExit):
        bench.main(["--items", "0"])


def test_loglog_slope():
    assert bench.loglog_slope([1e4, 2e4, 4e4], [0.1, 0.2, 0.4]) == pytest.approx(1.0)
    assert bench.loglog_slope([1e4, 2e4, 4e4], [0.1, 0.4, 1.6]) == pytest.approx(2.0)


SMALL_DIGITS = ["dataset.per_class=10", "dataset.population_per_class=10"]
FISHER_COLUMNS = [
    "model",
    "px",
    "samples",
    "engine",
    "path_per_s",
    "torch_func_per_s",
    "loop_per_s",
    "floor_per_s",
    "path/loop",
    "floor/path",
    "path_peak_mb",
    "path_vs_loop_max_rel_diff",
]


def test_fisher_section_times_each_path_and_checks_it_against_the_loop(monkeypatch):
    monkeypatch.setitem(bench.FISHER_MODELS, "quick", (("clip_tiny", 32, 4), ("resnet18", 32, 3)))
    sections = bench.main(["--quick", "--device", "cpu", "--repeats", "1", "--only", "fisher"])
    rows = sections["fisher"].rows
    assert [(r["model"], r["engine"]) for r in rows] == [("clip_tiny", "torch.func"), ("resnet18", "hooks")]
    assert list(rows[0]) == FISHER_COLUMNS
    assert all(r["path_vs_loop_max_rel_diff"] < 1e-4 for r in rows)  # the same numbers as the loop
    assert rows[0]["torch_func_per_s"] == rows[0]["path_per_s"]  # CLIP: torch.func is the path
    assert all(r["floor/path"] == pytest.approx(r["floor_per_s"] / r["path_per_s"]) for r in rows)
    assert all(r["path_peak_mb"] >= 0 and r["loop_per_s"] > 0 for r in rows)


def test_run_sections_measure_a_warm_run_and_each_methods_unlearning(monkeypatch):
    monkeypatch.setattr(bench, "UNLEARNING_METHODS", ("ppp", "ssd_per_sample", "retrain"))
    resnet50 = bench.UNLEARNING_SETTINGS["digits, resnet50"]  # a quarter of the quick size: ResNet-50's per-sample
    quick = [o for o in resnet50["quick"] if not o.startswith("dataset.per_class=")]  # Fisher dominates the suite
    monkeypatch.setitem(bench.UNLEARNING_SETTINGS, "digits, resnet50", {**resnet50, "quick": [*quick, *SMALL_DIGITS]})
    sections = bench.main(["--quick", "--device", "cpu", "--repeats", "1", "--only", "startup,unlearning"])
    (startup,) = sections["startup"].rows
    assert startup["run_wall_s"] > startup["import_torch_s"] > 0 and startup["unlearn_s"] > 0
    assert startup["overhead_s"] == pytest.approx(
        startup["run_wall_s"] - startup["import_torch_s"] - startup["unlearn_s"] - startup["evaluate_s"]
    )
    assert startup["import_open_clip_s"] > startup["import_torch_s"]  # open_clip imports torch and more
    by_setting = {}
    for r in sections["unlearning"].rows:
        by_setting.setdefault(r["setting"], {})[r["method"]] = r
    assert list(by_setting) == ["digit_scenes, clip_tiny", "digits, resnet50"]  # Table 1's backbone too
    notes = sections["unlearning"].notes
    for label, rows in by_setting.items():
        assert set(rows) == {"ppp", "ssd_per_sample", "retrain"} and rows["retrain"]["retrain/cold"] == 1
        ratio = rows["ppp"]["warm_s"] / rows["ssd_per_sample"]["warm_s"]  # the same Fisher mode, compared
        assert any(n.startswith(label) and f"warm {ratio:.2f}x" in n for n in notes)
        # PPP's second run reads its three Fisher diagonals from the cache
        assert rows["ppp"]["warm_s"] < rows["ppp"]["cold_s"]
        assert rows["ppp"]["retrain/warm"] == pytest.approx(rows["retrain"]["cold_s"] / rows["ppp"]["warm_s"])


def test_trial_section_times_warm_trials_against_their_evaluation():
    sections = bench.main(["--quick", "--device", "cpu", "--repeats", "2", "--only", "trial"])
    (row,) = sections["trial"].rows
    assert list(row) == ["runs", "trial_s", "evaluate_s", "unlearn_s", "rest_s", "trial/evaluate"]
    assert row["runs"] == 3  # one run per bit length of the search's grid
    assert row["evaluate_s"] > 0 and row["unlearn_s"] > 0 and row["rest_s"] > 0
    assert row["rest_s"] == pytest.approx(row["trial_s"] - row["evaluate_s"] - row["unlearn_s"])
    assert row["trial/evaluate"] > 1 and "median of 2 trials" in sections["trial"].title


def test_forgetting_section_prices_a_model_seed(monkeypatch):
    monkeypatch.setitem(bench.FORGETTING_BENCHMARKS, "digits", None)
    monkeypatch.delitem(bench.FORGETTING_BENCHMARKS, "digits")
    monkeypatch.setattr(bench, "FORGETTING_METHODS", ("ssd",))
    (row,) = bench.main(["--quick", "--device", "cpu", "--repeats", "1", "--only", "forgetting"])["forgetting"].rows
    assert row["benchmark"] == "digit_scenes" and row["method"] == "ssd"
    assert 0 < row["statistic_s"] < row["evaluate_s"] and row["train_original_s"] > 0
    assert row["N=32, 10 methods_h"] == pytest.approx(2 * row["N=16, 10 methods_h"])
