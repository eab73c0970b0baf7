"""Rows do not depend on the selection: what the full matrix computes for a row is bit for bit what
a user gets from that one function run the framework's usual way (jax.jit of just that function;
torch and TensorFlow run eagerly, one function at a time, in the matrix too)."""

from __future__ import annotations

import numpy as np
import pytest

from cases import CASES
from suite.backend_api import discover
from suite.ops import IMPLS, OPS, PASSES
from suite.reference import compute_reference
from suite.runner import _put_inputs, compiled_step, compute_group, loaded, step, step_args

COMPILING = [n for n, i in discover().items() if i.installed and n == "jax"]
KEYS = [(op, impl, p) for op in OPS for impl in IMPLS for p in PASSES]
SMALL = [c for c in CASES if c.logits.size <= 2000]


def _sample(seed: int) -> list[tuple]:
    """A random sample of (case, dtype, keys): cases with T != 1 included, so `temperature`'s own
    program (T a constant, as in user code) is checked too."""
    rng = np.random.default_rng(seed)
    temp = [c for c in SMALL if c.temperature != 1.0]
    picks = list(rng.choice(len(SMALL), 3, replace=False))
    cases = [SMALL[i] for i in picks] + [temp[int(rng.integers(len(temp)))]]
    dtypes = ["float16", "bfloat16", "float32", "float64"]
    return [(c, dtypes[int(rng.integers(4))], [KEYS[int(k)] for k in rng.choice(len(KEYS), 12, replace=False)])
            for c in cases]


def _bits(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(np.asarray(a))
    return a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()


@pytest.mark.skipif(not COMPILING, reason="jax is not installed (the only backend that compiles the matrix)")
def test_matrix_rows_are_bit_identical_to_isolated_runs():
    backend = loaded("jax")
    checked = 0
    for case, dtype, keys in _sample(seed=20261124):
        ref = compute_reference(case, dtype)
        inp = _put_inputs(backend, "cpu", dtype, ref, case.targets)
        together = compute_group(backend, KEYS, inp)  # what the runner computes for the whole matrix
        for key in keys:
            op, impl, pass_ = key
            T = case.temperature if impl == "temperature" else 1.0
            alone = backend.jax.jit(step(backend, impl, op, pass_, T))(*step_args(impl, op, inp))
            assert _bits(together[key]) == _bits(alone), (case.name, dtype, key)
            # and the runner's own single-function path is that same jit
            assert _bits(compiled_step(backend, key, case.temperature)(*step_args(impl, op, inp))) == _bits(alone)
            checked += 1
    assert checked == 48


def test_jax_group_keeps_functions_apart():
    """A case the old single program got wrong: float64 log_softmax of the fused impl with T != 1 run
    alone and in the full matrix give the same bits (the suite divides by T once, for everyone)."""
    if not COMPILING:
        pytest.skip("jax not installed")
    backend = loaded("jax")
    case = next(c for c in CASES if c.name == "seed002_T0.01")
    ref = compute_reference(case, "float64")
    inp = _put_inputs(backend, "cpu", "float64", ref, case.targets)
    key = ("log_softmax", "fused", "forward")
    narrow = compute_group(backend, [key], inp)[key]
    full = compute_group(backend, KEYS, inp)[key]
    alone = backend.jax.jit(step(backend, "fused", "log_softmax", "forward"))(*step_args("fused", "log_softmax", inp))
    assert _bits(narrow) == _bits(full) == _bits(alone)
    assert np.isfinite(np.asarray(alone)).all()


@pytest.mark.parametrize("backend_name", [n for n, i in discover().items() if i.installed])
def test_every_backend_receives_the_same_bits(backend_name):
    """x = z / T, rounded once by the suite, reaches every framework unchanged, in every dtype."""
    backend = loaded(backend_name)
    case = next(c for c in CASES if c.name == "normal_scale10_T0.01")
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        ref = compute_reference(case, dtype)
        inp = _put_inputs(backend, "cpu", dtype, ref, case.targets)
        assert backend.out_dtype(inp.x) == dtype
        assert _bits(backend.to_numpy(inp.x)) == _bits(ref.x), dtype
        assert _bits(backend.to_numpy(inp.z)) == _bits(ref.z), dtype
