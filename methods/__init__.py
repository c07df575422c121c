"""Unlearning methods: the registry, the plugin contract and the paper's five methods."""
# Built-in methods register themselves on import.
from methods import bad_teaching, fast_effective, finetune, pbu, retrain  # noqa: F401
from methods.base import DATA_NEEDS, CellShape, UnlearningMethod, UnlearningTask
from methods.registry import (
    ENTRY_POINT_GROUP,
    PluginError,
    get_method,
    list_methods,
    load_plugins,
    register_method,
)

__all__ = [
    "DATA_NEEDS",
    "ENTRY_POINT_GROUP",
    "CellShape",
    "PluginError",
    "UnlearningMethod",
    "UnlearningTask",
    "get_method",
    "list_methods",
    "load_plugins",
    "register_method",
]
