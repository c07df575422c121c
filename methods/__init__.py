"""Unlearning methods: the plugin contract, the registry and one file per built-in method.

This package imports nothing from ``bench``: a plugin needs only ``methods``.
"""
from methods.bad_teaching import BadTeaching
from methods.base import DATA_NEEDS, CellShape, UnlearningMethod, UnlearningTask
from methods.fast_effective import FastEffective
from methods.finetune import FineTune
from methods.logit_mask import LogitMask
from methods.pbu import PBU
from methods.pbu_official import PBUOfficial
from methods.registry import (
    ENTRY_POINT_GROUP,
    METHODS,
    PluginError,
    Registry,
    RegistryError,
    create_method,
    get_method,
    list_methods,
    load_plugins,
    register_method,
)
from methods.retrain import Retrain

__all__ = [
    "DATA_NEEDS",
    "ENTRY_POINT_GROUP",
    "METHODS",
    "PBU",
    "BadTeaching",
    "CellShape",
    "FastEffective",
    "FineTune",
    "LogitMask",
    "PBUOfficial",
    "PluginError",
    "Registry",
    "RegistryError",
    "Retrain",
    "UnlearningMethod",
    "UnlearningTask",
    "create_method",
    "get_method",
    "list_methods",
    "load_plugins",
    "register_method",
]
