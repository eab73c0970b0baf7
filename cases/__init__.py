"""The shared catalog of extreme-logit cases: data, not code paths (see catalog.py)."""

from cases.case import Case
from cases.catalog import CASES

__all__ = ["CASES", "Case"]
