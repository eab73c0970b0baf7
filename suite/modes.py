"""Execution modes: `eager` (one framework call at a time) and `compiled` (the framework's graph compiler:
torch.compile with Inductor, tf.function(jit_compile=True) with XLA, jax.jit).

Rows written before modes existed carry no `mode`; they ran the way each framework ran then (JAX under
jax.jit, everything else eagerly), which is what `fill_mode` gives them, so old runs keep reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

MODES: tuple[str, ...] = ("eager", "compiled")
# how each framework ran before the mode column existed, and what a run without --modes still runs
_NATIVE = {"jax": "compiled"}


def native_mode(backend: str) -> str:
    """The mode a framework runs in when no --modes is given (JAX: jax.jit; the others: eager)."""
    return _NATIVE.get(backend, "eager")


def fill_mode(df: pd.DataFrame) -> pd.DataFrame:
    """`mode` for rows of stores written before it existed (missing column or empty values)."""
    if df.empty and "mode" in df:
        return df
    native = df["backend"].astype(str).map(native_mode) if "backend" in df else "eager"
    if "mode" not in df:
        df = df.assign(mode=native)
    else:
        df = df.assign(mode=df["mode"].where(df["mode"].notna() & (df["mode"].astype(str) != ""), native))
    return df
