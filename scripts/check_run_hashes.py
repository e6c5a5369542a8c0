"""Do the shipped configs still give the committed runs their run hashes?

    python scripts/check_run_hashes.py [CONF_DIR] [--results 'docs/results/*/results.csv*'] [--override K=V ...]
                                       [--runs GLOB] [--drop-method-values] [-v]

Every run of the committed results (`docs/results/*/results.csv`, or `.csv.gz` where the file is large: its
`run_hash` and `run_dir`) is composed again from its sweep folder's name (`<job number>_<override>,...`,
Hydra's `override_dirname`, which leaves out the keys of `ppp.identity.SWEEP_FOLDER_NEUTRAL`; a name shortened
to fit a file name, from the run's `.hydra/overrides.yaml`, so those runs check only where their folders are), with the
default device and with `device=cpu` (the folder name does not say which), and its run hash compared with
the recorded one. A config refactor that changes no result must reproduce every hash: a changed hash means a
finished run would run again.

Runs recorded with the run hash from before commit 6a32b9d count as reproduced when that hash matches: until
then keys at their neutral default (`ppp.identity.NEUTRAL_DEFAULTS`) were hashed like any other key, so the
three PPP runs of `table1_digits_eight`, made in the half hour between PPP's flags (`method.gamma`,
`method.sign_flip`, `method.neighbours`) and that commit, carry the flags in their hashes. A repeated sweep
runs them again rather than skipping them; nothing else in their configs differs from today's.

`--override` adds overrides the results' commands gave outside the sweep folder's name: the runs of data version 2
on digit_scenes made before its recipe moved to 40 epochs reproduce with `--override backbone.train.epochs=20
--override backbone.train.fused_optimizer=false` (the second since clip_tiny's fused kernels), and their PPP runs,
like those of the 40-epoch held-out defaults pass, with `--override '~method_defaults'` (since PPP's own
digit_scenes defaults, `ppp/conf/method_defaults/ppp_digit_scenes.yaml`), as do the digits audit's runs and the
digits held-out defaults passes of the methods with digits defaults (`<method>_digits.yaml`).

`--drop-method-values` composes each run without the overrides that set one of its method's keys (`method.lr=…`):
once a searched point is adopted as a dataset's defaults (`ppp/conf/method_defaults/`), the runs of its held-out
"chosen" pass must be what the plain command `method=<name>` gives, e.g.
`--results 'docs/results/heldout_defaults_digit_scenes_trained/results.csv*' --runs '*/chosen_*/*'
--drop-method-values`. `--runs` keeps the runs whose recorded `run_dir` matches a glob.

Exit status 1 when a run reproduces under neither hash.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import glob
import gzip
import os
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from ppp import identity
from ppp.config import split_overrides
from ppp.runs import run_hash

# The keys NEUTRAL_DEFAULTS held when commit 6a32b9d started leaving them out of run hashes: before it they
# were hashed at any value (keys added later did not exist then, so they are left out as today).
NEUTRAL_BEFORE_6A32B9D = (
    "dataset.surface_forms",
    "dataset.mention_prob",
    "evaluator.residual",
    "method.gamma",
    "method.sign_flip",
    "method.neighbours",
)

SHORTENED = re.compile(r"~[0-9a-f]{10}$")  # the digest `ppp.config.sweep_folder` ends a shortened name with


def override_key(override: str) -> str:
    """The key an override sets: `++method.lr=0.1` -> `method.lr`, `~method_defaults` -> `method_defaults`."""
    return override.lstrip("+~").split("=")[0]


def overrides_of(run_dir: str) -> list[str]:
    """The overrides a sweep folder's name holds: `3_method=ppp,forget=[eight],seed=0` ->
    ['method=ppp', 'forget=[eight]', 'seed=0'] (commas inside brackets belong to their value). A name
    shortened to fit a file name (`ppp.config.sweep_folder`: it ends in `~` and a digest) holds only some of
    them: its run's `.hydra/overrides.yaml` gives them all, less the keys folder names leave out."""
    name = re.sub(r"^\d+_", "", os.path.basename(run_dir))
    if SHORTENED.search(name):
        saved = Path(run_dir) / ".hydra" / "overrides.yaml"
        if not saved.exists():
            raise FileNotFoundError(f"{saved} (the folder name is shortened and holds only some overrides)")
        listed = OmegaConf.to_container(OmegaConf.load(saved))
        return [o for o in listed if override_key(o) not in identity.SWEEP_FOLDER_NEUTRAL]
    return split_overrides(name)


