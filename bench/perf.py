"""Performance benchmarks.

``python -m bench.perf fisher [--samples 256] [--batch 64] [--model resnet18]``
``python -m bench.perf pbu-step [--batch 64] [--steps 10] [--model resnet18]``
``python -m bench.perf throughput [--grid paper] [--device cuda] [--archs a,b]``

Each engine runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own
and no engine warms caches or allocator pools for another. A worker builds the same model
(seed 0) and data (seed 1), does an untimed warm-up pass, then times ``--repeats`` passes
over its samples and reports the fastest (and the median). Slow reference engines time
fewer samples (``--ref-samples``); every number is per sample. Agreement is checked against
our exact Fisher on the same samples.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10
IMAGE_SIZE = 28
IN_CHANNELS = 1
WARMUP_SAMPLES = 8

# engine -> (pip package that provides it, or None for ours; which samples it times)
ENGINES: dict[str, tuple[str | None, str]] = {
    "ours-exact": (None, "all"),
    "ours-mc": (None, "all"),
    "train-step": (None, "all"),
    "nngeometry": ("nngeometry", "ref"),
    "backpack-exact": ("backpack-for-pytorch", "ref"),
    "backpack-mc": ("backpack-for-pytorch", "ref"),
}
_MODULES = {"nngeometry": "nngeometry", "backpack-for-pytorch": "backpack"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fisher = commands.add_parser("fisher", help="diagonal Fisher engines on one model")
    fisher.add_argument("--samples", type=int, default=256, help="samples for our engines")
    fisher.add_argument("--batch", type=int, default=64, help="loader batch size")
    fisher.add_argument("--model", default="resnet18",
                        help="architecture from bench.models (1-channel 28x28 inputs)")
    fisher.add_argument("--ref-samples", type=int, default=32,
                        help="samples for the slow reference engines (nngeometry, BackPACK)")
    fisher.add_argument("--repeats", type=int, default=3,
                        help="timed passes per engine after the warm-up; the fastest counts")
    fisher.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated subset of {', '.join(ENGINES)}")
    fisher.add_argument("--worker", help=argparse.SUPPRESS)
    fisher.add_argument("--out", help=argparse.SUPPRESS)
    step = commands.add_parser("pbu-step", help="one PBU step against a plain training step")
    step.add_argument("--batch", type=int, default=64)
    step.add_argument("--steps", type=int, default=10, help="timed rounds; the median counts")
    step.add_argument("--model", default="resnet18",
                      help="architecture from bench.models (1-channel 28x28 inputs)")
    step.add_argument("--device", default="cpu")
    speed = commands.add_parser("throughput", help="training/evaluation images/s per grid "
                                                   "architecture and fraction of matmul peak")
    speed.add_argument("--grid", default=None,
                       help="built-in grid whose (dataset, arch) rows to time (default: paper "
                            "on CUDA, fashion on the CPU)")
    speed.add_argument("--archs", default=None, help="comma-separated subset of architectures")
    speed.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if present)")
    speed.add_argument("--steps", type=int, default=10, help="timed steps; the median counts")
    speed.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "pbu-step":
        return _pbu_step(args, parser)
    if args.command == "throughput":
        return _throughput(args, parser)
    if min(args.samples, args.batch, args.ref_samples, args.repeats) < 1:
        parser.error("--samples, --batch, --ref-samples and --repeats must be positive")
    if args.worker:
        return _worker(args)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engine {', '.join(map(repr, unknown))}; "
                     f"allowed: {', '.join(ENGINES)}")
    from bench.errors import BenchInputError
    from bench.models import check_arch

    try:
        check_arch(args.model)
    except BenchInputError as exc:
        parser.error(str(exc))
    return _compare(args, engines)


def _pbu_step(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bench.errors import BenchInputError
    from bench.models import check_arch
    from bench.perf_pbu import pbu_step_benchmark, report

    if min(args.batch, args.steps) < 1:
        parser.error("--batch and --steps must be positive")
    try:
        check_arch(args.model)
    except BenchInputError as exc:
        parser.error(str(exc))
    print(f"PBU step vs plain step: {args.model}, batch {args.batch}, 1x{IMAGE_SIZE}x{IMAGE_SIZE}"
          f", {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} alternating rounds, load average {_load()}")
    result = pbu_step_benchmark(model_name=args.model, batch=args.batch, steps=args.steps,
                                device=args.device)
    print(report(result, batch=args.batch))
    return 0


def _throughput(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bench import perf_throughput
    from bench.errors import BenchInputError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    grid = args.grid or ("paper" if device.startswith("cuda") else "fashion")
    if min(args.steps, args.warmup + 1) < 1:
        parser.error("--steps must be positive and --warmup not negative")
    archs = [a for a in args.archs.split(",") if a] if args.archs else None
    try:
        rows = perf_throughput.grid_rows(grid)
    except BenchInputError as exc:
        parser.error(str(exc))
    missing = sorted(set(archs or []) - {r.arch for r in rows})
    if missing:
        parser.error(f"--archs {', '.join(missing)} not in grid {grid!r}; it has "
                     f"{', '.join(sorted({r.arch for r in rows}))}")
    print(f"throughput: grid {grid}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.steps} steps, load average "
          f"{_load()}")
    peak = perf_throughput.matmul_peak(torch.device(device))
    results = perf_throughput.run(grid_name=grid, device=device, warmup=args.warmup,
                                  steps=args.steps, archs=archs)
    print(perf_throughput.report(results, peak=peak))
    return 0


# ---------------------------------------------------------------------------------------------
# Parent: run each engine in its own process and report


def _compare(args: argparse.Namespace, engines: list[str]) -> int:
    ref_samples = min(args.ref_samples, args.samples)
    print(f"diagonal Fisher benchmark: {args.model}, {IN_CHANNELS}x{IMAGE_SIZE}x{IMAGE_SIZE} "
          f"random inputs, {NUM_CLASSES} classes, batches of {args.batch}; our engines and the "
          f"training step on {args.samples} samples, nngeometry and BackPACK on the first "
          f"{ref_samples} (per-sample times are comparable)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average at start {_load()}")
    print(f"time: wall clock per sample, fastest of {args.repeats} passes (median in brackets) "
          f"after a warm-up pass on {WARMUP_SAMPLES} samples; peak RSS: ru_maxrss of the "
          "engine's own process, including Python, torch, model and data (its RSS before the "
          "engine ran: 'setup')")
    results: dict[str, dict[str, Any]] = {}
    exact_on_ref: dict[str, torch.Tensor] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for engine in engines:
            package = ENGINES[engine][0]
            if package and importlib.util.find_spec(_MODULES[package]) is None:
                print(f"  {engine:15s} skipped: {package} is not installed "
                      f"(pip install {package})")
                continue
            out = Path(tmp) / f"{engine}.pt"
            command = [sys.executable, "-m", "bench.perf", "fisher", "--worker", engine,
                       "--out", str(out), "--samples", str(args.samples),
                       "--batch", str(args.batch), "--model", args.model,
                       "--ref-samples", str(ref_samples), "--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                print(f"  {engine:15s} FAILED: {' | '.join(tail)}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["fisher"] = torch.load(out) if out.exists() else None
            if engine == "ours-exact":
                exact_on_ref = torch.load(f"{out}.ref")
            results[engine] = result
            print(f"  {engine:15s} {result['ms']:8.1f} ms/sample ({result['median_ms']:8.1f}) "
                  f"on {result['samples']:3d} samples   peak RSS {result['peak_mib']:5.0f} MiB "
                  f"(setup {result['setup_mib']:4.0f})", flush=True)
    _report(results, exact_on_ref)
    print(f"load average at end {_load()}")
    return 0


def _report(results: dict[str, dict[str, Any]],
            exact_on_ref: dict[str, torch.Tensor] | None) -> None:
    """Agreement with our exact Fisher and the speed ratios the design targets."""
    print("agreement, max |diff| / max |ours-exact| on the same samples "
          "(MC engines are one-draw estimates: expect errors of order 0.1-1):")
    for engine, result in results.items():
        if result["fisher"] is None or engine == "ours-exact":
            continue
        ref = (results["ours-exact"]["fisher"] if engine == "ours-mc" and "ours-exact" in results
               else exact_on_ref)
        if ref is not None:
            print(f"  {engine:15s} {_relative_error(result['fisher'], ref):.2e}")
    for ours, theirs in (("ours-exact", "nngeometry"), ("ours-exact", "backpack-exact"),
                         ("ours-mc", "backpack-mc")):
        if ours in results and theirs in results:
            ratio = results[theirs]["ms"] / results[ours]["ms"]
            print(f"speed ratio {theirs} / {ours}: {ratio:.1f}x")
    mc, step = results.get("ours-mc"), results.get("train-step")
    if mc is not None and step is not None:
        print(f"ours-mc costs {mc['ms'] / step['ms']:.2f}x a plain training step "
              f"({step['ms']:.1f} ms/sample: forward + backward of cross-entropy on the same "
              "batches, train mode)")


def _relative_error(values: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    if set(values) != set(ref):
        return float("nan")
    diff = max(float((values[n] - ref[n]).abs().max()) for n in ref)
    return diff / max(float(ref[n].abs().max()) for n in ref)


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


# ---------------------------------------------------------------------------------------------
# Worker: one engine, one process


def _worker(args: argparse.Namespace) -> int:
    from bench.models import build_model

    engine = args.worker
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS,
                        image_size=IMAGE_SIZE).eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(args.samples, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (args.samples,), generator=generator)
    n = args.samples if ENGINES[engine][1] == "all" else min(args.ref_samples, args.samples)
    setup = _peak_mib()
    run = _ENGINE_RUNNERS[engine](model)
    run(x[:WARMUP_SAMPLES], y[:WARMUP_SAMPLES], args.batch)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fisher = run(x[:n], y[:n], args.batch)
        times.append(time.perf_counter() - start)
    if fisher is not None:
        torch.save(fisher, args.out)
    if engine == "ours-exact":
        # Untimed: the Fisher on the reference engines' samples, to check their agreement.
        ref_n = min(args.ref_samples, args.samples)
        torch.save(run(x[:ref_n], y[:ref_n], args.batch), args.out + ".ref")
    print(json.dumps({"engine": engine, "samples": n, "ms": 1e3 * min(times) / n,
                      "median_ms": 1e3 * statistics.median(times) / n,
                      "peak_mib": _peak_mib(), "setup_mib": setup}))
    return 0


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, ...]]:
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


Runner = Callable[[torch.Tensor, torch.Tensor, int], "dict[str, torch.Tensor] | None"]


def _ours(kind: str) -> Callable[[nn.Module], Runner]:
    def prepare(model: nn.Module) -> Runner:
        from methods.fisher import diagonal_fisher

        def run(x: torch.Tensor, y: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
            return diagonal_fisher(model, _batches(x, y, batch), kind=kind,
                                   generator=torch.Generator().manual_seed(2))

        return run

    return prepare


def _train_step(model: nn.Module) -> Runner:
    def run(x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        model.train()
        for xb, yb in _batches(x, y, batch):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
        model.zero_grad(set_to_none=True)
        model.eval()

    return run


def _nngeometry(model: nn.Module) -> Runner:
    from nngeometry.layercollection import LayerCollection
    from nngeometry.metrics import FIM
    from nngeometry.object import PMatDiag
    from torch.utils.data import DataLoader, TensorDataset

    options: dict[str, Any] = {"variant": "classif_logits"}
    if "n_output" in inspect.signature(FIM).parameters:  # nngeometry < 0.4 needs it
        options["n_output"] = NUM_CLASSES
    layers = LayerCollection.from_model(model)
    params = dict(model.named_parameters())

    def run(x: torch.Tensor, y: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
        loader = DataLoader(TensorDataset(x, y), batch_size=batch)
        diag = FIM(model=model, loader=loader, representation=PMatDiag,
                   layer_collection=layers, **options).get_diag()
        # nngeometry orders its flat diagonal by layer, weight before bias.
        fisher, offset = {}, 0
        for layer_name in layers.layers:
            for attr in ("weight", "bias"):
                name = f"{layer_name}.{attr}"
                if name in params:
                    size = params[name].numel()
                    fisher[name] = diag[offset:offset + size].view_as(params[name])
                    offset += size
        if offset != diag.numel():
            raise RuntimeError(f"nngeometry returned {diag.numel()} diagonal entries for "
                               f"{offset} parameters (grouped convolutions are not supported)")
        return fisher

    return run


def _backpack(extension: str) -> Callable[[nn.Module], Runner]:
    def prepare(model: nn.Module) -> Runner:
        import backpack
        from backpack import extensions

        for module in model.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False  # BackPACK's backward hooks reject in-place outputs
        # The converter turns functional residual additions into modules BackPACK knows.
        extended = backpack.extend(model, use_converter=True)
        loss_fn = backpack.extend(nn.CrossEntropyLoss(reduction="sum"))
        attr = "diag_ggn_exact" if extension == "DiagGGNExact" else "diag_ggn_mc"

        def run(x: torch.Tensor, y: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
            sums: dict[str, torch.Tensor] = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # full-backward-hook notices, once per batch
                for xb, yb in _batches(x, y, batch):
                    extended.zero_grad(set_to_none=True)
                    with backpack.backpack(getattr(extensions, extension)()):
                        loss_fn(extended(xb), yb).backward()
                    for name, p in extended.named_parameters():
                        sums[name] = sums.get(name, 0) + getattr(p, attr).detach()
            extended.zero_grad(set_to_none=True)
            return {name: total / len(x) for name, total in sums.items()}

        return run

    return prepare


_ENGINE_RUNNERS: dict[str, Callable[[nn.Module], Runner]] = {
    "ours-exact": _ours("exact"),
    "ours-mc": _ours("mc"),
    "train-step": _train_step,
    "nngeometry": _nngeometry,
    "backpack-exact": _backpack("DiagGGNExact"),
    "backpack-mc": _backpack("DiagGGNMC"),
}


if __name__ == "__main__":
    sys.exit(main())
