"""``python -m perf fisher``: diagonal Fisher engines (ours, nngeometry, BackPACK) on the models.

By default two models in one run: the suite's small-input ResNet-18 (3x3 stride-1 stem, no
max-pooling) and the official PBU code's ResNet-18 (7x7 stride-2 stem, max-pooling kept), both
on 1x28x28 inputs with 10 classes. For each it prints every engine's time per sample, the speed
ratios, and ours against a FLOP floor computed from the model (``flop_floor``).

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

from perf.common import load_average

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


# ---------------------------------------------------------------------------------------------
# Parent: run each engine in its own process and report


def compare(args: argparse.Namespace, engines: list[str]) -> int:
    """Every model of ``args.model`` (comma-separated), one after the other, in one run."""
    from perf.throughput import matmul_peak

    models = [m.strip() for m in args.model.split(",") if m.strip()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average at start {load_average()}")
    peak = matmul_peak(torch.device("cpu"))
    print(f"measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s (best of 1024-3072 square "
          "matmuls; converts the FLOP floors below into times)")
    for name in models:
        print()
        _compare_one(args, name, engines, peak)
    print(f"load average at end {load_average()}")
    return 0


def _compare_one(args: argparse.Namespace, model_name: str, engines: list[str],
                 peak: float) -> None:
    args = argparse.Namespace(**{**vars(args), "model": model_name})
    ref_samples = min(args.ref_samples, args.samples)
    print(f"diagonal Fisher benchmark: {args.model}, {IN_CHANNELS}x{IMAGE_SIZE}x{IMAGE_SIZE} "
          f"random inputs, {NUM_CLASSES} classes, batches of {args.batch}; our engines and the "
          f"training step on {args.samples} samples, nngeometry and BackPACK on the first "
          f"{ref_samples} (per-sample times are comparable)")
    print(f"time: wall clock per sample, fastest of {args.repeats} passes (reference engines: "
          f"{args.ref_repeats}; median in brackets) "
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
            command = [sys.executable, "-m", "perf", "fisher", "--worker", engine,
                       "--out", str(out), "--samples", str(args.samples),
                       "--batch", str(args.batch), "--model", args.model,
                       "--ref-samples", str(ref_samples), "--repeats", str(args.repeats),
                       "--ref-repeats", str(args.ref_repeats)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                print(f"  {engine:15s} FAILED: {' | '.join(tail)}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["fisher"] = torch.load(out, weights_only=True) if out.exists() else None
            if engine == "ours-exact":
                exact_on_ref = torch.load(f"{out}.ref", weights_only=True)
            results[engine] = result
            print(f"  {engine:15s} {result['ms']:8.1f} ms/sample ({result['median_ms']:8.1f}) "
                  f"on {result['samples']:3d} samples   peak RSS {result['peak_mib']:5.0f} MiB "
                  f"(setup {result['setup_mib']:4.0f})", flush=True)
    _report(results, exact_on_ref)
    _report_floor(model_name, results, peak)


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


def _report_floor(model_name: str, results: dict[str, dict[str, Any]], peak: float) -> None:
    floor = flop_floor(model_name)
    rank = NUM_CLASSES - 1
    activation = floor["forward"] + rank * floor["backward"]
    total = activation + floor["weights"]
    print(f"FLOP floor of the exact Fisher per sample: forward {floor['forward'] / 1e6:.1f} MFLOP"
          f" + {rank} activation backwards x {floor['backward'] / 1e6:.1f} = "
          f"{activation / 1e6:.1f} MFLOP ({1e3 * activation / peak:.2f} ms at the measured "
          f"peak); with the weight-gradient squares' cheapest exact contraction "
          f"({floor['weights'] / 1e6:.1f} MFLOP): {total / 1e6:.1f} MFLOP "
          f"({1e3 * total / peak:.2f} ms)")
    if "ours-exact" in results:
        ms = results["ours-exact"]["ms"]
        print(f"ours-exact / floor: {ms / (1e3 * total / peak):.2f}x (against forward + "
              f"backwards only: {ms / (1e3 * activation / peak):.2f}x)")


def flop_floor(model_name: str) -> dict[str, float]:
    """FLOPs per sample of the exact Fisher's unavoidable work on ``model_name``.

    forward: multiply-adds x 2 of every convolution and Linear layer. backward: the same for
    one backward pass to the activations (all layers but the first, whose input needs no
    gradient); the exact Fisher needs C-1 of them. weights: per layer, the cheaper exact way
    to turn (inputs, C-1 output gradients) into summed squared weight gradients, counting
    multiply-adds only: r per-sample products G U^T of P positions (2 r D_out D_in P), or the
    pairwise form (2 r D_out P^2 for K, 2 D_out D_in x the position pairs that read real
    input, not zero padding). Normalisation layers and biases (all O(activations)) are left out.
    """
    from bench.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS,
                        image_size=IMAGE_SIZE).eval()
    rank = NUM_CLASSES - 1
    totals = {"forward": 0.0, "backward": 0.0, "weights": 0.0}
    first = True

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal first
        x = args[0]
        if isinstance(module, nn.Linear):
            d_out, d_in, positions, groups = module.out_features, module.in_features, 1, 1
            pairs = 1.0
        else:
            groups = module.groups
            d_out = module.out_channels // groups
            d_in = module.weight[0].numel()
            positions = output[0, 0].numel()
            valid = F.unfold(x.new_ones(1, 1, *x.shape[2:]), module.kernel_size,
                             module.dilation, module.padding, module.stride)[0] > 0
            counts = valid.sum(1, dtype=torch.float64)
            pairs = float((counts * (counts + 1) / 2).mean())
        macs = groups * d_out * d_in * positions
        totals["forward"] += 2 * macs
        if not first:
            totals["backward"] += 2 * macs
        first = False
        direct = 2 * rank * macs
        pairwise = groups * (2 * rank * d_out * positions ** 2 + 2 * d_out * d_in * pairs)
        totals["weights"] += min(direct, pairwise)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE))
    for handle in handles:
        handle.remove()
    return totals


def _relative_error(values: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    if set(values) != set(ref):
        return float("nan")
    diff = max(float((values[n] - ref[n]).abs().max()) for n in ref)
    return diff / max(float(ref[n].abs().max()) for n in ref)


# ---------------------------------------------------------------------------------------------
# Worker: one engine, one process


def worker(args: argparse.Namespace) -> int:
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
    for _ in range(args.repeats if ENGINES[engine][1] == "all" else args.ref_repeats):
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

