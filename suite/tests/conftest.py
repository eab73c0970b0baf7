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


def pytest_addoption(parser):
    parser.addoption("--bench-all", action="store_true", default=False,
                     help="test_benchmarks.py: the whole timing matrix instead of a representative subset")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Plain `pytest` (and CI) runs each benchmark once as a smoke test; timing needs --benchmark-only
    (or --benchmark-enable), so no timed test slows the test run or depends on the machine's speed."""
    opt = config.option
    if hasattr(opt, "benchmark_disable") and not (opt.benchmark_only or getattr(opt, "benchmark_enable", False)):
        opt.benchmark_disable = True


def pytest_collection_modifyitems(session, config, items):
    """The conformance matrix first: it is the longest unit of work (one computed matrix shared by all of
    its tests), so under pytest-xdist (`--dist loadfile`) it starts at once while the other workers take
    the other files."""
    items.sort(key=lambda item: item.path.name != "test_conformance.py")  # stable: the rest keep their order
