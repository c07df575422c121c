"""Logit mask: a reference row that only hides the forget classes, forgetting nothing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import CellShape, UnlearningMethod, UnlearningTask
from methods.registry import register_method
from methods.search import SearchSpace


@register_method("logit_mask", label="Logit mask (reference)")
@dataclass(kw_only=True)
class LogitMask(UnlearningMethod):
    """A sanity reference, not an unlearning method: the original model with the forget
    classes' logits pushed to ``mask_value`` (the bias of the final ``Linear`` layer's
    forget rows is set to it; every other weight is the original's).

    It sees no data and takes no time, yet it gives A_Df 0 and, because the retain samples
    that the original confused with a forget class are now classified among the retain
    classes only, an A_Dr at or above the original's and usually above retraining's. All of
    the forget classes' knowledge is still in the network: the features are untouched and the
    forget rows of the final layer are intact. Any metric that ranks this row above retraining
    is blind to such hidden knowledge; evaluation that probes the representation (a linear
    probe trained on the features to recover the forget classes, say) must expose it.

    Args:
        mask_value: the forget rows' bias, -1e4 (finite, so log-probabilities and the metrics
            built on them stay finite; far below any real logit).

    Uses no data: only ``task.forget_classes`` and ``task.num_classes``. ``needs`` is
    {"forget"} because the harness contract expects every method to declare some data; the
    forget loader it is handed is never iterated. No official code: this row is ours.
    """

    needs = frozenset({"forget"})  # never read (see above)
    search_space: ClassVar[SearchSpace] = {}  # nothing worth tuning: a reference row, any mask_value below the logits
    reference: ClassVar[bool] = True  # tables and figures mark it as a reference row

    mask_value: float = -1e4

    def validate(self) -> None:
        if not self.mask_value < 0:
            raise ValueError(f"mask_value={self.mask_value!r}: must be negative")

    def unlearn(self, model: torch.nn.Module, task: UnlearningTask) -> torch.nn.Module:
        head = final_linear(model, task.num_classes)
        with torch.no_grad():
            head.bias[list(task.forget_classes)] = self.mask_value
        return model.eval()

    def estimate_passes(self, shape: CellShape) -> float:
        del shape
        return 0.0


def final_linear(model: torch.nn.Module, num_classes: int) -> torch.nn.Linear:
    """The last registered ``Linear`` layer with ``num_classes`` outputs and a bias."""
    heads = [m for m in model.modules()
             if isinstance(m, torch.nn.Linear) and m.out_features == num_classes]
    if not heads or heads[-1].bias is None:
        raise ValueError(f"logit_mask needs a final torch.nn.Linear layer with {num_classes} "
                         f"outputs and a bias; {type(model).__name__} has none")
    return heads[-1]
