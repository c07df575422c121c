"""Where cells run: in this process, in loky worker processes, or on a Dask cluster."""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from bench.errors import BenchInputError
from bench.harness.config import RunConfig


def _worker_death_types() -> tuple[type[BaseException], ...]:
    """What a dead worker looks like to the parent: loky's broken pool, or Dask's KilledWorker
    after the scheduler gave up on a task that kept killing its workers."""
    from concurrent.futures.process import BrokenProcessPool

    types: list[type[BaseException]] = [BrokenProcessPool]
    try:
        from distributed.scheduler import KilledWorker
        types.append(KilledWorker)
    except ImportError:
        pass
    return tuple(types)


WORKER_DEATHS = _worker_death_types()


def run_isolated(fn: Callable[..., Any], cell: Any, cfg: RunConfig) -> Any:
    """``fn(cell, cfg)`` alone in a fresh worker process: a death there raises one of
    ``WORKER_DEATHS`` instead of taking the parent down."""
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=1, reuse=False)
    return executor.submit(fn, cell, cfg).result()


def _worker_configs(cfg: RunConfig) -> list[RunConfig]:
    """On a multi-GPU box, "cuda" is spread over the devices: cell i goes to cuda:i mod n."""
    count = torch.cuda.device_count() if cfg.device == "cuda" else 0
    if count < 2 or cfg.jobs < 2:
        return [cfg]
    return [dataclasses.replace(cfg, device=f"cuda:{i}") for i in range(count)]


@contextlib.contextmanager
def dask_client(address: str):
    """A ``distributed.Client`` connected to ``address``, closed on exit; a missing package or an
    unreachable scheduler is bad input (the connect timeout is dask's
    ``distributed.comm.timeouts.connect``)."""
    try:
        from distributed import Client
    except ImportError:
        raise BenchInputError("--backend dask needs dask.distributed, which is not installed: "
                              "pip install -e '.[dask]'") from None
    try:
        client = Client(address, set_as_default=False)
    except (OSError, ValueError) as exc:  # refused, timed out, or not an address at all
        raise BenchInputError(f"--scheduler {address!r}: cannot connect to a Dask scheduler "
                              f"({exc})") from None
    with client:
        yield client


@contextlib.contextmanager
def _joblib_backend(cfg: RunConfig):
    """Loky's worker processes on this machine, or the Dask cluster's workers."""
    if cfg.backend != "dask":
        yield
        return
    from joblib import parallel_config

    with dask_client(cfg.scheduler) as client, parallel_config(backend="dask", client=client):
        yield


def spread(fn: Callable[..., Any], argument_lists: list[tuple], cfg: RunConfig) -> Iterator[Any]:
    """``fn(*args, cfg)`` for each argument list: in joblib workers when ``cfg.jobs > 1``,
    results in order of completion; in this process otherwise."""
    from joblib import Parallel, delayed

    if cfg.jobs < 2 or len(argument_lists) < 2:
        yield from (fn(*args, cfg) for args in argument_lists)
        return
    # This machine's GPU count says nothing about a cluster's workers: each uses its own "cuda".
    configs = [cfg] if cfg.backend == "dask" else _worker_configs(cfg)
    # A generator, so that the Dask client stays connected until the last result is taken.
    with _joblib_backend(cfg):
        yield from Parallel(n_jobs=min(cfg.jobs, len(argument_lists)),
                            return_as="generator_unordered")(
            delayed(fn)(*args, configs[i % len(configs)]) for i, args in enumerate(argument_lists))
