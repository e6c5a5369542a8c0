"""The report on hand-written runs: means, std, |Δ|, the paired bootstrap, dedupe, tables and figures."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from ppp.errors import ConfigError
from ppp.report import main, write_report
from ppp.report.figures import legend_columns
from ppp.report.load import find_runs, tidy
from ppp.report.stats import aggregate, paired_bootstrap, repeats_label
from ppp.runs import point_to_finished

MAP = ("forget/i2t_map", "forget/t2i_map", "retain/i2t_map", "retain/t2i_map")
# Cell means per bits, in MAP's order; each seed s adds 0.01 * (s - 1) to a method (std 0.01, ddof = 1)
ORIGINAL = {16: (0.70, 0.68, 0.90, 0.91), 32: (0.74, 0.72, 0.94, 0.95)}
RETRAIN = {16: (0.25, 0.25, 0.89, 0.90), 32: (0.30, 0.30, 0.93, 0.94)}
PPP = {16: (0.30, 0.20, 0.88, 0.92), 32: (0.32, 0.26, 0.93, 0.95)}
SSD = {16: (0.40, 0.45, 0.80, 0.82), 32: (0.42, 0.44, 0.85, 0.86)}
QUERIES = 200


def write_run(
    folder: Path,
    method: str,
    metrics: dict,
    *,
    seed=0,
    sample_seed=None,
    bits=16,
    forget=("six",),
    references=None,
    hyper=None,
    arrays=None,
    dataset="digit_scenes",
    task="retrieval",
    delta="mean_abs",
    data=None,
):
    """A run directory as the runner writes it: metrics.json (+ arrays.npz); `data`: dataset settings."""
    sample_seed = seed if sample_seed is None else sample_seed
    config = {
        "method": {"name": method, **(hyper or {})},
        "delta": delta,
        "seed": seed,
        "sample_seed": sample_seed,
        "dataset": {"name": dataset, "seed": seed, "forget": list(forget), **(data or {})},
    }
    run_hash = (
        f"{abs(hash((method, seed, sample_seed, bits, forget, dataset, json.dumps(hyper), json.dumps(data)))):020d}"[
            :20
        ]
    )
    record = {
        "run_hash": run_hash,
        "method": method,
        "dataset": dataset,
        "task": task,
        "backbone": "clip_tiny",
        "bits": bits,
        "seed": seed,
        "sample_seed": sample_seed,
        "forget": list(forget),
        "config": config,
        "metrics": metrics,
        "references": references or {},
        "provenance": {"git": "abc"},
    }
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(record))
    if arrays:
        np.savez(folder / "arrays.npz", **arrays)
    return folder


def seeded(table: dict, bits: int, seed: int, spread: float = 0.01) -> dict:
    return {k: v + spread * (seed - 1) for k, v in zip(MAP, table[bits])}


def per_query(seed: int, lead: float) -> dict:
    """Per-query APs of PPP and SSD on the same queries: PPP leads by `lead` on forget I→T, ties elsewhere."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, QUERIES)
    out = {}
    for split in ("forget", "retain"):
        for direction in ("i2t", "t2i"):
            gain = lead if (split, direction) == ("forget", "i2t") else 0.0
            out[f"ppp/per_query/{split}/{direction}_map"] = base + gain + rng.normal(0, 0.05, QUERIES)
            out[f"ssd/per_query/{split}/{direction}_map"] = base + rng.normal(0, 0.05, QUERIES)
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """PPP and SSD at 16 and 32 bits, seeds 0-2, each run carrying Original and Retrain."""
    root = tmp_path_factory.mktemp("sweep")
    for method, table in (("ppp", PPP), ("ssd", SSD)):
        for bits in (16, 32):
            for seed in range(3):
                references = {
                    "original": seeded(ORIGINAL, bits, seed, 0.002),
                    "retrain": seeded(RETRAIN, bits, seed, 0.002),
                }
                queries = per_query(seed, lead=0.05)
                arrays = {k.replace(f"{method}/", "method/"): v for k, v in queries.items() if k.startswith(method)}
                write_run(
                    root / "multirun" / f"{method}_{bits}_{seed}",
                    method,
                    seeded(table, bits, seed),
                    seed=seed,
                    bits=bits,
                    references=references,
                    hyper={"alpha": 10.0},
                    arrays=arrays,
                )
    return root


