"""One rule for everything a test needs from the machine (an engine, a Debian package, a test
library): on a laptop without it the test skips; in CI (``CI=true``) it fails, so a green CI
run means every test ran."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str, ci_hint: str = "") -> NoReturn:
    """Skip (fail in CI, with ``ci_hint`` appended) because ``reason``."""
    if IN_CI:
        pytest.fail(reason + ci_hint)
    pytest.skip(reason)


def engine_unavailable(msg: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"engine unavailable in CI: {msg}")
    pytest.skip(f"engine unavailable (set CI=true to fail instead): {msg}")


def need_module(name: str) -> ModuleType:
    """``import name``; a missing test library skips locally and fails (ImportError) in CI."""
    return importlib.import_module(name) if IN_CI else pytest.importorskip(name)
