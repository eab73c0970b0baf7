"""JAX: jax.nn.softmax / log_softmax, jax.scipy.special.logsumexp, CE on log_softmax; jax.vjp.

Sets jax_enable_x64 (else JAX silently computes "float64" in 32 bits) and, unless SUITE_JAX_CACHE is
set empty, JAX's persistent compilation cache in ~/.cache/softmax-suite/jax, and in its programs/ the
runner's compiled group programs (backends/_jax_programs.py: a warm run neither traces nor lowers them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from backends._jax_programs import CachedProgram
from suite.backend_api import BaseBackend
from suite.dtypes import np_dtype

NAME = "jax"
REQUIRES = "jax"
INSTALL = "pip install jax"


class JaxPrimitives:
    def __init__(self, jnp, lax) -> None:
        self.jnp, self.lax = jnp, lax
        self.exp, self.log, self.log1p = jnp.exp, jnp.log, jnp.log1p
        self.where, self.zeros_like, self.mean = jnp.where, jnp.zeros_like, jnp.mean

    def max(self, x):
        return self.jnp.max(x, axis=-1, keepdims=True)

    def sum(self, x):
        return self.jnp.sum(x, axis=-1, keepdims=True)

    def squeeze(self, x):
        return x[..., 0]

    def take(self, x, t):
        return self.jnp.take_along_axis(x, t[..., None], axis=-1)

    def stop_gradient(self, x):
        return self.lax.stop_gradient(x)

    def fold_chunks(self, step, carry, x, size):
        """suite.formulas.fold_chunks as lax.scan (one compiled loop body): the chunks of x padded with
        -inf to a whole number, which add exactly 0 to the running sum and never win the max."""
        jnp, n = self.jnp, x.shape[-1]
        if n <= size:
            return step(carry, x)
        count = -(-n // size)
        padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, count * size - n)], constant_values=-jnp.inf)
        chunks = jnp.moveaxis(padded.reshape(*x.shape[:-1], count, size), -2, 0)
        return self.lax.scan(lambda c, xc: (step(c, xc), None), carry, chunks)[0]

    def first_max_mask(self, x):
        return self.jnp.arange(x.shape[-1]) == self.jnp.argmax(x, axis=-1)[..., None]


def _xla_started() -> bool:
    """Whether JAX has made its XLA client, which reads XLA_FLAGS once. Importing jax does not make it,
    and TensorFlow imports jax: a worker that ran TensorFlow first must still get the same flags (the
    same programs, and the same kept ones) as one that runs JAX first."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


