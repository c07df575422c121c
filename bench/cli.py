"""Command line of ``run_bench.py``: flags -> grid -> runner -> tables and figures."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from bench.errors import BenchInputError
from bench.harness.config import RunConfig
from methods.lookup import RegistryError

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parent.parent


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise BenchInputError(message)


def _parse_ints(text: str, flag: str, *, separator: str = ",") -> list[int]:
    """Integers separated by ``separator``; empty items and non-integers are bad input."""
    parts = text.split(separator)
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise BenchInputError(f"{flag} {text!r}: expected integers separated by "
                              f"{separator!r}") from None


def _seeds(text: str) -> list[int] | int:
    """``--seeds 3`` means seeds 0,1,2 (the grid schema checks the count); ``--seeds 0,4``
    lists them."""
    values = _parse_ints(text, "--seeds")
    return values[0] if "," not in text else values


def _classes(text: str) -> list[list[int]]:
    """``2,6`` forgets 2 and 6 in separate cells; ``2+6`` forgets both at once."""
    return [_parse_ints(part, "--classes", separator="+") for part in text.split(",")]


def _methods(text: str) -> list[str]:
    names = text.split(",")
    if not all(n.strip() for n in names):
        raise BenchInputError(f"--methods {text!r}: expected method labels separated by ','")
    return [n.strip() for n in names]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="run_bench.py", description=__doc__)
    p.add_argument("--grid", default="quick", help="built-in grid name or a .yaml grid file")
    p.add_argument("--methods", help="comma-separated method labels to compute (default: grid's)")
    p.add_argument("--seeds", help="a count N (seeds 0..N-1) or a list like 0,1,2")
    p.add_argument("--classes", help="forget classes: 2,6 (one cell each) or 2+6 (together)")
    p.add_argument("--jobs", type=int, default=None,
                   help="parallel cells (joblib); default: one per CPU core on the CPU, "
                        "one per GPU on CUDA")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per cell (default 1); part of every key, because "
                        "results differ across thread counts, so --jobs never changes them")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    p.add_argument("--backend", choices=("loky", "dask"), default="loky",
                   help="where cells run: loky = worker processes here, dask = the workers of "
                        "the Dask cluster at --scheduler (default: loky)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address, e.g. tcp://host:8786 (with --backend dask); "
                        "--cache-dir must then be a path every worker shares")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="a Python file registering extra methods (repeatable)")
    p.add_argument("--data-root", default=None, help="folder holding the datasets' files")
    p.add_argument("--download", action="store_true", help="let torchvision fetch datasets")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--plots-dir", type=Path, default=Path("plots"))
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="trained-model cache (default: <results-dir>/.model_cache)")
    p.add_argument("--tune", type=int, metavar="N",
                   help="tune every method with N trials per (dataset, architecture) on a "
                        "validation split; writes <results-dir>/<grid>/tuned.yaml and exits")
    p.add_argument("--tune-objective", choices=("retrain-gap", "forget-only"),
                   default="retrain-gap",
                   help="what --tune minimises (README: Tuning; default: retrain-gap)")
    p.add_argument("--tune-seed", type=int, default=0, help="the TPE sampler's seed (default 0)")
    p.add_argument("--tuned", metavar="FILE.yaml",
                   help="point the grid at a tuned file: its values override the grid's "
                        "method_params (as the grid key `tuned:`)")
    p.add_argument("--shadows", type=int, metavar="K",
                   help="shadow-model privacy (U-LiRA, the NeurIPS 2023 challenge's F) over "
                        "seeds 0..K-1, K even and at least 6; as the grid key `shadows: K`; "
                        "writes <results-dir>/<grid>/shadows.csv (README: Shadow models)")
    p.add_argument("--list-methods", action="store_true", help="list registered methods and exit")
    p.add_argument("--render-only", action="store_true",
                   help="re-render tables and figures from stored records")
    p.add_argument("--prune-stale", action="store_true",
                   help="with --render-only: first remove the records that rendering skips "
                        "(other configuration, code or data; older duplicates) from runs.jsonl")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def _summary(doc: str | None, width: int = 90) -> str:
    """The docstring's first sentence, on one line."""
    text = " ".join((doc or "").split("\n\n")[0].split())
    sentence = text.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= width else sentence[:width - 3] + "..."


def _device(requested: str | None) -> str:
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return requested
    if requested.startswith("cuda"):
        index = requested.partition(":")[2]
        if not torch.cuda.is_available():
            raise BenchInputError(f"--device {requested!r}: no CUDA device here; allowed: cpu")
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise BenchInputError(f"--device {requested!r}: allowed cuda:0.."
                                  f"cuda:{torch.cuda.device_count() - 1}")
        return requested
    raise BenchInputError(f"--device {requested!r}: allowed cpu, cuda, cuda:N")


