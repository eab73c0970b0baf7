"""Shared fixtures (the catalog by name, the project root), the order of the test files and the number of
pytest-xdist workers."""

from __future__ import annotations

import os
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


def pytest_sessionstart(session):
    """Each test process imports TensorFlow (directly, through keras, through its backend) and torch's
    compiler (which imports Triton) in one process, in whatever order the files come: Triton's LLVM
    goes first, as the TensorFlow backend does it (backends/tensorflow_backend.py: triton_first)."""
    from backends.tensorflow_backend import triton_first

    triton_first()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Plain `pytest` (and CI) runs each benchmark once as a smoke test; timing needs --benchmark-only
    (or --benchmark-enable), so no timed test slows the test run or depends on the machine's speed."""
    opt = config.option
    if hasattr(opt, "benchmark_disable") and not (opt.benchmark_only or getattr(opt, "benchmark_enable", False)):
        opt.benchmark_disable = True



# Longest first (longest-processing-time scheduling; pyproject runs pytest-xdist with `--dist loadfile
# --no-loadscope-reorder`, which hands out whole files in this order): the conformance matrix (one computed
# matrix shared by its 855 tests, in worker processes of its own) starts at once while the other workers
# take the files that start processes or load frameworks; the quick unit tests fill the gaps at the end.
SLOW_FILES = ("test_conformance.py", "test_ab.py", "test_reliability.py", "test_plugins.py", "test_benchmarks.py",
              "test_report.py", "test_store.py", "test_isolation.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: in-file order kept


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU, at least 2 (the conformance worker mostly waits for the matrix's own
    processes, so a second one uses the cores meanwhile) and at most 4 (each loads the frameworks). None
    (in this process) when benchmarks are timed: pytest-benchmark turns itself off under xdist."""
    if getattr(config.option, "benchmark_only", False) or getattr(config.option, "benchmark_enable", False):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(2, min(4, cpus))
