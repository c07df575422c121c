"""Cost estimates for ``--dry-run``: forward FLOPs per image times the passes a cell makes.

No dataset file is read and no weight is allocated: FLOPs are counted on the meta device and
split sizes come from the dataset registry, so a grid can be costed before anything is set up.
"""
from __future__ import annotations

import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.data import dataset_info
from bench.harness.grid import Experiment
from bench.models import build_model
from methods import CellShape, get_method

# Sustained rates for turning FLOPs into hours, only a rough guide. GPU: about a tenth of an
# H100's dense bf16 peak, a guess for small-batch training of these models. CPU: what the
# quick grid sustains on the 2-core CI machine (7.8 TFLOP in about 65 s).
ASSUMED_TFLOPS = {"GPU": 100.0, "2-core CPU": 0.12}


@functools.lru_cache(maxsize=64)
def forward_flops(arch: str, *, num_classes: int, in_channels: int, image_size: int) -> float:
    """FLOPs of one single-image forward pass (multiply-adds count 2)."""
    with torch.device("meta"):
        model = build_model(arch, num_classes=num_classes, in_channels=in_channels,
                            image_size=image_size)
        image = torch.empty(1, in_channels, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(image)
    return float(counter.get_total_flops())


def _per_class(total: int | None, classes: int, cap: int | None) -> int | None:
    if total is None:
        return None
    return min(total // classes, cap) if cap is not None else total // classes


def cell_flops(*, experiment: Experiment, forget_classes: tuple[int, ...], method: str,
               params: dict, trains: bool = True) -> float | None:
    """Estimated FLOPs of one cell (training or unlearning plus its evaluation), or None when
    the dataset's sizes or the method's cost are unknown. ``trains=False`` counts an
    ``original`` cell whose model another cell already trained (evaluation only)."""
    info = dataset_info(experiment.dataset)
    per_train = _per_class(info.train_size, info.num_classes, experiment.train_per_class)
    per_test = _per_class(info.test_size, info.num_classes, experiment.test_per_class)
    if per_train is None or per_test is None:
        return None
    k = len(forget_classes)
    shape = CellShape(n_forget=per_train * k, n_retain=per_train * (info.num_classes - k),
                      num_classes=info.num_classes, forget_class_count=k,
                      train_epochs=experiment.train.epochs)
    if method == "original":
        passes: float | None = 3.0 * experiment.train.epochs * per_train * info.num_classes * trains
    else:
        passes = get_method(method)(**params).estimate_passes(shape)
    if passes is None:
        return None
    evaluation = (per_train + per_test) * info.num_classes
    return (passes + evaluation) * forward_flops(
        experiment.arch, num_classes=info.num_classes, in_channels=info.in_channels,
        image_size=info.image_size)


def human_flops(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:,.1f} {unit}"
    return f"{flops:,.0f} FLOP"