def _default_jobs(device: str) -> int:
    import torch

    if device == "cuda":
        return max(1, torch.cuda.device_count())
    if device.startswith("cuda"):
        return 1
    return os.cpu_count() or 1


def _cluster_threads(address: str) -> int:
    """The Dask cluster's worker threads (at least 1); raises bad input if it is unreachable."""
    from bench.harness.parallel import dask_client

    with dask_client(address) as client:
        threads = client.nthreads()
    log.info("Dask scheduler %s: %d workers, %d threads", address, len(threads),
             sum(threads.values()))
    return max(1, sum(threads.values()))


def _dry_run(grid, results_dir: Path) -> None:
    """List every cell with its state and estimated cost; the total is for cells still to run.
    No data is read: a cell counts as done when a record of its configuration and code exists,
    for whatever data that record names."""
    from bench.harness import cells as grid_cells
    from bench.harness import cost

    cells, pending = grid_cells.pending_cells(grid, results_dir)
    todo = {c.key for c in pending}
    total, unknown, trained = 0.0, 0, set()
    for cell in cells:
        # Each original model is trained once and shared by the forget-class sets.
        original = grid_cells.original_key(cell)
        flops = cost.cell_flops(experiment=cell.experiment, forget_classes=cell.forget_classes,
                                method=cell.method, params=cell.params,
                                trains=cell.method != "original" or original not in trained)
        if cell.method == "original":
            trained.add(original)
        if cell.key in todo:
            total += flops or 0.0
            unknown += flops is None
        estimate = "?" if flops is None else cost.human_flops(flops)
        print(f"{'todo' if cell.key in todo else 'done'}  {cell.key:48s} {estimate:>16s}")
    times = ", ".join(f"{total / (rate * 1e12) / 3600:,.1f} h on a {where} at {rate:g} TFLOP/s"
                      for where, rate in cost.ASSUMED_TFLOPS.items())
    print(f"{len(cells)} cells, {len(pending)} to run: about {cost.human_flops(total)} "
          f"({times})" + (f"; {unknown} cells of unknown cost left out" if unknown else ""))


