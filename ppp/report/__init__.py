"""`python -m ppp.report DIR... [--out OUT]` (or `ppp-report`): every run under the folders -> a tidy
results.csv, the paper's tables (Markdown and LaTeX), a paired bootstrap of two methods, and figures.

Modules: `load` (runs -> tidy frame, each run once), `stats` (mean / std / CI, bootstrap), `tables`,
`figures`, `audit` (issue 21's audit table and ROC curves), `deletion` (issue 22's item deletions and streams).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ppp.errors import ConfigError
from ppp.evaluation.delta import DEFINITIONS
from ppp.report.audit import audit_table, roc_figures
from ppp.report.deletion import deletion_table, stream_figure
from ppp.report.figures import figure1, figure3, figure4
from ppp.report.forgetting import forgetting_tables
from ppp.report.load import find_runs, tidy
from ppp.report.stats import aggregate
from ppp.report.tables import Table, bootstrap_table, residual_table, table1, table2
from ppp.utils import cli_logging

DEFAULT_PAIR = ("ppp", "ssd")
ROC_ATTACKS = ("baseline", "lira_online", "rank")  # the audit's ROC figures: the cosine / confidence baseline,
# the primary attack and the service-only attacker


def write_tables(tables: list[Table], out: Path, name: str, heading: str) -> list[Path]:
    if not tables:
        return []
    md, tex = out / f"{name}.md", out / f"{name}.tex"
    md.write_text(f"# {heading}\n\n" + "\n".join(t.markdown() for t in tables))
    tex.write_text("% " + heading + " (needs \\usepackage{booktabs})\n" + "\n".join(t.latex() for t in tables))
    return [md, tex]


def compare_pair(methods: set[str], compare: str | None) -> tuple[str, str] | None:
    """The two methods to bootstrap: the ones named, else PPP and SSD when both ran."""
    if compare is None:
        return DEFAULT_PAIR if set(DEFAULT_PAIR) <= methods else None
    pair = tuple(name.strip() for name in compare.split(","))
    if len(pair) != 2 or pair[0] == pair[1]:
        raise ConfigError(f"--compare takes two different methods, e.g. --compare ppp,ssd; got '{compare}'")
    missing = [name for name in pair if name not in methods]
    if missing:
        raise ConfigError(f"--compare: no runs of {', '.join(missing)}; present: {', '.join(sorted(methods))}")
    return pair


def write_report(
    dirs,
    out: Path,
    compare: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
    delta: str | None = None,
    figures: bool = True,
) -> list[Path]:
    """Everything the report makes from the runs under `dirs`, written into `out`; the paths written."""
    if delta is not None and delta not in DEFINITIONS:
        raise ConfigError(f"--delta must be one of {', '.join(DEFINITIONS)}, got '{delta}'")
    if resamples < 1:
        raise ConfigError(f"--resamples must be a positive integer, got {resamples}")
    runs = find_runs(dirs)
    frame = tidy(runs)
    pair = compare_pair(set(frame["method"]), compare)
    out.mkdir(parents=True, exist_ok=True)
    stats = aggregate(frame)
    written = [out / "results.csv", out / "summary.csv"]
    frame.to_csv(written[0], index=False)
    stats.to_csv(written[1], index=False)
    written += write_tables(table2(stats, frame, delta), out, "table2", "Table 2: retrieval mAP (%)")
    written += write_tables(
        residual_table(stats), out, "residual", "Residual knowledge per tower and parameter changes (%)"
    )
    written += write_tables(table1(stats, frame, delta), out, "table1", "Table 1: classification accuracy and MIA (%)")
    written += write_tables(audit_table(stats), out, "audit", "Audit: membership, relearning, distance to Retrain")
    written += write_tables(
        deletion_table(stats), out, "deletion", "Item deletions: forgotten pairs, kept quality, the index"
    )
    fq_tables, fq_figures = forgetting_tables(runs, out, figures)
    written += write_tables(fq_tables, out, "forgetting", "Forgetting quality over model seeds: per-example ε, U-LiRA")
    written += fq_figures
    if pair:
        written += write_tables(
            bootstrap_table(runs, stats, pair, resamples, seed),
            out,
            "bootstrap",
            f"Paired bootstrap: {pair[0]} vs {pair[1]}",
        )
    if figures:
        written += figure1(runs, out) + figure3(frame, out) + figure4(frame, out)
        written += [p for attack in ROC_ATTACKS for p in roc_figures(runs, stats, attack, out)]
        written += stream_figure(runs, out)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="ppp-report",
        description="The paper's tables and figures from the runs "
        "(metrics.json, arrays.npz) under run or sweep folders.",
    )
    parser.add_argument("dirs", nargs="+", help="run or sweep folders (searched for metrics.json)")
    parser.add_argument("--out", type=Path, default=Path("outputs/report"), help="where to write (default %(default)s)")
    parser.add_argument(
        "--compare", help="two methods for the paired bootstrap, e.g. ppp,ssd (default: ppp,ssd when both ran)"
    )
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default %(default)s)")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="bootstrap seed (default %(default)s)")
    parser.add_argument("--delta", choices=DEFINITIONS, help="|delta| definition (default: the runs' `delta`)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    cli_logging()  # warnings (a run folder that is gone, an unreadable metrics.json) on stderr
    try:
        written = write_report(
            args.dirs, args.out, args.compare, args.resamples, args.bootstrap_seed, args.delta, not args.no_figures
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print("\n".join(f"wrote {path}" for path in written))
