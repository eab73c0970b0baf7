"""numpy (+ scipy.special as `fused`, ml_dtypes for bfloat16); gradients by seed 003's formulas."""

from __future__ import annotations

import numpy as np

from suite.backend_api import BaseBackend
from suite.dtypes import np_dtype
from suite.formulas import fold_chunks

NAME = "numpy"
REQUIRES = "numpy"
INSTALL = "pip install numpy scipy ml_dtypes"


class NumpyPrimitives:
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    where = staticmethod(np.where)
    zeros_like = staticmethod(np.zeros_like)
    fold_chunks = staticmethod(fold_chunks)

    @staticmethod
    def max(x):
        return np.max(x, axis=-1, keepdims=True)

    @staticmethod
    def sum(x):
        return np.sum(x, axis=-1, keepdims=True)

    @staticmethod
    def squeeze(x):
        return np.asarray(x)[..., 0]

    @staticmethod
    def take(x, t):
        return np.take_along_axis(x, t[..., None], axis=-1)

    @staticmethod
    def first_max_mask(x):
        return np.arange(x.shape[-1]) == np.argmax(x, axis=-1)[..., None]

    @staticmethod
    def mean(x):
        return np.mean(x)

    @staticmethod
    def stop_gradient(x):
        return x  # numpy's gradients are analytic: nothing to stop


class Backend(BaseBackend):
    name = NAME
    autodiff = False  # backward uses suite.formulas.analytic_vjp with each impl's softmax
    fused_api = {
        "softmax": "scipy.special.softmax", "log_softmax": "scipy.special.log_softmax",
        "logsumexp": "scipy.special.logsumexp",
        "cross_entropy": "-scipy.special.log_softmax[target]",
        "cross_entropy_mean": "mean(-scipy.special.log_softmax[target])",
        "soft_cross_entropy": "-sum(p * scipy.special.log_softmax)",
    }

    def __init__(self, threads: int | None = None) -> None:  # numpy's ufuncs are single-threaded
        import scipy
        import scipy.special

        self._sp = scipy.special
        self.version = np.__version__
        self.scipy_version = scipy.__version__
        self.xp = NumpyPrimitives()

    def put(self, a, dtype, device):
        return np.asarray(a, dtype=np.float64).astype(np_dtype(dtype))

    def put_targets(self, a, device):
        return np.asarray(a, dtype=np.int64)

    def random_normal(self, shape, dtype, device, seed):
        """float32 straight from the generator (float64 only when asked for): half the time of float64 then a cast."""
        wide = np.float64 if dtype == "float64" else np.float32
        return np.random.default_rng(seed).standard_normal(shape, dtype=wide).astype(np_dtype(dtype), copy=False)

    def full(self, shape, value, dtype, device):
        return np.full(shape, value, dtype=np_dtype(dtype))

    def copy_fn(self, src):
        dst = np.empty_like(src)
        return (lambda: np.copyto(dst, src)), "numpy.copyto"

    def copy(self, a):
        return np.array(a, copy=True)

    def same(self, a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        bits = f"u{a.dtype.itemsize}"
        return bool(np.array_equal(a.view(bits), b.view(bits)))

    def is_array(self, x):
        return isinstance(x, (np.ndarray, np.generic))

    def to_numpy(self, x):
        return np.asarray(x).astype(np.float64)

    def fused(self, op, x, targets, probs):
        sp = self._sp
        if op == "softmax":
            return sp.softmax(x, axis=-1)
        if op == "logsumexp":
            return sp.logsumexp(x, axis=-1)
        lsm = sp.log_softmax(x, axis=-1)
        if op == "log_softmax":
            return lsm
        if op == "soft_cross_entropy":
            return -np.sum(probs * lsm, axis=-1)
        ce = -np.take_along_axis(lsm, targets[..., None], axis=-1)[..., 0]
        return np.mean(ce) if op == "cross_entropy_mean" else ce