def _probe_writable(folders: list[tuple[str, Path]]) -> None:
    """Create each folder and a probe file in it: an unusable output path is bad input before
    anything runs. On failure the folders this created are removed again, so a bad run leaves
    nothing behind; on success they stay for the run."""
    created: list[Path] = []
    try:
        for flag, folder in folders:
            try:
                for parent in reversed([folder, *folder.parents]):
                    if not parent.exists():
                        try:
                            parent.mkdir()
                            created.append(parent)
                        except FileExistsError:  # a concurrent run made it
                            pass
                probe = folder / f".probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise BenchInputError(f"{flag} {str(folder)!r} is not a writable folder: "
                                      f"{exc.strerror or exc}") from None
    except BenchInputError:
        for made in reversed(created):
            try:
                made.rmdir()
            except OSError:
                pass
        raise


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler) taken the way Ctrl-C is: unwinding through the
    parallel backend stops its worker processes, which the default action would orphan."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    # Signal handlers belong to the main thread; called from another, SIGTERM keeps its action.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return _main(argv)
    except (BenchInputError, RegistryError) as exc:
        print(f"run_bench.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("run_bench.py: interrupted; finished records are kept, and the next run resumes "
              "where this one stopped", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT)
    except BrokenPipeError:  # e.g. ``--dry-run | head``: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _check_flags(args: argparse.Namespace) -> None:
    if args.jobs is not None and args.jobs < 1:
        raise BenchInputError(f"--jobs {args.jobs}: must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise BenchInputError(f"--threads {args.threads}: must be at least 1")
    if args.backend == "dask" and not args.scheduler:
        raise BenchInputError("--backend dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    if args.scheduler and args.backend != "dask":
        raise BenchInputError(f"--scheduler {args.scheduler!r} is only used with --backend dask")
    if args.tune is not None and args.tune < 1:
        raise BenchInputError(f"--tune {args.tune}: must be at least 1 trial")
    if args.tune is not None and (args.dry_run or args.render_only or args.tuned):
        raise BenchInputError("--tune cannot be combined with --dry-run, --render-only or "
                              "--tuned (tuning starts from the grid's own settings and ignores "
                              "its tuned file)")
    if args.prune_stale and not args.render_only:
        raise BenchInputError("--prune-stale works with --render-only only (a run keeps every "
                              "record it finds)")
    if args.tune_seed < 0:
        raise BenchInputError(f"--tune-seed {args.tune_seed}: must be at least 0")


def _render_only(args: argparse.Namespace, data_root: str | None) -> int:
    """Re-render from stored records; data is read (when present) only to fingerprint it, so
    that records made from other data are left out."""
    from bench.harness import execute
    from bench.harness import grid as grids
    from bench.harness.cells import prune_stale, runs_path
    from bench.harness.config import RunConfig
    from bench.harness.lock import grid_lock
    from bench.report import render

    grid = grids.load_grid(args.grid, tuned=args.tuned, shadows=args.shadows)
    cfg = RunConfig(results_dir=args.results_dir, cache_dir=args.results_dir,
                    data_root=data_root, threads=args.threads or 1)
    try:
        contexts = execute.experiment_contexts(grid, cfg)
    except BenchInputError as exc:
        log.warning("%s; records are matched on configuration and code only", exc)
        contexts = None
    if args.prune_stale:
        path = runs_path(args.results_dir, grid.name)
        with grid_lock(args.results_dir / grid.name):
            print(f"removed {prune_stale(grid, path, contexts)} stale record(s) from {path}")
    written = render.render(grid, results_dir=args.results_dir, plots_dir=args.plots_dir,
                            contexts=contexts)
    log.info("rendered %d files", len(written))
    return 0


def _tune(args: argparse.Namespace, grid, cfg: RunConfig) -> int:
    """``--tune N``: 1 when a method was left without an entry (every trial failed)."""
    from bench.harness.lock import grid_lock
    from bench.tuning.tuner import TuneSettings, tune_grid

    settings = TuneSettings(trials=args.tune, objective=args.tune_objective,
                            sampler_seed=args.tune_seed)
    with grid_lock(args.results_dir / grid.name):
        path, computed, missing = tune_grid(grid, cfg, settings=settings)
    print(f"tuned with {args.tune} trials per method and (dataset, model) ({computed} cells "
          f"computed); wrote {path}. Use it with --tuned {path} or the grid key "
          f"`tuned: {path}`")
    return 1 if missing else 0


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from methods import get_method, list_methods, load_plugins
    from methods.search import describe

    load_plugins(args.plugin)
    if args.list_methods:
        for name in list_methods():
            cls = get_method(name)
            needs = ",".join(sorted(cls.needs)) or "-"
            print(f"{name:22s} needs {needs:29s} {_summary(cls.__doc__)}")
            print(f"{'':22s} tunes {describe(cls.search_space)}")
        return 0
    _check_flags(args)
    # Absolute paths: Dask workers do not share this process's working directory.
    data_root = args.data_root and str(Path(args.data_root).resolve())
    if args.render_only:
        _probe_writable([("--results-dir", args.results_dir), ("--plots-dir", args.plots_dir)])
        return _render_only(args, data_root)

    from bench.harness import execute, provenance
    from bench.harness import grid as grids
    from bench.harness.lock import grid_lock
    from bench.report import render

    grid = grids.load_grid(
        args.grid, methods=None if args.methods is None else _methods(args.methods),
        seeds=None if args.seeds is None else _seeds(args.seeds),
        classes=None if args.classes is None else _classes(args.classes), tuned=args.tuned,
        untuned=args.tune is not None, shadows=args.shadows)
    if args.tune is not None and grid.shadows:
        # Tuning runs on a validation view with its own cells; shadows are the test grid's.
        raise BenchInputError("--tune cannot be combined with --shadows or a grid's "
                              "`shadows` key")
    if args.dry_run:
        _dry_run(grid, args.results_dir)
        return 0
    device = _device(args.device)
    # A missing dataset is bad input: fail before writing. Tuning loads only its validation
    # view, never the test split.
    to_load = grid.experiments
    if args.tune is not None:
        from bench.tuning.tuner import validation_experiment

        to_load = tuple(validation_experiment(e) for e in grid.experiments)
    for exp in to_load:
        execute.experiment_data(exp, root=data_root, download=args.download)
    if args.backend == "dask":
        # Connect even with --jobs: an unreachable scheduler is bad input before anything is
        # written, not an error halfway through the grid.
        jobs = args.jobs or _cluster_threads(args.scheduler)
    else:
        jobs = args.jobs or _default_jobs(device)
    cache_dir = (args.cache_dir or args.results_dir / ".model_cache").resolve()
    _probe_writable([("--results-dir", args.results_dir), ("--plots-dir", args.plots_dir),
                     ("--cache-dir", cache_dir)])
    cfg = RunConfig(
        results_dir=args.results_dir, cache_dir=cache_dir, data_root=data_root,
        download=args.download, device=device, jobs=jobs, threads=args.threads or 1,
        plugins=tuple(str(Path(p).resolve()) for p in args.plugin),
        git_commit=provenance.git_commit(REPO), backend=args.backend, scheduler=args.scheduler)
    start = time.perf_counter()
    if args.tune is not None:
        return _tune(args, grid, cfg)
    with grid_lock(args.results_dir / grid.name):
        ran, failed = execute.run_grid(grid, cfg)
        written = render.render(grid, results_dir=args.results_dir, plots_dir=args.plots_dir,
                                contexts=execute.experiment_contexts(grid, cfg))
    log.info("%d cells run (%d failed) in %.1fs; wrote %s", ran, failed,
             time.perf_counter() - start, ", ".join(str(p) for p in written[:3]) + ", ...")
    return 1 if failed else 0
