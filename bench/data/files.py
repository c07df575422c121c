"""What every file-format loader shares: finding the dataset's folder (with an optional
torchvision download into ``--data-root``) and normalising uint8 pixels.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.data.registry import (
    ImageData,  # noqa
    )
from bench.errors import BenchInputError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- locating files

def root_path(root: str | Path | None) -> Path | None:
    return None if root is None else Path(root).expanduser()


def first_complete(dirs: Sequence[Path], has_all: Callable[[Path], bool]) -> Path | None:
    """First directory holding the whole dataset: a half-copied folder must not shadow a good one."""
    return next((d for d in dirs if has_all(d)), None)


def not_found(name: str, *, wanted: str, tried: Sequence[Path]) -> BenchInputError:
    """One-line error listing every place looked at, so the user sees where to put the files."""
    where = ", ".join(str(d) for d in tried) if tried else "nowhere (no --data-root given)"
    return BenchInputError(
        f"dataset {name!r} not found: looked for {wanted} in {where}; "
        f"pass --data-root DIR holding it, or --download with --data-root DIR to fetch it"
    )


def locate(name: str, *, dirs: Callable[[], list[Path]], has_all: Callable[[Path], bool],
            wanted: str, root: Path | None, download: bool,
            fetch: Callable[[Path], None]) -> Path:
    """Find the dataset folder, fetching into ``root`` first when allowed and needed."""
    found = first_complete(dirs(), has_all)
    if found is None and download:
        if root is None:
            raise BenchInputError(f"--download of {name!r} needs --data-root DIR to download into")
        log.info("downloading %s into %s", name, root)
        try:
            fetch(root)
        except (OSError, RuntimeError) as exc:
            raise BenchInputError(f"downloading {name!r} into {root} failed: {exc}") from exc
        found = first_complete(dirs(), has_all)
    if found is None:
        raise not_found(name, wanted=wanted, tried=dirs())
    log.info("loading %s from %s", name, found)
    return found



def byte_stats(pixels: np.ndarray) -> tuple[float, float]:
    """Exact mean/std of uint8 pixels scaled to [0, 1], from a histogram (no float copy)."""
    counts = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = float(counts @ values / counts.sum())
    std = float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum()))
    return mean, max(std, 1e-8)


def normalise(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(pixels / 255 - mean) / std`` as float32, built in place to keep one copy in memory."""
    x = pixels.astype(np.float32)
    x -= (mean * 255.0).astype(np.float32)
    x /= (std * 255.0).astype(np.float32)
    return x



def torchvision_fetch(dataset_class: str) -> Callable[[Path], None]:
    """Downloader using torchvision's dataset class of that name (imported only when used)."""

    def fetch(root: Path) -> None:
        import torchvision.datasets

        getattr(torchvision.datasets, dataset_class)(str(root), download=True)

    return fetch


