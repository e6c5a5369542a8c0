"""Run the runner's stages in-process and keep the model its evaluator scored (methods return it inside)."""

import tempfile
from contextlib import contextmanager

from hydra import compose, initialize_config_dir

from ppp.config import CONF_DIR as CONF
from ppp.experiment import evaluate, prepare, record, unlearn


def compose_config(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@contextmanager
def scored_models():
    """Yields run(overrides) -> (result, the model the evaluator scored: the method's own); runs without
    reference rows, as they always did here."""
    with tempfile.TemporaryDirectory(prefix="ppp-index-") as index:

        def run(overrides):
            prepared = prepare(
                compose_config([*overrides, "references=[]", "skip_finished=false", f"run_index={index}"])
            )
            unlearned = unlearn(prepared)
            return record(prepared, evaluate(prepared, unlearned)), unlearned.model

        yield run
