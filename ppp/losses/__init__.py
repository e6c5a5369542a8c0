"""Retrieval losses, picked by `backbone.loss.name`.

The PPP paper calls DSPH's loss DSAP (Deep Semantic-Aware Proxy loss, Huo et al. 2024): both names
select the same `DSPHLoss`, and `DSAPLoss` is the paper's name for the class.
"""

from ppp.losses.dsph import DSPHLoss, dsph_margin
from ppp.registry import Registry

DSAPLoss = DSPHLoss

LOSSES: Registry = Registry("backbone.loss.name")
LOSSES.register("dsap")(DSAPLoss)
LOSSES.register("dsph")(DSPHLoss)

__all__ = ["DSAPLoss", "DSPHLoss", "LOSSES", "dsph_margin"]
