"""The accuracy matrix: case -> backend arrays -> implementation -> outputs -> metrics -> row.

References are computed once per (case, dtype) and shared by every backend, device, op and impl.
One failing implementation becomes an `error` (or `unsupported`) row; the run goes on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cases import Case
from suite import formulas, plugins
from suite.backend_api import BaseBackend
from suite.dtypes import round_to
from suite.formulas import FORMULAS, analytic_vjp, apply
from suite.metrics import score, tv_distance
from suite.reference import Reference, compute_reference

COLUMNS = [
    "backend", "backend_version", "device", "mode", "dtype", "op", "impl", "case", "pass",
    "max_abs_err", "max_rel_err", "max_ulp_err", "ulp_err_scaled", "ulp_bound",
    "n_nonfinite", "n_wrong_special", "n_flushed", "row_sum_dev", "tv_to_t1", "out_dtype",
    "n_elements", "n_classes", "temperature", "tags", "exact_finite", "compile_s", "verdict", "message",
]


@dataclass
class Selection:
    """The matrix a user selects (shared by the accuracy run and the timing sweep)."""

    backends: list[str]
    devices: list[str]
    dtypes: list[str]
    ops: list[str]
    impls: list[str]
    passes: list[str]


@dataclass
class Plan(Selection):
    """What to run; picklable, so worker processes can each take a slice (one backend and dtype)."""

    cases: list[Case]
    threads: int | None = None  # intra-op threads per framework (None: the framework's default)
    cache_dir: str | None = None  # where workers share references (one task per framework and dtype)
    plugins: list[plugins.Source] = field(default_factory=list)  # loaded again in worker processes
    modes: list[str] | None = None  # suite.modes.MODES; None: each framework's own (JAX compiled, others eager)


SHARE_MIN_ELEMENTS = 65_536  # smaller cases compute in ~3 ms, less than writing and mapping ~85 files
# small cases' references, kept per process for the run (plan.cache_dir names it) with the scoring views they
# cache, so a worker's next task of the same dtype (another framework) reuses both
_SMALL_REFERENCES: dict[tuple[str, int, str], Reference] = {}


def reference(plan: Plan, case: Case, dtype: str) -> Reference:
    """compute_reference, shared by the tasks of other frameworks: wide cases through plan.cache_dir (the
    first task to need a (case, dtype) computes and stores it, atomic rename, the others map it), small
    ones kept in the process that computed them."""
    if plan.cache_dir is None:
        return compute_reference(case, dtype)
    index = next(i for i, c in enumerate(plan.cases) if c is case)
    if case.logits.size <= SHARE_MIN_ELEMENTS:  # kept in this process for its other frameworks' tasks
        key = (plan.cache_dir, index, dtype)
        if key not in _SMALL_REFERENCES:
            if next(iter(_SMALL_REFERENCES), key)[0] != plan.cache_dir:
                _SMALL_REFERENCES.clear()  # another run's
            _SMALL_REFERENCES[key] = compute_reference(case, dtype)
        return _SMALL_REFERENCES[key]
    path = Path(plan.cache_dir) / f"{index}-{dtype}"
    if path.exists():
        return Reference.load(path)
    ref = compute_reference(case, dtype)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    ref.save(tmp)
    try:
        os.rename(tmp, path)  # whole or not at all; a directory another task renamed first is as good
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return ref.shared(path) if path.exists() else ref  # its Expecteds go there too, for the other tasks


@dataclass
class RunInfo:
    """What the backends said about themselves, for env.json and the summary."""

    frameworks: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    threads: dict[str, dict] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per backend (and "reference"), summed
    cpu: dict[str, float] = field(default_factory=dict)  # the workers' process CPU time, the same keys
    notes: list[str] = field(default_factory=list)  # settings a plug-in's import changed (put back)
    failures: list[str] = field(default_factory=list)  # workers that died or were stopped (suite/workers.py)
    gpu: dict = field(default_factory=dict)  # how the workers share a GPU (suite/workers.py)
    isolation: dict[str, float] = field(default_factory=dict)  # seconds spent copying inputs, checking them
    # and reading settings around each call, summed over the workers

    def add_time(self, key: str, dt: float, cpu: float = 0.0) -> None:
        self.seconds[key] = round(self.seconds.get(key, 0.0) + dt, 3)
        self.cpu[key] = round(self.cpu.get(key, 0.0) + cpu, 3)


_LOADED: dict[str, BaseBackend] = {}


def loaded(name: str, threads: int | None = None) -> BaseBackend:
    """Each process imports a framework once, when it is first selected."""
    if name not in _LOADED:
        from suite.backend_api import discover, load

        _LOADED[name] = load(discover()[name], threads)
    return _LOADED[name]


def targets(plan: Plan, info: RunInfo) -> list[tuple[BaseBackend, str, str]]:
    """(backend, device, mode) to run; unusable devices and modes are noted in info.skipped."""
    pairs = []
    for name in plan.backends:
        b = loaded(name, plan.threads)
        info.frameworks[b.name] = b.version
        info.threads[b.name] = b.threads()
        avail = b.devices()
        for d in plan.devices:
            reason = avail.get(d, f"{b.name} has no device {d!r}")
            if reason is None:
                info.devices[f"{b.name}/{d}"] = b.device_name(d)
                pairs += [(b, d, m) for m in usable_modes(b, d, plan.modes, info)]
            else:
                info.skipped.append(f"{b.name}/{d}: {reason}")
    return pairs


def usable_modes(backend: BaseBackend, device: str, modes: list[str] | None, info: RunInfo) -> list[str]:
    """The selected modes `backend` can run on `device` (None: its default mode); the others are noted
    in info.skipped with the reason (no C++ compiler for Inductor, eager JAX not run, numpy has none)."""
    avail = backend.modes(device)
    out = []
    for m in modes or [backend.default_mode]:
        reason = avail.get(m, f"{backend.name} has no mode {m!r}")
        if callable(reason):  # found only when asked for (torch: importing Inductor's config takes ~1 s)
            reason = reason()
        if reason is None:
            out.append(m)
        elif f"{backend.name}/{device}/{m}: {reason}" not in info.skipped:
            info.skipped.append(f"{backend.name}/{device}/{m}: {reason}")
    return out


@dataclass
class Inputs:
    """What one (case, dtype) hands to every implementation, already on the device."""

    x: Any  # z / T correctly rounded to the dtype by the suite: the same bits for every framework and impl
    z: Any  # the logits in the dtype: `temperature` divides by T itself
    targets: Any
    probs: Any
    cotangents: dict[str, Any]
    temperature: float = 1.0  # a Python float, as a user passes it


Key = tuple[str, str, str]  # (op, impl, pass)
ACCURACY_THREADS = 1
Step = Callable[[Any, Any, Any, Any], Any]  # (input, targets, probs, cotangent) -> output


def _op_fn(backend: BaseBackend, impl: str, op: str, temperature: float, t: Any, p: Any) -> Callable[[Any], Any]:
    """The op of one implementation as a function of its input array (x, or z for `temperature`)."""
    if impl == "fused":
        return lambda x: backend.fused(op, x, t, p)
    plugin = plugins.get(impl)
    if plugin is not None:  # its own function of x, its result checked
        return lambda x: plugins.call(plugin, backend, op, x, t, p)
    if impl == "temperature":  # seed 002 as a user writes it: softmax(z / T), T a Python float
        return lambda z: apply(FORMULAS["naive"], op, backend.xp, z / temperature, t, p)
    formula = FORMULAS[impl]
    return lambda x: apply(formula, op, backend.xp, x, t, p)


def step(backend: BaseBackend, impl: str, op: str, pass_: str, temperature: float = 1.0) -> Step:
    """One implementation of one op, forward or backward, as the function a user would write."""
    def forward(a, t, p, g):
        return _op_fn(backend, impl, op, temperature, t, p)(a)

    def backward(a, t, p, g):
        if backend.autodiff:
            return backend.vjp(_op_fn(backend, impl, op, temperature, t, p), a, g)
        # numpy: the analytic gradient from the implementation's own softmax (seed 003)
        T = temperature if impl == "temperature" else 1.0
        x = a / T if impl == "temperature" else a
        if impl == "fused":
            s = backend.fused("softmax", x, t, p)
        elif (plugin := plugins.get(impl)) is not None:
            plugins.softmax_for_vjp(plugin, op)
            s = plugins.call(plugin, backend, "softmax", x, t, p)
        else:
            s = FORMULAS["naive" if impl == "temperature" else impl].softmax(backend.xp, x)
        return analytic_vjp(op, np.asarray(s), np.asarray(t), np.asarray(p), np.asarray(g), T)

    return forward if pass_ == "forward" else backward


def step_args(impl: str, op: str, inp: Inputs) -> tuple[Any, Any, Any, Any]:
    return (inp.z if impl == "temperature" else inp.x), inp.targets, inp.probs, inp.cotangents[op]


_STEPS: dict[tuple[int, Key, float, str], Step] = {}


def compiled_step(backend: BaseBackend, key: Key, temperature: float, mode: str | None = None) -> Step:
    """`step` in `mode` (default: the framework's own): eager, or under the framework's compiler (kept,
    so every case of the same shape and dtype reuses the program). T is a constant only where the impl
    uses it."""
    op, impl, pass_ = key
    mode = mode or backend.default_mode
    T = temperature if impl == "temperature" else 1.0
    k = (id(backend), key, T, mode)
    if k not in _STEPS:
        fn = step(backend, impl, op, pass_, T)
        if mode == "compiled":
            fn = backend.compile(fn) if pass_ == "forward" else \
                backend.compile_backward(step(backend, impl, op, "forward", T), fn)
        _STEPS[k] = fn
    return _STEPS[k]


_COMPILED: set[tuple] = set()  # (backend, program, shape, dtype) already compiled in this process


def first_call(backend: BaseBackend, program: tuple, args: tuple, call: Callable[[], Any],
               again: Callable[[], Any] | None = None) -> tuple[Any, float]:
    """call() and the compile time it cost: on a program's first call for these input shapes and dtypes,
    the first call's time minus a second (steady) call's, `again()` (default: call; given, it runs on
    inputs of its own, so a function that writes into its input cannot change the first call's result);
    0.0 when the program was compiled before."""
    sig = (id(backend), program, *((tuple(a.shape), str(a.dtype)) for a in args if hasattr(a, "shape")))
    if sig in _COMPILED:
        return call(), 0.0
    t0 = time.perf_counter()
    out = call()
    backend.wait(out)
    first = time.perf_counter() - t0
    _COMPILED.add(sig)
    t0 = time.perf_counter()
    backend.wait((again or call)())
    return out, max(first - (time.perf_counter() - t0), 0.0)


ARGS = ("x", "targets", "probs", "cotangent")  # what a step takes, in order (x: z for `temperature`)


def handed_over(op: str, pass_: str) -> tuple[bool, bool, bool, bool]:
    """Which of ARGS one (op, pass) hands to the implementation; the others are passed as None."""
    return True, op in ("cross_entropy", "cross_entropy_mean"), op == "soft_cross_entropy", pass_ == "backward"


ISOLATION: dict[str, float] = {"copies": 0.0, "checks": 0.0, "settings": 0.0}  # seconds, this process


def _costs(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the time a function takes to ISOLATION[kind]: what isolating the calls costs a run (env.json)."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                ISOLATION[kind] += time.perf_counter() - t0
        return timed
    return wrap


@_costs("copies")
def fresh_args(backend: BaseBackend, impl: str, op: str, pass_: str, inp: Inputs,
               mode: str = "eager") -> tuple[tuple, tuple]:
    """(args, originals): copies that no other call has seen of what this call is handed (None for what it
    is not), and the suite's arrays they were copied from, to check afterwards (`written`); the suite's
    own arrays where the framework's cannot be changed by a call (backend.hands_copies)."""
    originals = tuple(a if u else None for a, u in zip(step_args(impl, op, inp), handed_over(op, pass_),
                                                        strict=True))
    if not backend.hands_copies(mode):
        return originals, originals
    args = tuple(None if a is None else backend.copy(a) for a in originals[:3])
    # numpy's backward is the suite's analytic VJP: the implementation never sees the cotangent
    g = originals[3] if originals[3] is None or not backend.autodiff else backend.copy(originals[3])
    return (*args, g), originals


@_costs("copies")
def fresh_inputs(backend: BaseBackend, inp: Inputs) -> Inputs:
    """A copy of every array of `inp` (one compiled program's arguments)."""
    return replace(inp, x=backend.copy(inp.x), z=backend.copy(inp.z), targets=backend.copy(inp.targets),
                   probs=backend.copy(inp.probs), cotangents={k: backend.copy(v) for k, v in inp.cotangents.items()})


def _all_arrays(inp: Inputs) -> tuple:
    return (inp.x, inp.z, inp.targets, inp.probs, *inp.cotangents.values())


@_costs("checks")
def written(backend: BaseBackend, args: tuple, originals: tuple) -> list[str]:
    """The names of the arguments a finished call changed; one it can no longer be read from (a donated
    JAX buffer) counts as changed."""
    out = []
    names = ARGS if len(args) == len(ARGS) else ("x", "z", "targets", "probs", *(f"cotangent {i}" for i in
                                                                             range(len(args) - 4)))
    for name, a, o in zip(names, args, originals, strict=True):
        if a is None or a is o:  # not handed, or not copied (backend.hands_copies)
            continue
        try:
            same = backend.same(a, o)
        except Exception:  # noqa: BLE001 - deleted, donated, moved: not what it was handed
            same = False
        if not same:
            out.append(name)
    return out


@dataclass
class Call:
    """One implementation call's result, and what it was handed (to check afterwards: `written`)."""

    out: Any
    compile_s: float
    args: tuple
    originals: tuple


def compute(backend: BaseBackend, impl: str, op: str, pass_: str, inp: Inputs, mode: str | None = None) -> Call:
    """One implementation of one op, forward or backward, alone, on fresh copies of its inputs: its result
    as a framework array, its compile time (NaN in eager mode) and what it was handed."""
    mode = mode or backend.default_mode
    fn = compiled_step(backend, (op, impl, pass_), inp.temperature, mode)
    args, originals = fresh_args(backend, impl, op, pass_, inp, mode)
    if mode != "compiled":
        return Call(fn(*args), np.nan, args, originals)
    T = inp.temperature if impl == "temperature" else 1.0
    out, seconds = first_call(backend, (op, impl, pass_, T), args, lambda: fn(*args),
                              lambda: fn(*fresh_args(backend, impl, op, pass_, inp, mode)[0]))
    return Call(out, seconds, args, originals)


_GROUPS: dict[tuple[int, tuple[Key, ...], float], Callable[..., Any]] = {}


def _identity(group: tuple[Key, ...], T: float) -> str | None:
    """What names a group's functions exactly, for backends that keep compiled programs between runs
    (the code that builds them is the backend's part of the key): the built-ins only, whose code is the
    suite's; a plug-in's source may change under the same name."""
    if any(plugins.get(k[1]) is not None for k in group):
        return None
    return f"steps {group!r} T {T!r} online_chunk {formulas.ONLINE_CHUNK}"


def compute_group(backend: BaseBackend, keys: list[Key], inp: Inputs,
                  compile_s: dict[Key, float] | None = None) -> dict[Key, Any]:
    """Every requested (op, impl, pass) in one compiled program (backend.compile_group), each
    function walled off from the others so that its outputs are bit-identical to running it alone
    (tested: suite/tests/test_isolation.py). `temperature`'s steps, whose T is a compile-time
    constant as in user code, form a program of their own per T != 1. The main program always holds
    every requested key at T = 1, so a case with T != 1 reuses the program of its shape and dtype
    (its `temperature` outputs, at T = 1, are replaced by those of the program at its T).
    `compile_s` gets each function's share of its program's compile time (split evenly)."""
    out: dict[Key, Any] = {}
    temperature = [k for k in keys if k[1] == "temperature"]
    groups = [(tuple(keys) if inp.temperature == 1.0 or len(temperature) < len(keys) else (), 1.0)]
    if inp.temperature != 1.0:
        groups.append((tuple(temperature), inp.temperature))
    for group, T in groups:
        if not group:
            continue
        ck = (id(backend), group, T)
        if ck not in _GROUPS:
            _GROUPS[ck] = backend.compile_group([step(backend, k[1], k[0], k[2], T) for k in group],
                                                identity=_identity(group, T))
        args = [step_args(k[1], k[0], inp) for k in group]
        results, seconds = first_call(backend, ck[1:], tuple(a for t in args for a in t),
                                      lambda ck=ck, args=args: _GROUPS[ck](args))
        out.update(zip(group, results, strict=True))
        if compile_s is not None:
            compile_s.update((k, seconds / len(group)) for k in group)
    return out


def fetch(backend: BaseBackend, device: str, out: Any) -> tuple[np.ndarray, str]:
    """Wait for the device, then the result as float64 numpy and its dtype name."""
    backend.sync(device)
    return backend.to_numpy(out), backend.out_dtype(out)


def _put_inputs(backend: BaseBackend, device: str, dtype: str, ref: Reference, targets: np.ndarray) -> Inputs:
    x = backend.put(ref.x, dtype, device)
    return Inputs(
        x=x,
        z=x if ref.z is ref.x else backend.put(ref.z, dtype, device),  # T = 1: one array (every call gets copies)
        targets=backend.put_targets(targets, device),
        probs=backend.put(ref.probs, dtype, device),
        cotangents={op: backend.put(g, dtype, device) for op, g in ref.cotangents.items()},
        temperature=ref.temperature,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@dataclass
class Hooks:
    """How a slice reports while it computes (suite/workers.py sends these to the supervising process,
    which enforces the time limit and names the call a crash interrupted); in this process, nothing."""

    tick: Callable[[str], None] = lambda name: None  # after each (case, dtype)
    begin: Callable[[tuple], None] = lambda where: None  # (case index, target index, keys) before a call
    end: Callable[[], None] = lambda: None  # after it returned or raised
    emit: Callable[[int, list[dict]], None] | None = None  # a case's rows as soon as they are graded
    start: int = 0  # the first case to compute: a task resumed after its worker died
    failed: dict[tuple[int, int, Key], str] = field(default_factory=dict)  # calls not to make again -> message


def _changes(before: dict, after: dict) -> str:
    return ", ".join(f"{k} {before[k]!r} -> {after.get(k)!r}" for k in before if after.get(k) != before[k])


@_costs("settings")
def _settings(backend: BaseBackend) -> dict:
    return backend.settings()


@contextlib.contextmanager
def _watched(backend: BaseBackend, hooks: Hooks, where: tuple, notes: list[str]):
    """Around one implementation call (or one compiled program): the supervisor is told what runs, and
    process settings the call changed are noted and put back, so later calls see the defaults."""
    before = _settings(backend)
    hooks.begin(where)
    try:
        yield
    finally:
        hooks.end()
        after = _settings(backend)
        if after != before:
            notes.append(f"changed process settings: {_changes(before, after)} (put back)")
            backend.restore(before)


def _side_effects(row: dict, wrote: list[str], notes: list[str]) -> dict:
    """A call that wrote into its input or changed process settings gets a verdict saying so; its outputs
    are still graded in the other columns, and the message keeps the verdict they alone would have."""
    if not wrote and not notes:
        return row
    said = ([f"wrote into its input {', '.join(wrote)}"] if wrote else []) + notes
    alone = f"its outputs alone: {row['verdict']}" + (f" ({row['message']})" if row.get("message") else "")
    return {**row, "verdict": "mutates_input" if wrote else "changes_settings",
            "message": "; ".join([*said, alone])}


def _row(backend: BaseBackend, device: str, dtype: str, ref: Reference, inp: Inputs, key: Key,
         precomputed: tuple[Call, list[str], list[str]] | None, base: dict, hooks: Hooks, where: tuple) -> dict:
    """One graded row; `precomputed`: (call, settings notes, inputs written) of a compiled program."""
    op, impl, pass_ = key
    expected = ref.for_impl(impl)[(op, pass_)]
    row = {**base, "op": op, "impl": impl, "pass": pass_, "exact_finite": expected.all_finite}
    call, notes, wrote = precomputed if precomputed is not None else (None, [], [])
    try:
        if call is None:
            notes = []
            with _watched(backend, hooks, where, notes):
                call = compute(backend, impl, op, pass_, inp, base["mode"])
                got, got_dtype = fetch(backend, device, call.out)
        else:
            got, got_dtype = fetch(backend, device, call.out)
        row["compile_s"] = call.compile_s
        if precomputed is None:
            wrote = written(backend, call.args, call.originals)
    except Exception as exc:  # noqa: BLE001 - any failure is a row, the run goes on
        if call is not None and precomputed is None:
            wrote = written(backend, call.args, call.originals)
        compiler = backend.compile_error(exc) if base["mode"] == "compiled" else None
        if compiler is not None:  # a compile failure: an error row with the compiler's own first line
            row.update(verdict="error", message="compile failed: " + _first_line(compiler))
        elif backend.out_of_memory(exc):  # cached blocks back, and the run goes on
            backend.release(device)
            row.update(verdict="error", message="device out of memory: " + _first_line(exc))
        else:
            row.update(verdict=backend.classify(exc), message=_first_line(exc))
        return _side_effects(row, wrote, notes)
    row["out_dtype"] = got_dtype
    if got_dtype != dtype:  # graded as the named dtype holds it: rounded once more, as a user's cast would
        got = round_to(got, dtype)
    row.update(score(got, expected, op, pass_))
    if got_dtype != dtype:
        row["message"] = f"returned {got_dtype} for {dtype} input (graded after rounding to {dtype})" + (
            f"; {row['message']}" if row.get("message") else "")
    if op == "softmax" and pass_ == "forward" and got.shape == ref.softmax_t1.shape:
        row["tv_to_t1"] = tv_distance(got, ref.softmax_t1)
    if impl == "online":  # its recorded parameter
        row["message"] = "; ".join(m for m in (row.get("message"), f"chunk {formulas.ONLINE_CHUNK}") if m)
    return _side_effects(row, wrote, notes)


def run_slice(plan: Plan, dtypes: list[str], hooks: Hooks | None = None) -> tuple[list[dict], RunInfo]:
    """Rows for the given dtypes (those not passed to hooks.emit); hooks.tick(case_name) after each
    (case, dtype). RunInfo.seconds is wall time and RunInfo.cpu this process's CPU time, per backend."""
    hooks = hooks or Hooks()
    rows: list[dict] = []
    info = RunInfo()
    start = dict(ISOLATION)
    pairs = targets(plan, info)
    before = {b.name: b.settings() for b, _, _ in pairs}
    plugins.ensure(plan.plugins)
    for backend, _, _ in pairs:  # what a plug-in's import set is put back: the suite grades under the defaults
        after = backend.settings()
        if after != before[backend.name]:
            names = ", ".join(s.label for s in plan.plugins)
            info.notes.append(f"importing plug-in {names} changed process settings: "
                              f"{_changes(before[backend.name], after)} (put back in its own worker)")
            backend.restore(before[backend.name])
    with np.errstate(all="ignore"):
        for index, case in enumerate(plan.cases):
            if index < hooks.start:
                continue
            for dtype in dtypes:
                t0, c0 = time.perf_counter(), time.process_time()
                ref = reference(plan, case, dtype)
                info.add_time("reference", time.perf_counter() - t0, time.process_time() - c0)
                got: list[dict] = []
                for target, (backend, device, mode) in enumerate(pairs):
                    t0, c0 = time.perf_counter(), time.process_time()
                    got += _case_rows(plan, backend, device, dtype, case, ref, mode, hooks, (index, target))
                    info.add_time(f"{backend.name}/{device}" + ("" if mode == backend.default_mode else f"/{mode}"),
                                  time.perf_counter() - t0, time.process_time() - c0)
                if hooks.emit is not None:
                    hooks.emit(index, got)
                else:
                    rows += got
                hooks.tick(case.name)
    for backend, device, _ in pairs:
        backend.release(device)
    info.isolation = {k: round(v - start[k], 3) for k, v in ISOLATION.items()}
    return rows, info


def _case_rows(plan: Plan, backend: BaseBackend, device: str, dtype: str, case: Case, ref: Reference,
               mode: str | None = None, hooks: Hooks | None = None, at: tuple[int, int] = (0, 0)) -> list[dict]:
    """One (case, dtype)'s rows on one (backend, device, mode); `at` = (case index, target index) names
    its calls for hooks.begin and hooks.failed."""
    hooks = hooks or Hooks()
    mode = mode or backend.default_mode
    base = {"backend": backend.name, "backend_version": backend.version, "device": device, "mode": mode,
            "dtype": dtype, "case": case.name, "n_classes": case.n_classes,
            "temperature": case.temperature, "tags": ",".join(case.tags)}
    impls = [i for i in plan.impls if plugins.runs_on(i, backend.name)]  # a plug-in: its framework only
    keys = [(op, impl, pass_) for op in plan.ops for impl in impls for pass_ in plan.passes]

    def failed_row(k: Key, verdict: str, message: str) -> dict:
        return {**base, "op": k[0], "impl": k[1], "pass": k[2], "verdict": verdict, "message": message,
                "exact_finite": ref.for_impl(k[1])[(k[0], k[2])].all_finite}

    done = {k: failed_row(k, "error", m) for (c, t, k), m in hooks.failed.items() if (c, t) == at and k in keys}
    keys = [k for k in keys if k not in done]
    try:
        inp = _put_inputs(backend, device, dtype, ref, case.targets)
    except Exception as exc:  # noqa: BLE001 - the framework refuses this dtype/device outright
        verdict, message = backend.classify(exc), _first_line(exc)
        if backend.out_of_memory(exc):
            backend.release(device)
            verdict, message = "error", "device out of memory: " + message
        done.update((k, failed_row(k, verdict, message)) for k in keys)
        keys = []
    batch: dict[Key, tuple[Call, list[str], list[str]]] = {}
    if keys and backend.compile_matrix and mode == "compiled":  # built-ins in one program, each plug-in's apart
        groups = [[k for k in keys if plugins.get(k[1]) is None]] + [
            [k for k in keys if k[1] == name and k[0] in plugins.get(name).ops] for name in impls
            if plugins.get(name) is not None]
        for group in filter(None, groups):
            mine, notes = (fresh_inputs(backend, inp) if backend.hands_copies(mode) else inp), []
            try:
                seconds: dict[Key, float] = {}
                with _watched(backend, hooks, (*at, tuple(group)), notes):
                    results = compute_group(backend, group, mine, seconds)
                wrote = written(backend, _all_arrays(mine), _all_arrays(inp))  # once: one program was handed them
                batch.update((k, (Call(r, seconds[k], (), ()), notes, wrote)) for k, r in results.items())
            except Exception:  # noqa: BLE001 - one bad impl: redo row by row to find it
                pass
    # graded (op, pass) by (op, pass): a wide reference holds one of them at a time (suite/reference.py)
    graded = sorted(keys, key=lambda k: (plan.ops.index(k[0]), plan.passes.index(k[2])))
    rows = {k: _row(backend, device, dtype, ref, inp, k, batch.get(k), base, hooks, (*at, (k,))) for k in graded}
    order = [(op, impl, pass_) for op in plan.ops for impl in impls for pass_ in plan.passes]
    return [{**done, **rows}[k] for k in order]


def _merge(info: RunInfo, other: RunInfo) -> None:
    info.frameworks.update(other.frameworks)
    info.devices.update(other.devices)
    info.threads.update(other.threads)
    info.skipped += [s for s in other.skipped if s not in info.skipped]
    info.notes += [n for n in other.notes if n not in info.notes]
    info.failures += other.failures
    for k, v in other.isolation.items():
        info.isolation[k] = round(info.isolation.get(k, 0.0) + v, 3)
    for k, v in other.seconds.items():
        info.add_time(k, v, other.cpu.get(k, 0.0))


def _frame(rows: list[dict], plan: Plan) -> pd.DataFrame:
    """Rows in catalog order with every column of COLUMNS."""
    modes: dict[str, int] = {}
    for r in rows:  # in the order they were computed
        modes.setdefault(r["mode"], len(modes))
    rank = {n: {v: i for i, v in enumerate(vals)} for n, vals in
            (("backend", plan.backends), ("dtype", plan.dtypes), ("case", [c.name for c in plan.cases]),
             ("mode", modes), ("op", plan.ops), ("impl", plan.impls), ("pass", plan.passes))}
    rows = sorted(rows, key=lambda r: (rank["backend"][r["backend"]], r["device"], rank["dtype"][r["dtype"]],
                                       *(rank[k][r[k]] for k in ("case", "mode", "op", "impl", "pass"))))
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = np.nan
    df = df[COLUMNS]
    df["message"] = df["message"].fillna("")
    return df


def run(plan: Plan, progress: bool | None = None, jobs: int = 0,
        on_backend: Callable[[pd.DataFrame], None] | None = None, timeout: float | None = None,
        gpu_jobs: int | None = None) -> tuple[pd.DataFrame, RunInfo]:
    """The whole matrix, in `jobs` worker processes (suite/workers.py: plug-ins apart from the built-ins,
    a time limit per call, crashes contained), or with jobs=0 in this process (no containment: for tests
    and library use).

    `on_backend(df)` is called with each backend's rows as soon as all of them are done (the store
    writes that backend's partitions then, so they survive a later interruption)."""
    from suite.progress import progress_bar

    if jobs > 0:  # one tick per case of each task: plug-ins' tasks and the GPU's are tasks of their own
        from suite.workers import make_tasks

        total = len(plan.cases) * len(make_tasks(plan))
    else:
        total = len(plan.cases) * len(plan.dtypes) * len(plan.backends)
    bar = progress_bar(total, "accuracy", "case", progress)  # a bar, or plain lines in a log or pipe

    def tick(name: str) -> None:
        bar.set_postfix_str(name[:28], refresh=False)
        bar.update(1)

    frames: list[pd.DataFrame] = []
    info = RunInfo()

    def finished(backend: str, rows: list[dict]) -> None:
        df = _frame(rows, replace(plan, backends=[backend]))
        frames.append(df)
        if on_backend is not None and len(df):
            on_backend(df)

    if plan.threads is None:
        # one intra-op thread per framework, whatever --jobs, the selection or the machine: a parallel
        # reduction's result depends on how many threads split it (torch's on 262,147 classes does), and a
        # row must not depend on what else was selected; the workers share the cores instead
        plan = replace(plan, threads=ACCURACY_THREADS)
    # references are computed once per (case, dtype) and shared by every framework's task through a
    # run-private cache, in this process or across the workers
    with tempfile.TemporaryDirectory(prefix="softmax-suite-refs-") as cache:
        plan = replace(plan, cache_dir=cache)
        if jobs <= 0:
            for backend in plan.backends:
                rows, part = run_slice(replace(plan, backends=[backend]), plan.dtypes, Hooks(tick=tick))
                _merge(info, part)
                finished(backend, rows)
        else:
            from suite import workers

            workers.Supervisor(plan, jobs, tick, info, finished,
                               workers.DEFAULT_TIMEOUT if timeout is None else timeout,
                               workers.GPU_JOBS if gpu_jobs is None else gpu_jobs).run()
    bar.close()
    df = pd.concat(frames, ignore_index=True) if frames else _frame([], plan)
    return df, info


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Verdict counts per backend x device x mode x impl (the end-of-run table)."""
    from suite.ops import VERDICTS

    t = pd.crosstab([df["backend"], df["device"], df["mode"], df["impl"]], df["verdict"])
    return t.reindex(columns=[v for v in VERDICTS if v in t.columns] or list(t.columns), fill_value=0)

