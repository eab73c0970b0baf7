"""What a backend module provides, and how backends are found without importing frameworks.

A backend is one file in backends/ defining NAME, REQUIRES (the import name of its framework) and
a `Backend` class deriving from BaseBackend; its framework is imported only in `Backend()`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

import backends
from suite.formulas import Primitives

Array = Any


@dataclass(frozen=True)
class BackendInfo:
    name: str
    requires: str
    module: str
    install_hint: str

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.requires) is not None


class BaseBackend:
    """Framework-specific part only: arrays in and out, the primitives, fused ops, autodiff."""

    name: str = ""
    version: str = ""
    xp: Primitives
    autodiff: bool = True
    # True: the runner hands every (impl, op, pass) of one (case, dtype) to `compile_group` as one
    # program whose outputs are bit-identical to `compile` of each alone; a failure falls back to rows.
    compile_matrix: bool = False
    default_mode: str = "eager"  # what a run without --modes runs (suite.modes.native_mode)
    fused_api: dict[str, str] = {}  # op -> the framework call behind `fused`, for the docs

    def __init__(self, threads: int | None = None) -> None:
        """Import the framework here, never at module level."""

    def devices(self) -> dict[str, str | None]:
        """device -> None when usable here, else the reason it is skipped."""
        return {"cpu": None, "gpu": f"{self.name} sees no GPU on this machine"}

    def device_name(self, device: str) -> str:
        return device

    def put(self, a: np.ndarray, dtype: str, device: str) -> Array:
        """float64 values (already exact in `dtype`) -> a framework array of `dtype` on `device`."""
        raise NotImplementedError

    def put_targets(self, a: np.ndarray, device: str) -> Array:
        raise NotImplementedError

    def random_normal(self, shape: tuple[int, ...], dtype: str, device: str, seed: int) -> Array:
        """Standard normal values of `dtype` made on `device` (the timing sweep's logits: no host array copied
        over). This default makes them on the host; a framework with its own generator overrides it."""
        return self.put(np.random.default_rng(seed).standard_normal(shape), dtype, device)

    def full(self, shape: tuple[int, ...], value: float, dtype: str, device: str) -> Array:
        """`value` everywhere, made on `device` (the timing sweep's probabilities and cotangents)."""
        return self.put(np.full(shape, value), dtype, device)

    def to_numpy(self, x: Array) -> np.ndarray:
        """A framework array -> float64 numpy (exact upcast), after the device is done."""
        raise NotImplementedError

    def is_array(self, x: Any) -> bool:
        """Whether x is this framework's array (a plug-in's result is checked with it)."""
        raise NotImplementedError

    def fused(self, op: str, x: Array, targets: Array, probs: Array) -> Array:
        raise NotImplementedError

    def vjp(self, fn: Callable[[Array], Array], z: Array, cotangent: Array) -> Array:
        raise NotImplementedError

    def modes(self, device: str) -> dict[str, str | None | Callable[[], str | None]]:
        """mode -> None when it can run on `device` here, else the reason it is skipped; a reason that is
        costly to find may be a function returning it, called only when that mode is selected."""
        return {"eager": None, "compiled": f"{self.name} has no graph compiler"}

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` under the framework's graph compiler (mode `compiled`): jax.jit, torch.compile,
        tf.function(jit_compile=True). Compilation happens at the first call per input shape and dtype."""
        raise NotImplementedError(f"{self.name} has no graph compiler")

    def compile_backward(self, forward: Callable[..., Any], backward: Callable[..., Any]) -> Callable[..., Any]:
        """The backward step in mode `compiled`, as users compile it: by default the whole function
        (forward and autodiff) under the compiler; a framework whose compiler differentiates the compiled
        forward itself (torch: AOTAutograd) overrides this."""
        return self.compile(backward)

    def compile_error(self, exc: BaseException) -> BaseException | None:
        """The compiler's own exception when `exc` is a compile failure (an `error` row with its first
        line), else None."""
        return None

    def compile_group(self, fns: list[Callable[..., Any]],
                      identity: str | None = None) -> Callable[[list[tuple]], list[Any]]:
        """Several functions as one compiled program, each output bit-identical to `compile(fn)`.
        `identity`, when given, names the functions exactly (the same text always means the same
        functions in the same code), so a backend may keep the compiled program between runs."""
        raise NotImplementedError

    def out_dtype(self, x: Array) -> str:
        """The dtype name of a result, to catch silent up- or down-casting."""
        return np.dtype(x.dtype).name

    def classify(self, exc: BaseException) -> str:
        """'unsupported' when the framework rejects the combination, else 'error'. A plug-in's exception
        (PluginError) is unsupported only when it says the dtype is refused (dtype_refused), whichever
        library raised it: a plug-in's TypeError or 'unsupported reduction' is its own error."""
        from suite.plugins import PluginError

        if isinstance(exc, PluginError):
            return "unsupported" if dtype_refused(exc) else "error"
        text = str(exc).lower()
        unsupported = ("not implemented for", "not supported", "no registered", "unsupported",
                       "could not find device for node", "is not in the list of allowed values")
        if isinstance(exc, (TypeError, NotImplementedError)) or any(u in text for u in unsupported):
            return "unsupported"
        return "unsupported" if dtype_refused(exc) else "error"

    def threads(self) -> dict[str, int]:
        return {}

    def sync(self, device: str) -> None:
        """Wait for queued device work (timing and honest error capture)."""

    def wait(self, out: Array) -> None:
        """Block until `out` is computed (inside every timed block). Eager CPU frameworks: no-op."""

    def copy_fn(self, src: Array) -> tuple[Callable[[], Any], str]:
        """A device-to-device copy of `src` (STREAM copy), for the bandwidth that timings are judged by."""
        raise NotImplementedError

    def hands_copies(self, mode: str) -> bool:
        """Whether an implementation call in `mode` could write into (or donate) what it is handed, so it
        gets copies of its own, checked afterwards. False only where the framework's arrays cannot be
        changed in place by the call at all (TensorFlow's tensors; JAX inside a compiled program)."""
        return True

    def copy(self, a: Array) -> Array:
        """A fresh array holding a's bits on a's device: what one implementation call gets, so a call that
        writes into its input (or donates it) harms only its own row."""
        raise NotImplementedError

    def same(self, a: Array, b: Array) -> bool:
        """Whether `a` (handed to a call) still holds the bits of `b` (the suite's copy): NaN payloads aside,
        signed zeros told apart. A framework with a cheaper exact test overrides this."""
        x, y = self.to_numpy(a), self.to_numpy(b)
        return (x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
                and np.array_equal(np.signbit(x), np.signbit(y)))

    def settings(self) -> dict[str, Any]:
        """The process-wide settings a call could change that change other rows (read around every call;
        a change is recorded on the row and undone). numpy's error state holds for every backend."""
        return {"numpy.seterr": np.geterr(), "denormals flushed": _denormals_flushed()}

    def restore(self, settings: dict[str, Any]) -> None:
        """Put back what `settings()` read."""
        np.seterr(**settings["numpy.seterr"])
        if settings["denormals flushed"] != _denormals_flushed():
            _flush_denormals(settings["denormals flushed"])

    def release(self, device: str) -> None:
        """Give cached device memory back between tasks (torch keeps freed GPU blocks for itself)."""

    def out_of_memory(self, exc: BaseException) -> bool:
        """Whether `exc` says the device ran out of memory (an `error` row saying so; the run goes on)."""
        text = str(exc).lower()
        return type(exc).__name__ in ("OutOfMemoryError", "ResourceExhaustedError") or any(
            s in text for s in ("out of memory", "resource_exhausted", "oom when allocating"))

    def free_memory(self, device: str) -> int:
        """Bytes available for inputs and temporaries on `device` (host RAM by default)."""
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# A library saying it has no code for the dtype it was handed: a refusal and, in the same message, a dtype
# (or the argument types / signature a dispatcher matched on). Both, so that 'unsupported reduction' or
# 'expected scalar type Float but found Double' (a bug mixing dtypes) stay errors.
_REFUSAL = re.compile(r"not supported|unsupported|not implemented|no matching signature|ambiguous argument types"
                      r"|not in the list of allowed values|no kernel|does not support|doesn't support|only supports?"
                      r"|no implementation|could not find device for node|must be a (?:numpy )?dtype")
_DTYPE = re.compile(r"\b(?:dtypes?|data types?|float(?:16|32|64)|half|bfloat16|bf16|fp16|fp64|double|dt_[a-z0-9]+"
                    r"|(?:argument|input) types?|signatures?)\b")


def dtype_refused(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, says that the dtype it got is not supported:
    torch ('not implemented for 'Half''), TensorFlow ('is not in the list of allowed values', DT_HALF),
    numpy ufuncs ('not supported for the input types'), Cython's fused-type dispatch as in scikit-learn
    ('Function call with ambiguous argument types', 'No matching signature found'), numba, scipy."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{type(exc).__name__}: {exc}".lower()
        if _REFUSAL.search(text) and _DTYPE.search(text):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_TINY, _ONE = np.float64(5e-324), np.float64(1.0)


def _denormals_flushed() -> bool:
    """Whether this thread's FPU flushes subnormals to zero (FTZ/DAZ: torch.set_flush_denormal, a library
    built with -ffast-math); it changes every framework's results in the thread, numpy's grading too."""
    with np.errstate(all="ignore"):
        return bool(_TINY * _ONE == 0.0)


def _flush_denormals(on: bool) -> None:
    """Set FTZ/DAZ back (through torch, the one framework here with a switch for it; without torch the
    change stays, and is still noted on every row it touches)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_flush_denormal(on)


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level stderr (framework start-up logs); Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _module_info(mod: ModuleType) -> BackendInfo:
    return BackendInfo(name=mod.NAME, requires=mod.REQUIRES, module=mod.__name__,
                       install_hint=getattr(mod, "INSTALL", f"pip install {mod.REQUIRES}"))


def discover() -> dict[str, BackendInfo]:
    """Every backend module in backends/, keyed by NAME (importing no framework)."""
    found = {}
    for m in sorted(pkgutil.iter_modules(backends.__path__), key=lambda m: m.name):
        if m.name.startswith("_"):
            continue
        info = _module_info(importlib.import_module(f"backends.{m.name}"))
        found[info.name] = info
    order = {"numpy": 0, "torch": 1, "tensorflow": 2, "jax": 3}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))


def load(info: BackendInfo, threads: int | None = None) -> BaseBackend:
    """Import the framework; `threads` fixes its intra-op thread count (None: its default)."""
    return importlib.import_module(info.module).Backend(threads=threads)
