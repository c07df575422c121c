"""What every record says about how it was made: code commit, versions, device, host, time."""
from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, timeout=10,
                               check=True).stdout
        return out + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def finished_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance(*, device: str, commit: str) -> dict[str, Any]:
    import sklearn
    import torchvision

    return {"device": device, "git_commit": commit, "host": platform.node(),
            "finished_at": finished_now(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchvision": torchvision.__version__,
                         "scikit-learn": sklearn.__version__}}
