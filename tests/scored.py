"""Run `run_experiment` in-process and keep the model its evaluator scored (methods return it inside)."""

import tempfile
from contextlib import contextmanager

from hydra import compose, initialize_config_dir

from ppp.config import CONF_DIR as CONF
from ppp.evaluation import EVALUATORS
from ppp.experiment import execute


def compose_config(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@contextmanager
def scored_models():
    """Yields run(overrides) -> (result, the last model the evaluator scored); run with `references=[]`
    so that it is the method's own model."""
    scored = []
    index = tempfile.mkdtemp(prefix="ppp-index-")
    originals = dict(EVALUATORS._entries)

    def keeping(evaluate):
        def keep(system, ctx, cfg):
            scored.append(system)
            return evaluate(system, ctx, cfg)

        return keep

    def run(overrides):
        result = execute(compose_config([*overrides, "references=[]", "skip_finished=false", f"run_index={index}"]))
        return result, scored.pop()

    EVALUATORS._entries.update({name: keeping(fn) for name, fn in originals.items()})
    try:
        yield run
    finally:
        EVALUATORS._entries.update(originals)
