"""Content-addressed cache of trained models (original and retrained)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch


def content_key(spec: dict[str, Any]) -> str:
    """A stable hash of everything that determines a model (JSON with sorted keys)."""
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class ModelCache:
    """``<root>/<key>.pt`` holding a state dict and a JSON-able ``meta`` (spec, train time)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str, model: torch.nn.Module) -> dict[str, Any] | None:
        """Fill ``model`` from the cache and return its meta, or None when absent."""
        path = self.path(key)
        if not path.exists():
            return None
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        return json.loads(blob["meta"])

    def save(self, key: str, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        """Write atomically: a killed run never leaves a truncated model under a valid key."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path(key).with_suffix(f".tmp{os.getpid()}")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "meta": json.dumps(meta, default=str)}, tmp)
        os.replace(tmp, self.path(key))
