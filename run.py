"""Entry point: `python run.py method=ppp dataset=coco bits=64` (Hydra; `-m` for sweeps)."""

import sys

import hydra
from omegaconf import DictConfig

from ppp.errors import ConfigError


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
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
