"""Helpers every benchmark shares."""
from __future__ import annotations

import os


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())
