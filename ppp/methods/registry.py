"""Unlearning methods by name: each is `method(system, ctx, cfg) -> (system, diagnostics)`.

A method may change `system` in place, and returns its own diagnostics (a flat dict of numbers,
lists or strings) instead of writing into shared state, so that runs in one process stay independent.
"""

from typing import ClassVar

from ppp.registry import Registry
from ppp.schema import schema, setting

# What a method may need of the model it is given: the runner's checks (`ppp.validation`) and the Python API
# (`ppp.api`) ask a method's schema (`needs`), never its name.
CLIP_SPACE = "clip_space"  # it edits or trains CLIP's own towers: a CLIP model
CLASS_HEAD = "class_head"  # it reads a classifier's class head
OWN_MODEL = "own_model"  # it builds a model of its own from the backbone config (a recipe, an initialisation)
PER_SAMPLE_LOSS = "per_sample_loss"  # it estimates a per-sample Fisher: the system's sample_loss
FORGET_CLASSES = "forget_classes"  # it forgets whole classes (their head rows, their prompts): no item forget sets


@schema
class MethodSettings:
    """Every method's section: `method.name`; a method's schema (registered with it) adds its keys and says
    what the method needs of the model (`needs`)."""

    needs: ClassVar[frozenset[str]] = frozenset()

    name: str = setting()

    @classmethod
    def check_run(cls, cfg) -> None:
        """Checks of the method's section against the rest of the run's config (other sections); none here."""


METHODS: Registry = Registry("method")
