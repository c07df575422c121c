"""Append-only JSON-lines result store that survives being killed mid-write."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def repair_tail(path: Path) -> None:
    """Drop a final line left without its newline by a killed writer."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping a half-written last record (%d bytes)", path, len(data) - keep)
        with path.open("r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Write one record as one line with a single write, then flush and fsync it."""
    line = (json.dumps(record, sort_keys=True, allow_nan=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record in ``path`` (none if it does not exist)."""
    if not path.exists():
        return
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # a half-written tail; repair_tail removes it before the next append
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d is not a JSON record; skipped", path, number)
