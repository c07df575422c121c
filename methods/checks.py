"""Argument checks shared by methods and the training recipe (which must not depend on
methods.base, so that editing the method API does not change the originals' cache keys)."""
from __future__ import annotations


def require_positive(obj: object, *names: str) -> None:
    """``ValueError`` naming the first of ``names`` whose value on ``obj`` is not > 0."""
    for name in names:
        value = getattr(obj, name)
        if value is None or not value > 0:
            raise ValueError(f"{name}={value!r}: must be greater than 0")
