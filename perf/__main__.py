"""Benchmarks of the suite's own speed (not part of the library).

``python -m perf fisher [--samples 256] [--batch 64] [--model resnet18,pbu_resnet18]``
``python -m perf pbu-step [--batch 64] [--steps 10] [--model resnet18]``
``python -m perf throughput [--grid paper] [--device cuda] [--archs a,b]``
``python -m perf full-data [--archs smallcnn,pbu_resnet18] [--forget-class 2]``
"""
from __future__ import annotations

import argparse
import sys

import torch

from perf import fisher as fisher_bench
from perf.common import load_average


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fisher = commands.add_parser("fisher", help="diagonal Fisher engines on the models")
    fisher.add_argument("--samples", type=int, default=256, help="samples for our engines")
    fisher.add_argument("--batch", type=int, default=64, help="loader batch size")
    fisher.add_argument("--model", default="resnet18,pbu_resnet18",
                        help="comma-separated architectures from bench.models (1-channel 28x28 "
                             "inputs), measured one after the other in one run")
    fisher.add_argument("--ref-samples", type=int, default=32,
                        help="samples for the slow reference engines (nngeometry, BackPACK)")
    fisher.add_argument("--repeats", type=int, default=3,
                        help="timed passes per engine after the warm-up; the fastest counts")
    fisher.add_argument("--ref-repeats", type=int, default=1,
                        help="timed passes of the slow reference engines")
    fisher.add_argument("--engines", default=",".join(fisher_bench.ENGINES),
                        help=f"comma-separated subset of {', '.join(fisher_bench.ENGINES)}")
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
    full = commands.add_parser("full-data", help="PBU against retraining on a full dataset")
    full.add_argument("--dataset", default="fashion-mnist")
    full.add_argument("--archs", default="smallcnn,pbu_resnet18",
                      help="comma-separated architectures, one experiment each")
    full.add_argument("--forget-class", type=int, default=2)
    full.add_argument("--seed", type=int, default=0)
    full.add_argument("--data-root", default=None, help="folder holding the dataset's files")
    full.add_argument("--results-dir", default="results",
                      help="records go to <results-dir>/full-data/, models to its .model_cache")
    args = parser.parse_args(argv)
    if args.command == "full-data":
        return _full_data(args, parser)
    if args.command == "pbu-step":
        return _pbu_step(args, parser)
    if args.command == "throughput":
        return _throughput(args, parser)
    if min(args.samples, args.batch, args.ref_samples, args.repeats, args.ref_repeats) < 1:
        parser.error("--samples, --batch, --ref-samples, --repeats and --ref-repeats must be "
                     "positive")
    if args.worker:
        return fisher_bench.worker(args)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in fisher_bench.ENGINES]
    if unknown:
        parser.error(f"unknown engine {', '.join(map(repr, unknown))}; "
                     f"allowed: {', '.join(fisher_bench.ENGINES)}")
    from bench.errors import BenchInputError
    from bench.models import check_arch

    try:
        for name in args.model.split(","):
            if name.strip():
                check_arch(name.strip())
    except BenchInputError as exc:
        parser.error(str(exc))
    return fisher_bench.compare(args, engines)


def _pbu_step(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bench.errors import BenchInputError
    from bench.models import check_arch
    from perf.pbu_step import pbu_step_benchmark, report

    if min(args.batch, args.steps) < 1:
        parser.error("--batch and --steps must be positive")
    try:
        check_arch(args.model)
    except BenchInputError as exc:
        parser.error(str(exc))
    print(f"PBU step vs plain step: {args.model}, batch {args.batch}, 1x{fisher_bench.IMAGE_SIZE}x{fisher_bench.IMAGE_SIZE}"
          f", {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} alternating rounds, load average {load_average()}")
    result = pbu_step_benchmark(model_name=args.model, batch=args.batch, steps=args.steps,
                                device=args.device)
    print(report(result, batch=args.batch))
    return 0


def _full_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bench.errors import BenchInputError
    from perf import full_data

    args.archs = [a for a in args.archs.split(",") if a]
    try:
        return full_data.run(args)
    except BenchInputError as exc:
        parser.error(str(exc))


def _throughput(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bench.errors import BenchInputError
    from perf import throughput as perf_throughput

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
          f"{load_average()}")
    peak = perf_throughput.matmul_peak(torch.device(device))
    results = perf_throughput.run(grid_name=grid, device=device, warmup=args.warmup,
                                  steps=args.steps, archs=archs)
    print(perf_throughput.report(results, peak=peak))
    return 0


if __name__ == "__main__":
    sys.exit(main())
