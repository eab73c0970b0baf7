"""Shared fixtures: the catalog by name and the project root (for subprocess runs of the CLI)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # runnable without pyproject's `pythonpath`
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def catalog() -> dict:
    from cases import CASES

    return {c.name: c for c in CASES}
