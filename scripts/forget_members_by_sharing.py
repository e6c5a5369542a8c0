"""Why Retrain's D_f membership AUC is above 0.5 on digit_scenes (issue 21): what a forget scene also shows.

A D_f member is a training scene that shows the forget class; most also show other digits, drawn from the
training glyph pool, which retained training scenes use as well, so even Retrain has seen part of them; the
forget-class non-members (queries, database items outside training) draw every glyph from held-out pools. This
script splits both sides by composition, scenes that show only forget classes against scenes that show a
retained class too, and reports each attack's AUC within each part (members against the non-members of the
same composition), for every model of the run (the method and its reference rows), beside how many of the
mixed members share a glyph with a retained training scene. If shared glyphs are the cause, Retrain's AUC is
near 0.5 on the forget-only part and above it on the mixed part.

python scripts/forget_members_by_sharing.py RUN_DIR [RUN_DIR ...]   (runs of dataset=digit_scenes with the audit)
"""

import json
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ppp.data import build_benchmark, carries_any
from ppp.data.base import root_indices
from ppp.evaluation.attack_metrics import attack_report
from ppp.evaluation.mia import nonmember_pool


def forget_only(labels, forget_idx: list[int]) -> np.ndarray:
    """Per scene carrying a forget class (in order): does it show forget classes only?"""
    labels = labels[carries_any(labels, forget_idx)]
    retained = [c for c in range(labels.shape[1]) if c not in forget_idx]
    return (labels[:, retained].sum(1) == 0).numpy()


def shares_a_glyph(bench, forget_idx: list[int]) -> np.ndarray:
    """Per D_f member (training scenes carrying a forget class, in training order): does any of its glyphs
    appear in a retained training scene?"""
    glyphs = bench.info["glyphs"]
    roots = root_indices(bench.train).tolist()
    forget = carries_any(bench.train.labels, forget_idx).numpy()
    retained = {g for r, f in zip(roots, forget) if not f for g in glyphs[r]}
    return np.array([any(g in retained for g in glyphs[r]) for r, f in zip(roots, forget) if f])


def main(run_dirs: list[str]) -> None:
    for run_dir in map(Path, run_dirs):
        result = json.loads((run_dir / "metrics.json").read_text())
        cfg = OmegaConf.create(result["config"])
        bench = build_benchmark(cfg.dataset, cache_dir=cfg.get("cache_dir"))
        forget_idx = [bench.class_names.index(c) for c in result["forget"]]
        members_only = forget_only(bench.train.labels, forget_idx)
        nonmembers_only = forget_only(nonmember_pool(bench)[0].labels, forget_idx)
        shares = shares_a_glyph(bench, forget_idx)
        arrays = np.load(run_dir / "arrays.npz")
        print(
            f"{run_dir} ({result['method']}): D_f members {len(members_only)} ({members_only.sum()} forget-only, "
            f"{(shares & ~members_only).sum()} of the mixed share a glyph with a retained training scene), "
            f"non-members {len(nonmembers_only)} ({nonmembers_only.sum()} forget-only)"
        )
        for key in sorted(k for k in arrays.files if k.endswith("/forget/member_scores") and "/rank/" not in k):
            model, attack = key.split("/")[0], key.split("/")[2]
            members, nonmembers = arrays[key], arrays[key.replace("member_scores", "nonmember_scores")]
            model = result["method"] if model == "method" else model
            cells = []
            for name, m, n in (
                ("forget-only", members_only, nonmembers_only),
                ("mixed", ~members_only, ~nonmembers_only),
            ):
                report = attack_report(members[m], nonmembers[n], fprs=(), n_boot=1000, seed=0)
                cells.append(f"{name} {report.auc:.3f} [{report.auc_ci[0]:.2f}, {report.auc_ci[1]:.2f}]")
            print(f"  {model:<10} {attack:<13} " + "   ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1:])
