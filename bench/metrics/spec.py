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
    # Beyond the paper (bench/metrics/extended.py); README "Metrics" gives their sources.
    Metric(name="forget_mia_auc", label="MIA-AUC", unit="", better="retrain",
           description="per-example attack AUC, forget-train vs forget-test, logit confidence"),
    Metric(name="forget_mia_tpr_1fpr", label="TPR@1%", unit="", better="retrain",
           description="per-example attack TPR at 1 % FPR (NaN below 1,000 non-members)"),
    Metric(name="forget_mia_tpr_01fpr", label="TPR@0.1%", unit="", better="retrain",
           description="per-example attack TPR at 0.1 % FPR (NaN below 10,000 non-members)"),
    Metric(name="population_mia_acc", label="Pop-MIA", unit="%", better="retrain",
           description=("NeurIPS 2023 kit's loss attack, forget-train vs test: 10-split "
                        "cross-validated accuracy (the kit's score, not an AUC)")),
    Metric(name="js_forget", label="JS_f", unit="nats", better="lower",
           description="mean JS divergence to retraining's softmax, forget-test"),
    Metric(name="js_retain", label="JS_r", unit="nats", better="lower",
           description="mean JS divergence to retraining's softmax, retain-test"),
    Metric(name="activation_distance", label="AD", unit="", better="lower",
           description="mean L2 distance to retraining's softmax, forget-train"),
    Metric(name="weight_distance", label="W-dist", unit="", better="lower",
           description="||w - w_retrain|| / ||w_retrain||, all parameters"),
    Metric(name="probe_forget_acc", label="Probe", unit="%", better="retrain",
           description="linear probe on frozen penultimate features, forget-test accuracy"),
    Metric(name="relearn_steps", label="Relearn", unit="steps", better="retrain",
           description=("Adam steps until the forget-train loss is back to the "
                        "original's, capped at 50")),
)
# Shadow-model privacy (--shadows K): one value per (experiment, forget set, method) over the K
# seeds, not per cell, so not in summary.csv; results/<grid>/shadows.csv holds them.
SHADOW_METRICS: tuple[Metric, ...] = (
    Metric(name="shadow_auc", label="U-LiRA AUC", unit="", better="retrain",
           description=("U-LiRA AUC, unlearned vs retrained held-out models, mean over "
                        "splits of the seeds (0.5: no leak)")),
    Metric(name="shadow_tpr_1fpr", label="U-LiRA TPR@1%", unit="", better="retrain",
           description="U-LiRA TPR at 1 % FPR (NaN below 1,000 non-member pairs)"),
    Metric(name="shadow_tpr_01fpr", label="U-LiRA TPR@0.1%", unit="", better="retrain",
           description="U-LiRA TPR at 0.1 % FPR (NaN below 10,000 non-member pairs)"),
    Metric(name="forget_quality", label="F", unit="", better="higher",
           description="NeurIPS 2023 challenge forgetting quality (1 at most)"),
    Metric(name="final_score", label="F x acc", unit="", better="higher",
           description="F x (A_Dr / retraining's) x (test accuracy / retraining's)"),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
EXTENDED_METRICS: tuple[str, ...] = METRIC_NAMES[METRIC_NAMES.index("forget_mia_auc"):]
# The paper's table: an (A_Df, A_Dr) pair per method.
PAPER_PAIR: tuple[str, str] = ("acc_forget_test", "acc_retain_test")


def metric(name: str) -> Metric:
    for m in (*METRICS, *SHADOW_METRICS):
        if m.name == name:
            return m
    raise KeyError(f"unknown metric {name!r}; declared: {', '.join(METRIC_NAMES)}")
