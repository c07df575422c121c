"""Unlearning methods: the plugin contract, the registry and one file per built-in method.

This package imports nothing from ``bench``: a plugin needs only ``methods``.
"""
from methods.bad_teaching import BadTeaching
from methods.base import DATA_NEEDS, CellShape, UnlearningMethod, UnlearningTask
from methods.fast_effective import FastEffective
from methods.finetune import FineTune
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
from methods.boundary_shrink import BoundaryShrink
from methods.cf_k import CFk
from methods.eu_k import EUk
from methods.fisher_forgetting import FisherForgetting
from methods.gradient_ascent import GradientAscent
from methods.influence_unlearning import InfluenceUnlearning
from methods.l1_sparse import L1Sparse
from methods.neggrad_plus import NegGradPlus
from methods.random_labels import RandomLabels
from methods.salun import SalUn
from methods.scrub import SCRUB
from methods.ssd import SSD

__all__ = [
    "BoundaryShrink",
    "CFk",
    "EUk",
    "FisherForgetting",
    "GradientAscent",
    "InfluenceUnlearning",
    "L1Sparse",
    "NegGradPlus",
    "RandomLabels",
    "SalUn",
    "SCRUB",
    "SSD",
    "DATA_NEEDS",
    "ENTRY_POINT_GROUP",
    "METHODS",
    "PBU",
    "BadTeaching",
    "CellShape",
    "FastEffective",
    "FineTune",
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
