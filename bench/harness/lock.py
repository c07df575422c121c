"""One run per results directory and grid: a second run waits, then finds the work done."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


@contextlib.contextmanager
def grid_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (an OS file lock: released even when the holder is killed)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("another run of this grid holds %s; waiting for it to finish",
                    folder / ".lock")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
