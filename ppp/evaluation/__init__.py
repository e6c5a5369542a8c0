"""Evaluators, picked by `evaluator.name` from `EVALUATORS`; each returns a flat dict of metrics."""

from ppp.evaluation.evaluators import EVALUATORS
from ppp.evaluation.map import average_precisions, hamming_distance, mean_average_precision
from ppp.evaluation.retrieval import encode, evaluate_retrieval

__all__ = [
    "EVALUATORS",
    "average_precisions",
    "mean_average_precision",
    "hamming_distance",
    "encode",
    "evaluate_retrieval",
]