def without_method_values(overrides: list[str]) -> list[str]:
    """The overrides less those that set one of the method's keys (`method.lr=0.1`, `+method.x=1`); the method
    group itself (`method=ppp`) stays."""
    return [o for o in overrides if not override_key(o).startswith("method.")]


def recomposed(run_dir: str, extra: list[str] = (), drop_method_values: bool = False) -> tuple[list, list[str]]:
    """The configs a sweep folder's run may have had, with `extra` overrides (and without its `method.*` values
    if `drop_method_values`): with the default device and with `device=cpu` (the folder name leaves the device
    out); and the errors of those that no longer compose. Needs Hydra's compose API set up
    (`ppp.config.configs_initialised`, or a caller's config folder)."""
    from ppp.config import compose_config

    configs, errors = [], []
    try:
        overrides = overrides_of(run_dir)
    except FileNotFoundError as err:
        return configs, [f"ERR {err}"]
    if drop_method_values:
        overrides = without_method_values(overrides)
    for device in ([], ["device=cpu"]):
        try:
            configs.append(compose_config(overrides + device + list(extra)))
        except Exception as err:  # a folder name the configs no longer compose
            errors.append(f"ERR {type(err).__name__}: {err}")
    return configs, errors


@contextlib.contextmanager
def hash_before_6a32b9d():
    """run_hash as it was before 6a32b9d: the then-declared neutral keys hashed at every value."""
    saved = dict(identity.NEUTRAL_DEFAULTS)
    for key in NEUTRAL_BEFORE_6A32B9D:
        identity.NEUTRAL_DEFAULTS.pop(key, None)
    try:
        yield
    finally:
        identity.NEUTRAL_DEFAULTS.clear()
        identity.NEUTRAL_DEFAULTS.update(saved)


def recorded_runs(pattern: str, runs: str = "*") -> dict[tuple[str, str], str]:
    """(run_hash, run_dir) -> the results.csv that lists it, over every file matching `pattern` and every run
    whose run_dir matches the glob `runs`."""
    rows = {}
    for path in sorted(glob.glob(pattern)):
        with (gzip.open if path.endswith(".gz") else open)(path, "rt", newline="") as fh:
            for row in csv.DictReader(fh):
                if fnmatch.fnmatchcase(row["run_dir"], runs):
                    rows[(row["run_hash"], row["run_dir"])] = path
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("conf", nargs="?", type=Path, help="config folder (default: the package's, ppp/conf)")
    parser.add_argument("--results", default="docs/results/*/results.csv*", help="results files (glob)")
    parser.add_argument(
        "--override", action="append", default=[], metavar="K=V", help="an override every run had (repeatable)"
    )
    parser.add_argument("--runs", default="*", metavar="GLOB", help="only the runs whose run_dir matches")
    parser.add_argument(
        "--drop-method-values",
        action="store_true",
        help="compose each run without its method.* overrides: does the plain command give it?",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every run, not only mismatches")
    args = parser.parse_args(argv)

    from hydra import initialize_config_dir

    from ppp.config import CONF_DIR

    rows = recorded_runs(args.results, args.runs)
    if not rows:
        parser.error(f"no runs in {args.results} match --runs {args.runs}")
    unexplained, legacy = [], []
    with initialize_config_dir(config_dir=str((args.conf or CONF_DIR).resolve()), version_base="1.3"):
        for (recorded, run_dir), source in sorted(rows.items()):
            configs, errors = recomposed(run_dir, args.override, args.drop_method_values)
            hashes = {run_hash(cfg) for cfg in configs} | set(errors)
            if recorded in hashes:
                if args.verbose:
                    print("ok", source, recorded, run_dir)
                continue
            with hash_before_6a32b9d():
                before = {run_hash(cfg) for cfg in configs}
            if recorded in before:
                legacy.append(recorded)
                print("BEFORE-6a32b9d", source, recorded, run_dir)
            else:
                unexplained.append(recorded)
                print("MISMATCH", source, recorded, run_dir, sorted(hashes))
    print(f"{len(rows) - len(unexplained) - len(legacy)}/{len(rows)} run hashes reproduced")
    print(f"{len(legacy)} more reproduced by the run hash from before 6a32b9d (neutral defaults hashed)")
    print(f"{len(unexplained)} not reproduced")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
