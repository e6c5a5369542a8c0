"""Per forgotten pair, how much closer a model ranks its partner than Retrain does (issue 22).

Three seeds of 25 pairs leave R@10's seed spread as wide as the gaps it compares; pairing each forgotten pair
with itself under Retrain (same pair, same seed) does not. For every item-deletion run under RUN_DIR (its
`arrays.npz`: `<model>/per_item/forget/<i2t|t2i>_rank`), the log of the model's expected partner rank over
Retrain's, averaged over the two directions, then over seeds per pair; the mean over pairs with a bootstrap
interval that resamples pairs (each with all its seeds). Below 0: the model still ranks the forgotten partners
closer than a model that never saw them.

    python scripts/item_rank_ratio.py outputs/experiments/deletion_share
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DIRECTIONS = ("i2t", "t2i")


def partner_rank(arrays, prefix: str) -> np.ndarray:
    return np.mean([arrays[f"{prefix}/per_item/forget/{d}_rank"] for d in DIRECTIONS], axis=0)


def log_ratios(root: Path) -> dict[str, dict[int, list[float]]]:
    """model -> forgotten training position -> log(rank / Retrain's rank), one value per seed."""
    out: dict[str, dict[int, list[float]]] = {}
    for path in sorted(root.glob("**/metrics.json")):
        record = json.loads(path.read_text())
        arrays = np.load(path.parent / "arrays.npz")
        if "forget_set" not in record or "retrain/per_item/forget/i2t_rank" not in arrays.files:
            continue  # a class forget set, or a reference's own run
        retrain = partner_rank(arrays, "retrain")
        for model, prefix in ((record["method"], "method"), ("original", "original")):  # a seed counted once
            ratios = np.log(partner_rank(arrays, prefix) / retrain)
            asked = record["requests"][-1]["items"]["positions"]  # the arrays are the (last) request's
            for position, value in zip(asked, ratios, strict=True):
                out.setdefault(model, {}).setdefault(position, {})[record["seed"]] = float(value)
    return {model: {p: list(seeds.values()) for p, seeds in by_pair.items()} for model, by_pair in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| model | pairs | seeds | mean log(rank / Retrain's) [95 % interval] | rank ratio |")
    print("|---|---|---|---|---|")
    for model, by_pair in sorted(log_ratios(args.run_dir).items()):
        per_pair = np.array([np.mean(v) for v in by_pair.values()])
        seeds = max(len(v) for v in by_pair.values())
        boots = per_pair[rng.integers(0, len(per_pair), (args.resamples, len(per_pair)))].mean(1)
        lo, hi = np.quantile(boots, [0.025, 0.975])
        print(
            f"| {model} | {len(per_pair)} | {seeds} | {per_pair.mean():+.2f} [{lo:+.2f}, {hi:+.2f}] | "
            f"{np.exp(per_pair.mean()):.2f} |"
        )


if __name__ == "__main__":
    main()
