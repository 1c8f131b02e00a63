"""What a test does when a component it needs is missing: under ``CI=true`` it fails, elsewhere it skips.

CI must never pass by skipping (a missing rig there is a broken build), while a contributor without
libvirt or Chromium on a laptop should still be able to run the rest of the suite.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

CI = os.environ.get("CI") == "true"


def missing(reason: str) -> NoReturn:
    if CI:
        pytest.fail(f"{reason} (CI=true, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def need_module(name: str, hint: str) -> ModuleType:
    """Import ``name`` or fail/skip with ``hint`` saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"{name} is not importable ({e}): {hint}")
