"""Where the shipped configs live and how to compose them: the one place that knows.

The configs are package data (`ppp/conf`, Hydra search path `pkg://ppp.conf`), so an installed wheel
finds them as a checkout does; nothing else in the package or its scripts builds a path to them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent / "conf"
SEARCH_PATH = "pkg://ppp.conf"  # what `hydra.main` is given: found through the import system, not the tree
CONFIG_NAME = "config"
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def split_overrides(joined: str) -> list[str]:
    """Hydra's `override_dirname` back into its overrides: `method=ppp,forget=[six,eight]` ->
    ['method=ppp', 'forget=[six,eight]'] (commas inside brackets belong to their value)."""
    parts, depth, current = [], 0, ""
    for ch in joined:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (ch in "[{") - (ch in "]}")
        current += ch
    return parts + [current] if current else parts


def sweep_folder(job_num: Any, override_dirname: str) -> str:
    """A sweep run's folder name, `<job number>_<overrides>` (`hydra.sweep.subdir`), kept within NAME_MAX.

    A long override list (a search's `best_overrides.txt` with its unrounded floats) would otherwise stop a
    multirun with "File name too long". A name that fits is unchanged; a longer one keeps its leading whole
    overrides and ends in `~` and a digest of the full list, so distinct runs keep distinct folders
    (`.hydra/overrides.yaml` inside holds them all). A `/` (a group path such as `+experiment/setting=clip_side`,
    or a path value) would split the name into nested folders: it becomes `_`, and the name ends in the digest too,
    so that it is read from `.hydra/overrides.yaml`, not from the name."""
    name = f"{job_num}_{override_dirname}"
    if len(name.encode()) <= NAME_MAX and "/" not in name:
        return name
    digest = "~" + hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
    first, *rest = split_overrides(override_dirname)
    kept = f"{job_num}_{first}"
    for override in rest:
        if len(f"{kept},{override}{digest}".encode()) > NAME_MAX:
            break
        kept += f",{override}"
    return kept.encode()[: NAME_MAX - len(digest)].decode(errors="ignore").replace("/", "_") + digest


if not OmegaConf.has_resolver("sweep_folder"):
    OmegaConf.register_new_resolver("sweep_folder", sweep_folder)


@contextmanager
def configs_initialised():
    """Hydra's compose API set up on the shipped configs for the block, unless a caller already did: many
    `compose_config` calls inside one block (a search composing its settings) initialise once."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def compose_config(overrides: Iterable[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The run config that `ppp-run OVERRIDES` (or `python run.py OVERRIDES`) would run, composed in-process."""
    from hydra import compose

    with configs_initialised():
        return compose(CONFIG_NAME, overrides=list(overrides), return_hydra_config=return_hydra_config)


def run_choices(choices: Any) -> dict[str, str | None]:
    """`hydra.runtime.choices` as plain data, without Hydra's own groups (`hydra/launcher`, ...): which option of
    each config group a run was composed from (`choices` in metrics.json; no part of its hash)."""
    return {k: v for k, v in OmegaConf.to_container(choices).items() if not k.startswith("hydra/")}


def compose_with_choices(overrides: Iterable[str] = ()) -> tuple[DictConfig, dict[str, str | None]]:
    """`compose_config(overrides)` and the config groups' options it was composed from (`run_choices`)."""
    from omegaconf import open_dict

    cfg = compose_config(overrides, return_hydra_config=True)
    choices = run_choices(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def hydra_choices() -> dict[str, str | None]:
    """The config groups' options of the Hydra job this process runs (`run_choices`), or {} outside one."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return run_choices(HydraConfig.get().runtime.choices)
    except ValueError:
        return {}


def group_options(group: str) -> list[str]:
    """The option names of a config group (e.g. `hparams_search`), for error messages."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def load_block(*files: str) -> dict[str, Any]:
    """Config files merged in order, without their defaults lists: a mounted block's default value."""
    block = OmegaConf.to_container(OmegaConf.merge(*(OmegaConf.load(CONF_DIR / f) for f in files)))
    block.pop("defaults", None)
    return block
