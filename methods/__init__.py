"""Unlearning methods: the registry, the plugin contract and the paper's five methods."""
from methods.base import DATA_NEEDS, CellShape, UnlearningMethod, UnlearningTask
from methods.registry import (
    ENTRY_POINT_GROUP,
    PluginError,
    get_method,
    list_methods,
    load_plugins,
    register_method,
)

# Built-in methods register themselves on import.
from methods import bad_teaching, fast_effective, finetune, pbu, retrain  # noqa: E402,F401

__all__ = [
    "CellShape",
    "DATA_NEEDS",
    "ENTRY_POINT_GROUP",
    "PluginError",
    "UnlearningMethod",
    "UnlearningTask",
    "get_method",
    "list_methods",
    "load_plugins",
    "register_method",
]
