"""Unlearning methods: the plugin contract, the registry and one file per built-in method.

This package imports nothing from ``bench``: a plugin needs only ``methods``.
"""
from methods.bad_teaching import BadTeaching
from methods.base import DATA_NEEDS, CellShape, UnlearningMethod, UnlearningTask
from methods.boundary_shrink import BoundaryShrink
from methods.cf_k import CFk
from methods.eu_k import EUk
from methods.fast_effective import FastEffective
from methods.finetune import FineTune
from methods.fisher_forgetting import FisherForgetting
from methods.gradient_ascent import GradientAscent
from methods.influence_unlearning import InfluenceUnlearning
from methods.l1_sparse import L1Sparse
from methods.logit_mask import LogitMask
from methods.lookup import PluginError, Registry, RegistryError
from methods.neggrad_plus import NegGradPlus
from methods.pbu import PBU
from methods.pbu_official import PBUOfficial
from methods.random_labels import RandomLabels
from methods.registry import (
    ENTRY_POINT_GROUP,
    METHODS,
    create_method,
    get_method,
    list_methods,
    load_plugins,
    register_method,
)
from methods.retrain import Retrain
from methods.salun import SalUn
from methods.scrub import SCRUB
from methods.ssd import SSD

__all__ = [
    "DATA_NEEDS",
    "ENTRY_POINT_GROUP",
    "METHODS",
    "PBU",
    "SCRUB",
    "SSD",
    "BadTeaching",
    "BoundaryShrink",
    "CFk",
    "CellShape",
    "EUk",
    "FastEffective",
    "FineTune",
    "FisherForgetting",
    "GradientAscent",
    "InfluenceUnlearning",
    "L1Sparse",
    "LogitMask",
    "NegGradPlus",
    "PBUOfficial",
    "PluginError",
    "RandomLabels",
    "Registry",
    "RegistryError",
    "Retrain",
    "SalUn",
    "UnlearningMethod",
    "UnlearningTask",
    "create_method",
    "get_method",
    "list_methods",
    "load_plugins",
    "register_method",
]
