"""The runner's entry point: `ppp-run method=ppp dataset=coco bits=64` (or `python run.py ...`; `-m` sweeps)."""

import sys

import hydra
from omegaconf import DictConfig

from ppp.config import CONFIG_NAME, SEARCH_PATH
from ppp.errors import ConfigError


@hydra.main(version_base="1.3", config_path=SEARCH_PATH, config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float:
    """Returns the run's `optimized_metric`, for sweepers (as lightning-hydra-template's train.py does)."""
    from ppp.experiment import run_experiment

    try:
        return run_experiment(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
