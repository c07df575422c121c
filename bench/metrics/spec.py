"""The metric vocabulary, declared once: name, label, unit and which direction is better.

Tables, figures and ``summary.csv`` take names, labels and directions from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Better = Literal["higher", "lower", "retrain"]   # "retrain": closer to retraining's value


@dataclass(frozen=True, kw_only=True)
class Metric:
    name: str          # the record's key and summary.csv's column stem
    label: str         # short display label (tables, figure axes)
    description: str   # one line for legends and the README
    unit: str          # "%", "s", "" ...
    better: Better

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


METRICS: tuple[Metric, ...] = (
    Metric(name="acc_forget_test", label="A_Df", description="accuracy on forget classes, test",
           unit="%", better="retrain"),
    Metric(name="acc_retain_test", label="A_Dr", description="accuracy on retain classes, test",
           unit="%", better="higher"),
    Metric(name="acc_forget_train", label="A_Df train",
           description="accuracy on forget classes, train", unit="%", better="retrain"),
    Metric(name="acc_retain_train", label="A_Dr train",
           description="accuracy on retain classes, train", unit="%", better="higher"),
    Metric(name="mia", label="MIA", unit="%", better="retrain",
           description="entropy-SVC attack: forget-train samples called member"),
    Metric(name="time_s", label="time", description="unlearning wall-clock time", unit="s",
           better="lower"),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
# The paper's table: an (A_Df, A_Dr) pair per method.
PAPER_PAIR: tuple[str, str] = ("acc_forget_test", "acc_retain_test")


def metric(name: str) -> Metric:
    for m in METRICS:
        if m.name == name:
            return m
    raise KeyError(f"unknown metric {name!r}; declared: {', '.join(METRIC_NAMES)}")
