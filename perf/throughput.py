"""``python -m perf throughput``: training and evaluation images/s per grid architecture.

For each (dataset, architecture) of a grid, at the dataset's input shape and the recipe's batch
size, on synthetic on-device batches (so the data pipeline is not measured): a plain fp32,
contiguous-memory training step against the suite's settings (``bench.harness.accel``: channels-last,
bf16 autocast and cuDNN autotuning on CUDA), both measured in the same run, and evaluation at
``eval_batch_size``. Achieved FLOP/s (a training step counts 3 forward passes of the counted
FLOPs) is reported as a fraction of this device's measured matmul peak (bf16 on CUDA, fp32 on
the CPU), measured in the same run.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.data import dataset_info
from bench.harness.accel import (
    autocast,
    configure_backends,
    eval_batch_size,
    prepare_model,
)
from bench.harness.cost import forward_flops
from bench.harness.grid import load_grid
from bench.models import build_model


@dataclass(frozen=True, kw_only=True)
class Row:
    dataset: str
    arch: str
    batch: int


def grid_rows(grid_name: str) -> list[Row]:
    """One row per distinct (dataset, architecture) of a grid, at its recipe's batch size."""
    rows: dict[tuple[str, str], Row] = {}
    for exp in load_grid(grid_name).experiments:
        rows.setdefault((exp.dataset, exp.arch),
                        Row(dataset=exp.dataset, arch=exp.arch, batch=exp.train.batch_size))
    return list(rows.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], object], *, device: torch.device, warmup: int,
                    steps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device: torch.device, *, steps: int = 5) -> float:
    """Best measured FLOP/s of large square matmuls in the dtype the suite trains in.

    The best of several sizes and steps, not a median: a peak is what the device can reach,
    and on a shared machine a single size or a median understates it, which once made a
    convolution appear to run above "peak".
    """
    sizes, dtype = (((4096, 8192), torch.bfloat16) if device.type == "cuda"
                    else ((1024, 2048, 3072), torch.float32))
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        for _ in range(steps):
            _sync(device)
            start = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
    return best


def _train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                optimizer: torch.optim.Optimizer, precision) -> Callable[[], None]:
    def step() -> None:
        with precision():
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure_row(row: Row, *, device: torch.device, warmup: int, steps: int) -> dict[str, float]:
    """images/s of a plain training step, the suite's training step and evaluation."""
    info = dataset_info(row.dataset)
    shape = (info.in_channels, info.image_size, info.image_size)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(row.batch, *shape, generator=generator).to(device)
    y = torch.randint(0, info.num_classes, (row.batch,), generator=generator).to(device)
    out: dict[str, float] = {}
    for variant in ("plain", "suite"):
        torch.manual_seed(0)
        model = build_model(row.arch, num_classes=info.num_classes, in_channels=info.in_channels,
                            image_size=info.image_size)
        model = model.to(device) if variant == "plain" else prepare_model(model, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        precision = (contextlib.nullcontext if variant == "plain"
                     else lambda: autocast(device))
        seconds = _median_seconds(_train_step(model.train(), x, y, optimizer, precision),
                                  device=device, warmup=warmup, steps=steps)
        out[f"train_{variant}"] = row.batch / seconds
    eval_batch = eval_batch_size(device)
    x_eval = torch.randn(eval_batch, *shape, generator=generator).to(device)
    model.eval()

    def evaluate() -> None:
        with torch.inference_mode(), autocast(device):
            model(x_eval)

    out["eval"] = eval_batch / _median_seconds(evaluate, device=device, warmup=warmup,
                                               steps=steps)
    out["forward_flops"] = forward_flops(row.arch, num_classes=info.num_classes,
                                         in_channels=info.in_channels,
                                         image_size=info.image_size)
    return out


def run(*, grid_name: str, device: str, warmup: int, steps: int,
        archs: list[str] | None = None) -> list[tuple[Row, dict[str, float]]]:
    dev = torch.device(device)
    configure_backends(dev)
    rows = [r for r in grid_rows(grid_name) if archs is None or r.arch in archs]
    return [(row, measure_row(row, device=dev, warmup=warmup, steps=steps)) for row in rows]


def report(results: list[tuple[Row, dict[str, float]]], *, peak: float) -> str:
    header = (f"{'dataset':14s} {'arch':16s} {'batch':>5s} {'train img/s':>12s} "
              f"{'plain img/s':>12s} {'speed-up':>8s} {'eval img/s':>11s} {'TFLOP/s':>8s} "
              f"{'of peak':>8s}")
    lines = [header]
    for row, r in results:
        achieved = r["train_suite"] * 3 * r["forward_flops"]
        lines.append(
            f"{row.dataset:14s} {row.arch:16s} {row.batch:5d} {r['train_suite']:12,.1f} "
            f"{r['train_plain']:12,.1f} {r['train_suite'] / r['train_plain']:7.2f}x "
            f"{r['eval']:11,.1f} {achieved / 1e12:8.3f} {achieved / peak:7.1%}")
    lines.append(f"measured matmul peak: {peak / 1e12:.3f} TFLOP/s")
    return "\n".join(lines)
