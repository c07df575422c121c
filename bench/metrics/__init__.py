"""Per-cell metrics: what is measured (``evaluate``) and how it is read (``spec``)."""
from bench.metrics.evaluate import (
           accuracy,
           entropy_mia,
           evaluate_splits,
           predict_logits,
)
from bench.metrics.spec import METRIC_NAMES, METRICS, PAPER_PAIR, Metric, metric

__all__ = ["METRICS", "METRIC_NAMES", "PAPER_PAIR", "Metric", "accuracy", "entropy_mia",
           "evaluate_splits", "metric", "predict_logits"]