class Backend(BaseBackend):
    name = NAME
    # eager JAX compiles every primitive per shape (~0.2 s a VJP); jax.jit of each function alone
    # compiles 60 programs per shape and dtype: the runner compiles them as one walled-off group
    compile_matrix = True
    default_mode = "compiled"  # jax.jit is how JAX is run; eager JAX is not (below)
    fused_api = {
        "softmax": "jax.nn.softmax", "log_softmax": "jax.nn.log_softmax",
        "logsumexp": "jax.scipy.special.logsumexp",
        "cross_entropy": "-jax.nn.log_softmax[target]",
        "cross_entropy_mean": "mean(-jax.nn.log_softmax[target])",
        "soft_cross_entropy": "-sum(p * jax.nn.log_softmax)",
    }

    def __init__(self, threads: int | None = None) -> None:
        one_thread = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        flags = os.environ.get("XLA_FLAGS", "")
        if threads == 1 and not _xla_started() and one_thread not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {one_thread}".strip()
        import jax

        jax.config.update("jax_enable_x64", True)
        cache = os.environ.get("SUITE_JAX_CACHE", os.path.expanduser("~/.cache/softmax-suite/jax"))
        self._programs = Path(cache, "programs") if cache else None  # backends/_jax_programs.py
        if cache:  # XLA compilation dominates a run; reuse executables across runs (same bits)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        import jax.numpy as jnp
        import jax.scipy.special

        self.jax, self.jnp = jax, jnp
        self.version = jax.__version__
        self.xp = JaxPrimitives(jnp, jax.lax)

    def _device(self, device):
        return self.jax.devices("gpu" if device == "gpu" else "cpu")[0]

    def devices(self):
        try:
            gpu = None if self.jax.devices("gpu") else "JAX lists no GPU"
        except RuntimeError as exc:
            gpu = f"JAX lists no GPU ({str(exc).splitlines()[0]})"
        return {"cpu": None, "gpu": gpu}

    def device_name(self, device):
        return self._device(device).device_kind

    def put(self, a, dtype, device):
        return self.jax.device_put(np.asarray(a, dtype=np.float64).astype(np_dtype(dtype)),
                                   self._device(device))

    def put_targets(self, a, device):
        return self.jax.device_put(np.asarray(a, dtype=np.int64), self._device(device))

    def random_normal(self, shape, dtype, device, seed):
        jax = self.jax
        with jax.default_device(self._device(device)):
            return jax.random.normal(jax.random.key(seed), shape, dtype=np_dtype(dtype))

    def full(self, shape, value, dtype, device):
        with self.jax.default_device(self._device(device)):
            return self.jnp.full(shape, value, dtype=np_dtype(dtype))

    def hands_copies(self, mode):
        """Arrays are immutable; a call outside jit could still donate one (jax.jit(donate_argnums)), which
        deletes it. Inside the suite's compiled programs nothing can be donated or written."""
        return mode != "compiled"

    def copy(self, a):
        return self.jnp.array(a, copy=True)  # a buffer of its own: a plug-in may donate what it gets

    def same(self, a, b):
        return not a.is_deleted()  # immutable: donation (deletion) is the only change a call can make

    _SETTINGS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_dtype_promotion",
                 "jax_numpy_rank_promotion", "jax_debug_nans", "jax_disable_jit")

    def settings(self):
        return {**super().settings(), **{f"jax.{k}": getattr(self.jax.config, k) for k in self._SETTINGS}}

    def restore(self, settings):
        super().restore(settings)
        for k in self._SETTINGS:
            if getattr(self.jax.config, k) != settings[f"jax.{k}"]:
                value = settings[f"jax.{k}"]
                self.jax.config.update(k, getattr(value, "value", value))  # an enum's string

    def is_array(self, x):
        return isinstance(x, self.jax.Array)  # tracers too: plug-ins run under jax.jit

    def to_numpy(self, x):
        return np.asarray(x).astype(np.float64)

    def fused(self, op, x, targets, probs):
        jax, jnp = self.jax, self.jnp
        if op == "softmax":
            return jax.nn.softmax(x, axis=-1)
        if op == "logsumexp":
            return jax.scipy.special.logsumexp(x, axis=-1)
        lsm = jax.nn.log_softmax(x, axis=-1)
        if op == "log_softmax":
            return lsm
        if op == "soft_cross_entropy":
            return -jnp.sum(probs * lsm, axis=-1)
        ce = -jnp.take_along_axis(lsm, targets[..., None], axis=-1)[..., 0]
        return jnp.mean(ce) if op == "cross_entropy_mean" else ce

    def modes(self, device):
        return {"compiled": None,
                "eager": "not run: eager JAX dispatches every primitive as its own compiled program per shape "
                         "(~0.2 s a VJP), which costs more than jax.jit and is not how JAX is used"}

    def compile(self, fn):
        return self.jax.jit(fn)

    def compile_group(self, fns, identity=None):
        """One jax.jit over several functions, each walled off by optimization barriers (its inputs
        tagged with its own index so that no two walls are alike for CSE): XLA then optimizes each
        function as it would alone, so outputs are bit-identical to jax.jit of that function alone
        (suite/tests/test_isolation.py checks it), at the compile cost of one program. With an
        `identity` and the cache directory on, the compiled program is kept between runs
        (backends/_jax_programs.py)."""
        barrier = self.jax.lax.optimization_barrier
        jnp = self.jnp

        def group(args):
            outs = []
            for k, (fn, a) in enumerate(zip(fns, args, strict=True)):
                *walled, _ = barrier((*a, jnp.int32(k)))
                outs.append(barrier(fn(*walled)))
            return outs

        jitted = self.jax.jit(group)
        if identity is None or self._programs is None:
            return jitted
        return CachedProgram(self.jax, jitted, identity, len(fns), self._programs)

    def vjp(self, fn, z, cotangent):
        out, pullback = self.jax.vjp(fn, z)
        return pullback(cotangent.astype(out.dtype))[0]

    def threads(self):
        return {"xla_flags": os.environ.get("XLA_FLAGS", ""),
                "compilation_cache": self.jax.config.jax_compilation_cache_dir or ""}

    def sync(self, device):
        pass  # to_numpy blocks until the value is ready

    def wait(self, out):
        self.jax.block_until_ready(out)

    def copy_fn(self, src):
        neg = self.jax.jit(lambda x: -x)  # a read + write pass; XLA would elide a plain copy
        return (lambda: neg(src)), "jax.jit(negative)"

    def free_memory(self, device):
        if device != "gpu":
            return super().free_memory(device)
        stats = self._device(device).memory_stats() or {}
        return int(stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0))
