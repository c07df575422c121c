"""EU-k: exact unlearning of the last k layers (re-initialise them, retrain them on retain)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.base import UnlearningTask
from methods.cf_k import CFk
from methods.registry import register_method


@register_method("eu_k", label="EU-k")
@dataclass(kw_only=True)
class EUk(CFk):
    """EU-k (Goel et al., "Towards Adversarial Evaluation of Machine Unlearning", 2022,
    arXiv 2201.06640): re-initialise the last k layers and train only them on the retain
    data; the first layers stay bit-identical (frozen, eval mode). Same layer definition,
    loop and arguments as ``cf_k``; each layer is re-initialised by its own
    ``reset_parameters()`` (PyTorch's default initialisation), seeded with the cell's seed.

    Args:
        k: 3 (see ``cf_k``).
        lr: Adam learning rate, 1e-3.
        epochs: 10 (Goel et al. retrain with the original recipe; ours is the fine-tuning
            recipe, which on digits reaches retraining's accuracy, see the all-methods grid).
        optimizer: "adam" or "sgd".
    """

    def prepare(self, layers: list[torch.nn.Module], task: UnlearningTask) -> None:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(task.seed)
        for layer in layers:
            if not hasattr(layer, "reset_parameters"):
                raise ValueError(f"layer {type(layer).__name__} cannot be re-initialised "
                                 "(no reset_parameters)")
            layer.reset_parameters()
            if hasattr(layer, "reset_running_stats"):
                layer.reset_running_stats()
        torch.random.set_rng_state(generator_state)
