"""What the cache keys depend on: an original model's key follows only the code that trains it."""
from __future__ import annotations

import sys

from bench.harness.versions import module_closure, training_modules


def test_the_training_version_ignores_the_method_api_and_registration():
    names = set(training_modules())
    assert {"methods.training", "bench.models"} <= names
    # Editing these (a new method field, a registry message) must not retrain every original.
    assert not names & {"methods.base", "methods.registry", "methods.search"}


def test_a_method_version_follows_the_method_api_and_its_helpers():
    names = set(module_closure(sys.modules["methods.pbu"], roots=("methods",)))
    assert {"methods.pbu", "methods.base", "methods.checks", "methods.fisher"} <= names
