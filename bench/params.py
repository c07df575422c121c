"""Typed hyperparameter values from loosely typed grid files."""
from __future__ import annotations

from typing import Any


def coerce_number(name: str, value: Any, default: Any) -> Any:
    """Make ``value`` a number when ``default`` is one (YAML reads ``3e-3`` as a string)."""
    if isinstance(default, bool) or not isinstance(default, (int, float)) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a number") from None
    if isinstance(default, int):
        if not number.is_integer():
            raise ValueError(f"{name}={value!r}: expected an integer")
        return int(number)
    return number
