from ppp.losses.dsph import DSPHLoss, dsph_margin

__all__ = ["DSPHLoss", "dsph_margin"]
