"""Which mAP tie rule (`evaluator.ties`) did the committed runs use?

    python scripts/ties_of_runs.py [--results 'docs/results/*/results.csv*'] [--per-file N]
    python scripts/ties_of_runs.py --key evaluator.forget_queries --values all,forget_samples   # any other key

The results CSVs carry no `evaluator.ties` column, but the run hash covers the evaluator config. For the
first N retrieval runs of each results file (default 5; 0 = all), the run is composed again from its sweep
folder's name (as `scripts/check_run_hashes.py` does) with `evaluator.ties=stable` and with
`evaluator.ties=average` (or `--key` at each of `--values`), and the value whose hash equals the recorded
`run_hash` is printed. Classification
runs (accuracy) have no tie rule and are skipped.
"""

from __future__ import annotations

import argparse
import csv
import glob
import gzip
import sys

from check_run_hashes import recomposed  # a sibling script: `python scripts/X.py` puts scripts/ on sys.path

from ppp.config import configs_initialised
from ppp.runs import run_hash

RULES = ("stable", "average")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="docs/results/*/results.csv*")
    parser.add_argument("--per-file", type=int, default=5)
    parser.add_argument("--key", default="evaluator.ties")
    parser.add_argument("--values", default=",".join(RULES))
    args = parser.parse_args(argv)

    with configs_initialised():
        for path in sorted(glob.glob(args.results)):
            runs: dict[str, str] = {}
            with (gzip.open if path.endswith(".gz") else open)(path, "rt", newline="") as fh:
                for row in csv.DictReader(fh):
                    if row["task"] == "retrieval" and row["run_hash"] and row["run_dir"]:
                        runs.setdefault(row["run_hash"], row["run_dir"])
            if not runs:
                print(f"{path}: no retrieval runs")
                continue
            picked = list(runs.items())[: args.per_file or None]
            found: dict[str, int] = {}
            for recorded, run_dir in picked:
                rules = [
                    rule
                    for rule in args.values.split(",")
                    for cfg in recomposed(run_dir, [f"{args.key}={rule}"])[0]
                    if run_hash(cfg) == recorded
                ]
                key = "/".join(sorted(set(rules))) or "neither"
                found[key] = found.get(key, 0) + 1
            summary = ", ".join(f"{rule}: {n}" for rule, n in sorted(found.items()))
            print(
                f"{path}: {len(picked)} of {len(runs)} retrieval runs checked; hash reproduced with {args.key} = {summary}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
