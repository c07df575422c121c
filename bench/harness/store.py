"""Append-only JSON-lines result store that survives being killed mid-write."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# What makes a line a record (or an error record) rather than stray JSON.
RECORD_KEYS = ("cell", "config_hash")


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(value.get(k), str) for k in RECORD_KEYS)


def repair_tail(path: Path) -> None:
    """Make the file end with a newline: a complete last record that only lacks it gets it; a
    half-written one, left by a killed writer, is dropped."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    try:
        complete = _is_record(json.loads(data[keep:]))
    except (json.JSONDecodeError, UnicodeDecodeError):
        complete = False
    with path.open("r+b") as f:
        if complete:
            log.warning("%s: the last record lacked its final newline; added it", path)
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            log.warning("%s: dropping a half-written last record (%d bytes)", path,
                        len(data) - keep)
            f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def record_line(record: dict[str, Any]) -> str:
    """A record as its line in a records file."""
    return json.dumps(record, sort_keys=True, allow_nan=True) + "\n"


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Write one record as one line with a single write, then flush and fsync it. A short write
    (a full disk) is undone, so the file never ends in a partial line."""
    line = record_line(record).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record in ``path`` (none if it does not exist); lines that are not
    records are skipped with a warning."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # a half-written tail; repair_tail removes it before the next append
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = None
            if _is_record(value):
                yield value
            elif line.strip():
                log.warning("%s:%d is not a record (needs %s); skipped", path, number,
                            " and ".join(RECORD_KEYS))


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` in one step: a temporary file beside it, then a rename; the temporary
    file is removed if anything fails (a full disk, say)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if isinstance(data, str):
            data = data.encode()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
