"""Per-cell metrics: what is measured (``evaluate``, ``extended`` and the modules it draws on)
and how it is read (``spec``)."""
from bench.metrics.evaluate import (
           accuracy,
           entropy_mia,
           evaluate_splits,
           paper_metrics,
           predict_logits,
           split_logits,
)
from bench.metrics.spec import (
           EXTENDED_METRICS,
           METRIC_NAMES,
           METRICS,
           PAPER_PAIR,
           Metric,
           metric,
)

__all__ = ["EXTENDED_METRICS", "METRICS", "METRIC_NAMES", "PAPER_PAIR", "Metric", "accuracy",
           "entropy_mia", "evaluate_splits", "metric", "paper_metrics", "predict_logits",
           "split_logits"]