def cell(markdown: str, row: str, column: str) -> str:
    """The text of one cell of a Markdown table."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    split = lambda line: [c.strip() for c in line.strip("|").replace(r"\|", "\0").split("|")]  # noqa: E731
    header = split(lines[0])
    for line in lines[1:]:
        cells = split(line)
        if cells[0].replace("\0", "|") == row:
            return cells[header.index(column)].replace("\0", "|")
    raise KeyError(row)


def test_mean_and_sample_std_over_seeds(sweep):
    frame = tidy(find_runs([sweep]))
    stats = aggregate(frame).set_index(["variant", "bits", "metric"])
    ppp = stats.loc[("ppp", 16, "forget/i2t_map")]
    assert ppp["n"] == 3 and ppp["repeats"] == "seeds"
    assert ppp["mean"] == pytest.approx(0.30)
    assert ppp["std"] == pytest.approx(0.01)  # ddof = 1; ddof = 0 would give 0.00816
    assert ppp["ci95"] == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-5)
    retrain = stats.loc[("retrain", 32, "retain/t2i_map")]  # carried by 6 runs, counted once per seed
    assert retrain["n"] == 3 and retrain["mean"] == pytest.approx(0.94) and retrain["std"] == pytest.approx(0.002)


def test_tidy_frame_columns(sweep):
    frame = tidy(find_runs([sweep]))
    row = frame[(frame["method"] == "ppp") & (frame["metric"] == "forget/i2t_map")].iloc[0]
    assert row["forget"] == "six" and row["task"] == "retrieval" and row["method.alpha"] == 10.0
    assert {"dataset", "backbone", "bits", "seed", "sample_seed", "variant", "value", "run_hash"} <= set(frame.columns)
    # each run x metric once; references: one row per seed x bits x metric
    assert len(frame[frame["source"] == "run"]) == 12 * 4
    assert len(frame[frame["method"].isin(["original", "retrain"])]) == 2 * 3 * 2 * 4


def test_run_in_two_sweep_folders_counts_once(sweep, tmp_path):
    shutil.copytree(sweep / "multirun" / "ppp_16_0", tmp_path / "resumed" / "0_ppp")
    # a reference's own run adds no second row for the same seed either
    write_run(tmp_path / "original_16_0", "original", seeded(ORIGINAL, 16, 0, 0.002), seed=0, bits=16)
    frame = tidy(find_runs([sweep, tmp_path]))
    stats = aggregate(frame).set_index(["variant", "bits", "metric"])
    assert stats.loc[("ppp", 16, "forget/i2t_map"), "n"] == 3
    assert stats.loc[("original", 16, "forget/i2t_map"), "n"] == 3
    assert frame["run_hash"].nunique() == 13


def test_runs_on_different_data_settings_and_their_references_never_pool(tmp_path):
    """Two topic_prob values of one dataset are two datasets to the report, references included; a key
    at its neutral default (surface_forms=False) is the same data as a run that predates the key."""
    for i, (topic, extra) in enumerate([(0.5, {}), (0.5, {"surface_forms": False}), (0.8, {})]):
        refs = {"original": {"forget/i2t_map": 0.6 + topic / 10}}
        write_run(
            tmp_path / f"r{i}",
            "ppp",
            {"forget/i2t_map": topic},
            sample_seed=i,
            references=refs,
            data={"topic_prob": topic, **extra},
        )
    frame = tidy(find_runs([tmp_path]))
    assert set(frame["dataset"]) == {"digit_scenes (topic_prob=0.5)", "digit_scenes (topic_prob=0.8)"}
    originals = frame[frame["method"] == "original"].set_index("dataset")["value"]
    assert originals.to_dict() == pytest.approx(
        {"digit_scenes (topic_prob=0.5)": 0.65, "digit_scenes (topic_prob=0.8)": 0.68}
    )
    runs = frame[frame["method"] == "ppp"].groupby("dataset")["value"].agg(["count", "mean"])
    assert runs.loc["digit_scenes (topic_prob=0.5)"].tolist() == [2, 0.5]
    assert set(frame[frame["method"] == "ppp"]["variant"]) == {"ppp"}


def test_a_run_skipped_in_another_sweep_is_read_through_its_pointer(sweep, tmp_path):
    """A sweep that skipped a run finished elsewhere holds a pointer; its report alone still counts it."""
    done_dir = shutil.copytree(sweep / "multirun" / "ppp_16_0", tmp_path / "first_sweep" / "0_ppp")
    done = json.loads((done_dir / "metrics.json").read_text())
    later = tmp_path / "later_sweep" / "0_ppp"
    point_to_finished(later, {**done, "run_dir": str(done_dir)})
    assert [run.hash for run in find_runs([later.parent])] == [done["run_hash"]]
    assert len([run for run in find_runs([done_dir.parent, later.parent]) if run.hash == done["run_hash"]]) == 1
    shutil.rmtree(done_dir)  # a dangling pointer is reported and left out, never a crash
    with pytest.raises(ConfigError, match="no metrics.json"):
        find_runs([later.parent])


@pytest.mark.parametrize("definition, forget, retain", [("mean_abs", "4.00", "1.00"), ("abs_mean", "0.50", "0.50")])
def test_table2_cells_and_delta_under_both_definitions(sweep, tmp_path, definition, forget, retain):
    write_report([sweep], tmp_path, delta=definition, figures=False)
    markdown = (tmp_path / "table2.md").read_text()
    assert cell(markdown, "16-I2T", "PPP D_f mAP") == "30.00 ± 1.00"
    assert cell(markdown, "32-T2I", "SSD D_r mAP") == "86.00 ± 1.00"
    assert cell(markdown, "16-T2I", "Retrain D_f mAP") == "25.00 ± 0.20"
    assert cell(markdown, "|Δ|", "PPP D_f mAP") == forget  # gaps +5, -5, +2, -4 points vs Retrain
    assert cell(markdown, "|Δ|", "PPP D_r mAP") == retain  # gaps -2, +1, -1, 0 points vs Original
    # SSD: forget +15, +20, +12, +14 -> 15.25 either way; retain -10, -9, -9, -9 -> 9.25
    assert cell(markdown, "|Δ|", "SSD D_f mAP") == "15.25" and cell(markdown, "|Δ|", "SSD D_r mAP") == "9.25"
    assert f"|Δ| ({definition})" in markdown and "over 3 seeds" in markdown
    header = [line for line in markdown.splitlines() if line.startswith("| Bits")][0]
    assert header.index("Original") < header.index("Retrain") < header.index("SSD") < header.index("PPP")
    latex = (tmp_path / "table2.tex").read_text()
    assert r"\multicolumn{2}{c}{PPP}" in latex and r"30.00 $\pm$ 1.00" in latex and r"$|\Delta|$" in latex


def test_delta_definition_read_from_the_runs(tmp_path):
    for seed in (0, 2):  # offsets -1, +1 point: the means are PPP's
        write_run(
            tmp_path / f"ppp{seed}",
            "ppp",
            seeded(PPP, 16, seed),
            seed=seed,
            delta="abs_mean",
            references={"original": seeded(ORIGINAL, 16, 1, 0), "retrain": seeded(RETRAIN, 16, 1, 0)},
        )
    write_report([tmp_path], tmp_path / "out", figures=False)
    markdown = (tmp_path / "out" / "table2.md").read_text()
    assert cell(markdown, "|Δ|", "PPP D_f mAP") == "0.00"  # (+5 - 5) / 2 at 16 bits: abs_mean hides it
    write_run(tmp_path / "ppp9", "ppp", seeded(PPP, 16, 9), seed=9, delta="mean_abs")
    with pytest.raises(ConfigError, match="disagree"):
        write_report([tmp_path], tmp_path / "out2", figures=False)


def test_sample_seed_repeats_are_labelled(tmp_path):
    references = {"original": seeded(ORIGINAL, 16, 1, 0), "retrain": seeded(RETRAIN, 16, 1, 0)}
    for sample_seed in range(3):
        write_run(
            tmp_path / f"ppp{sample_seed}",
            "ppp",
            seeded(PPP, 16, sample_seed),
            seed=0,
            sample_seed=sample_seed,
            references=references,
        )
    write_report([tmp_path], tmp_path / "out", figures=False)
    markdown = (tmp_path / "out" / "table2.md").read_text()
    assert "± std (ddof = 1) over 3 sample seeds" in markdown
    assert cell(markdown, "16-I2T", "Retrain D_f mAP") == "25.00"  # fixed models: one value, no ±
    assert repeats_label([(0, 0), (1, 1)]) == "seeds"
    assert repeats_label([(0, 0), (0, 1), (1, 0)]) == "seeds × sample seeds"


def test_paired_bootstrap_interval(sweep, tmp_path):
    write_report([sweep], tmp_path, resamples=2000, figures=False)
    markdown = (tmp_path / "bootstrap.md").read_text()
    for bits in (16, 32):
        lead = cell(markdown, f"{bits}-I2T D_f", "95 % CI")
        low, high = (float(x) for x in lead.strip("[]").split(","))
        assert low < 5.0 < high and low > 0  # PPP's true lead of 5 points, beyond noise
        assert cell(markdown, f"{bits}-I2T D_f", "beyond noise") == "yes"
        tie = cell(markdown, f"{bits}-T2I D_r", "95 % CI")
        low, high = (float(x) for x in tie.strip("[]").split(","))
        assert low < 0 < high and cell(markdown, f"{bits}-T2I D_r", "beyond noise") == "no"
        assert cell(markdown, f"{bits}-I2T D_f", "queries") == str(QUERIES)
        assert cell(markdown, f"{bits}-I2T D_f", "repeats") == "3"


def test_paired_bootstrap_function():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (2, 500))
    diff, low, high = paired_bootstrap(a + 0.1, a, resamples=500)
    assert diff == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    b = a + rng.normal(0, 0.1, a.shape)
    diff, low, high = paired_bootstrap(a, b, resamples=2000, seed=3)
    assert low < diff < high and low < 0 < high
    # the interval's width is about 2 x 1.96 standard errors of the mean difference
    se = (a - b).mean(axis=0).std(ddof=1) / np.sqrt(a.shape[1])
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)


def test_table1_classification(tmp_path):
    accuracy = {"ppp": (0.0, 0.95, 0.30), "ssd": (0.02, 0.90, 0.40)}
    for method, (forget, retain, mia) in accuracy.items():
        for seed in range(2):
            spread = 0.01 * (2 * seed - 1)  # seeds 0, 1: -0.01, +0.01 -> std 0.01414
            write_run(
                tmp_path / f"{method}{seed}",
                method,
                {"forget/acc": forget, "retain/acc": retain + spread, "forget/mia": mia, "retain/mia": 0.5},
                seed=seed,
                dataset="digits",
                task="classification",
                references={
                    "original": {"forget/acc": 0.98, "retain/acc": 0.97, "forget/mia": 0.7},
                    "retrain": {"forget/acc": 0.0, "retain/acc": 0.96, "forget/mia": 0.3},
                },
            )
    write_report([tmp_path], tmp_path / "out", figures=False)
    markdown = (tmp_path / "out" / "table1.md").read_text()
    assert cell(markdown, "D_r acc", "PPP") == "95.00 ± 1.41"
    assert cell(markdown, "D_f acc", "Original") == "98.00 ± 0.00"
    assert cell(markdown, "MIA", "SSD") == "40.00 ± 0.00"
    assert cell(markdown, "|Δ| D_f (vs Retrain)", "SSD") == "2.00"
    assert cell(markdown, "|Δ| D_r (vs Original)", "PPP") == "2.00"
    assert cell(markdown, "|Δ| D_f (vs Retrain)", "Retrain") == ""
    assert not (tmp_path / "out" / "table2.md").exists()


def test_figures_are_written(tmp_path):
    def references(seed):
        return {
            "original": seeded(ORIGINAL, 16, seed, 0.002),
            "retrain": seeded(RETRAIN, 16, seed, 0.002),
        }

    for method, table in (("ppp", PPP), ("ssd", SSD)):
        for forget in (("six",), ("six", "eight"), ("six", "eight", "three")):
            for seed in range(3):
                shift = {k: v - 0.03 * len(forget) for k, v in seeded(table, 16, seed).items()}
                write_run(
                    tmp_path / "fig3" / f"{method}_{len(forget)}_{seed}",
                    method,
                    shift,
                    seed=seed,
                    forget=forget,
                    references=references(seed),
                )
    for samples in (20, 40, 60):
        for seed in range(3):
            metrics = {k: v + 0.001 * samples for k, v in seeded(PPP, 16, seed).items()}
            write_run(
                tmp_path / "fig4" / f"ppp_{samples}_{seed}",
                "ppp",
                metrics,
                seed=seed,
                dataset="other_scenes",
                hyper={"forget_samples": samples},
                references=references(seed),
            )
    rng = np.random.default_rng(0)
    density = {
        f"{model}/density/{group}": rng.normal(centre + shift, 0.1, size)
        for model, shift in (("original", 0.0), ("method", 0.3))
        for group, centre, size in (("forget", 0.5, 30), ("neighbour", 0.8, 50), ("other", 1.2, 100))
    }
    write_run(
        tmp_path / "fig1" / "ppp",
        "ppp",
        seeded(PPP, 16, 0),
        dataset="density_scenes",
        arrays=density,
        references=references(0),
    )
    written = write_report([tmp_path], tmp_path / "out")
    names = {p.name for p in written}
    assert {
        "fig3_digit_scenes_clip_tiny_16bits.png",
        "fig3_digit_scenes_clip_tiny_16bits.pdf",
        "fig4_other_scenes_six_clip_tiny_PPP.png",
        "fig1_density_scenes_six_clip_tiny_16bits_ppp.png",
    } <= names
    for path in written:
        assert path.stat().st_size > 1000, path
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the Table 2 blocks: one per forget set (fig3) and dataset
    markdown = (tmp_path / "out" / "table2.md").read_text()
    assert markdown.count("### digit_scenes") == 3 and "### other_scenes" in markdown
    assert "PPP (forget_samples=20) D_f mAP" in markdown
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(summary["n_forget"]) == {1, 2, 3}


def test_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(empty), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip() == f"error: no metrics.json under {empty}"
    write_run(tmp_path / "runs" / "ppp", "ppp", seeded(PPP, 16, 0))
    with pytest.raises(ConfigError, match="no runs of fisher; present: ppp"):
        write_report([tmp_path / "runs"], tmp_path / "out", compare="ppp,fisher")
    with pytest.raises(ConfigError, match="two different methods"):
        write_report([tmp_path / "runs"], tmp_path / "out", compare="ppp")


def test_residual_rows_beside_the_cross_modal_ones_and_out_of_delta(tmp_path):
    """Runs with evaluator.residual: I2I / T2T rows in Table 2, probe AUCs in residual.md, |Δ| unchanged."""
    residual = {
        "forget/i2i_map": 0.49,
        "forget/t2t_map": 0.28,
        "retain/i2i_map": 0.8,
        "retain/t2t_map": 0.9,
        "probe/image_auc": 0.995,
        "probe/text_auc": 0.794,
    }
    refs = {
        "original": {**seeded(ORIGINAL, 16, 1), "forget/i2i_map": 0.65, "probe/image_auc": 0.998},
        "retrain": {**seeded(RETRAIN, 16, 1), "forget/i2i_map": 0.29, "probe/image_auc": 0.83},
    }
    write_run(tmp_path / "runs" / "ppp", "ppp", {**seeded(PPP, 16, 1), **residual}, references=refs)
    write_run(
        tmp_path / "plain" / "ppp",
        "ppp",
        seeded(PPP, 16, 1),
        references={"original": seeded(ORIGINAL, 16, 1), "retrain": seeded(RETRAIN, 16, 1)},
    )
    write_report([tmp_path / "runs"], tmp_path / "with", figures=False)
    write_report([tmp_path / "plain"], tmp_path / "without", figures=False)
    table = (tmp_path / "with" / "table2.md").read_text()
    assert cell(table, "16-I2I", "PPP D_f mAP") == "49.00" and cell(table, "16-T2T", "PPP D_r mAP") == "90.00"
    assert cell(table, "16-I2I", "Retrain D_f mAP") == "29.00" and cell(table, "16-T2T", "Retrain D_f mAP") == "–"
    plain = (tmp_path / "without" / "table2.md").read_text()
    assert cell(table, "|Δ|", "PPP D_f mAP") == cell(plain, "|Δ|", "PPP D_f mAP") == "5.00"
    assert "16-I2I" not in plain and not (tmp_path / "without" / "residual.md").exists()
    probes = (tmp_path / "with" / "residual.md").read_text()
    assert cell(probes, "Probe AUC, image codes", "PPP") == "99.50"
    assert cell(probes, "Probe AUC, image codes", "Retrain") == "83.00"
    assert (
        cell(probes, "D_f I2I mAP", "Original") == "65.00" and cell(probes, "Probe AUC, text codes", "Original") == "–"
    )


def test_parameter_changes_in_the_residual_table(tmp_path):
    changed = {
        "changed/token_table_share": 0.00002,
        "changed/image_tower_share": 0.001,
        "changed/image_tower_median_rel": 1.2,
    }
    write_run(
        tmp_path / "runs" / "ppp",
        "ppp",
        {**seeded(PPP, 16, 1), **changed},
        references={"original": {**seeded(ORIGINAL, 16, 1), "changed/image_tower_share": 0.0}},
    )
    write_report([tmp_path / "runs"], tmp_path / "out", figures=False)
    table = (tmp_path / "out" / "residual.md").read_text()
    assert cell(table, "Changed image tower: share", "PPP") == "0.10"
    assert cell(table, "Changed image tower: median rel. change", "PPP") == "120.00"
    assert cell(table, "Changed image tower: share", "Original") == "0.00"
    assert cell(table, "D_f I2T mAP", "PPP") == "30.00"
    assert "Probe AUC, image codes" not in table and "Changed heads" not in table


def test_mechanism_study_names_runs_from_their_recorded_choices():
    """scripts/mechanism_study.py reads a run's variant and setting from metrics.json's `choices`, and falls
    back to its values for runs recorded before `choices` existed."""
    import importlib.util
    import math

    spec = importlib.util.spec_from_file_location("mechanism_study", ROOT / "scripts" / "mechanism_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    values = {"method": "ppp", "method.lam": 14.6, "method.tau": math.inf, "task": "retrieval"}
    values |= {"backbone": "clip_tiny", "dataset": "digit_scenes", "forget": "six", "bits": 16}
    old = pd.Series(values)
    assert study.variant_name(old) == "PPP default, no core (τ=∞)" and study.setting_name(old) == "base"
    chosen = {"choices.mechanism_variant": "ppp_best_no_core", "choices.mechanism_setting": "topic_08"}
    stage2 = pd.Series({**values, **chosen, "choices.experiment": "mechanism_variants"})
    assert study.variant_name(stage2) == "PPP best, no core (τ=∞)" and study.setting_name(stage2) == "topic 0.8"
    stage3 = pd.Series({**values, **chosen, "choices.experiment": "mechanism_pareto"})
    assert study.variant_name(stage3) == "PPP default, no core (τ=∞)"


def test_a_legend_of_long_variant_names_takes_fewer_columns():
    """Six columns of 90-character labels stretched Figure 3 to four times its axes' width."""
    assert legend_columns(["Original", "Retrain", "SSD", "PPP"]) == 4
    assert legend_columns(["Original"] * 9) == 6
    assert (
        legend_columns(["SalUn (mask_fraction=0.5, train.classification.epochs=10, train.classification.lr=0.013)"] * 8)
        == 2
    )
    assert legend_columns(["x" * 200]) == 1
