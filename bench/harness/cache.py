"""Content-addressed cache of trained models (original, retrained)."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import torch

from bench.harness.store import write_atomic

log = logging.getLogger(__name__)


def content_key(spec: dict[str, Any]) -> str:
    """A stable hash of everything that determines a model (JSON with sorted keys)."""
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class ModelCache:
    """``<root>/<key>.pt`` holding a state dict and a JSON-able ``meta`` (spec, train time).

    Files are read with ``weights_only=True``: the cache never unpickles code.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str, model: torch.nn.Module) -> dict[str, Any] | None:
        """Fill ``model`` from the cache and return its meta; None when absent. An entry that
        cannot be read or does not fit ``model`` is moved aside (with a warning naming it), so
        the caller recomputes it."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(blob["state_dict"])
            return json.loads(blob["meta"])
        except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError,
                pickle.UnpicklingError) as exc:
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                path.replace(aside)
            except FileNotFoundError:  # another worker moved it aside first
                return None
            log.warning("model cache entry %s is unreadable (%s: %s); moved to %s and "
                        "recomputing", path, type(exc).__name__, str(exc)[:200], aside.name)
            return None

    def save(self, key: str, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        """Write atomically: a killed run or a full disk never leaves a partial file."""
        self.root.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        buffer = io.BytesIO()
        torch.save({"state_dict": state, "meta": json.dumps(meta, default=str)}, buffer)
        write_atomic(self.path(key), buffer.getvalue())
