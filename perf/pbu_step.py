"""``python -m perf pbu-step``: one PBU optimisation step against a plain training step.

Same model, same batch, same mode (BatchNorm in eval, as PBU runs): a plain step is forward,
cross-entropy, backward; "+adam" adds an Adam step. PBU's step adds the analytic penalty
gradient, the one-sync batch checks and Adam. Timings alternate between the variants so
machine noise hits all of them alike; the median over ``steps`` counts.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.models import build_model
from methods.pbu import PBU
from methods.pbu_penalty import PenaltyAnchor


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def pbu_step_benchmark(*, model_name: str, batch: int, steps: int, device: str
                       ) -> dict[str, float]:
    """Median seconds per step for: plain fwd+bwd, fwd+bwd+Adam, and PBU's step."""
    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(model_name, num_classes=10, in_channels=1, image_size=28).to(dev).eval()
    x = torch.randn(batch, 1, 28, 28, device=dev)
    y = torch.zeros(batch, dtype=torch.int64, device=dev)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    fisher = {n: torch.rand_like(p) for n, p in named}
    pbu = PBU(stop_forget_acc=None)
    anchor = PenaltyAnchor(named, fisher, beta=pbu.beta, gamma=pbu.gamma)
    pbu_optimizer = pbu.make_optimizer(anchor.params, dev)
    plain_optimizer = pbu.make_optimizer(anchor.params, dev)
    forget = torch.tensor([0], device=dev)
    reference = pbu.frozen_copy(model)   # the logit anchor's frozen original

    def plain() -> None:
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()

    def plain_adam() -> None:
        plain()
        plain_optimizer.step()

    def pbu_step() -> None:
        pbu.step(model, x, y, anchor=anchor, optimizer=pbu_optimizer, forget=forget,
                 reference=reference)

    variants = {"fwd+bwd": plain, "fwd+bwd+adam": plain_adam, "pbu step": pbu_step}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(steps + 1):
        for name, fn in variants.items():
            elapsed = _timed(fn)
            if round_:  # the first round warms up allocators and kernels
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def report(result: dict[str, float], *, batch: int) -> str:
    base = result["fwd+bwd"]
    lines = [f"{'variant':14s} {'ms/step':>9s} {'ms/sample':>10s} {'x fwd+bwd':>10s}"]
    for name, seconds in result.items():
        lines.append(f"{name:14s} {1e3 * seconds:9.1f} {1e3 * seconds / batch:10.2f} "
                     f"{seconds / base:10.2f}")
    return "\n".join(lines)
