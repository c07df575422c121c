"""How a grid is run: where results go, which device, how many workers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    results_dir: Path
    cache_dir: Path
    data_root: str | None = None
    download: bool = False
    device: str = "cpu"
    jobs: int = 1
    threads: int = 1               # torch threads per cell; part of every key
    plugins: tuple[str, ...] = ()  # re-imported in worker processes
    git_commit: str = "unknown"
    backend: str = "loky"          # "loky" (worker processes here) or "dask"
    scheduler: str | None = None   # the Dask scheduler's address when backend is "dask"
