"""The accuracy matrix: case -> backend arrays -> implementation -> outputs -> metrics -> row.

References are computed once per (case, dtype) and shared by every backend, device, op and impl.
One failing implementation becomes an `error` (or `unsupported`) row; the run goes on.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
from suite.lanes import Lanes
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
    return ref


@dataclass
class RunInfo:
    """What the backends said about themselves, for env.json and the summary."""

    frameworks: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    threads: dict[str, dict] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per backend (and "reference"), summed

    def add_time(self, key: str, dt: float) -> None:
        self.seconds[key] = round(self.seconds.get(key, 0.0) + dt, 3)


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


def first_call(backend: BaseBackend, program: tuple, args: tuple, call: Callable[[], Any]) -> tuple[Any, float]:
    """call() and the compile time it cost: on a program's first call for these input shapes and dtypes,
    the first call's time minus a second (steady) call's; 0.0 when the program was compiled before."""
    sig = (id(backend), program, *((tuple(a.shape), str(a.dtype)) for a in args if hasattr(a, "shape")))
    if sig in _COMPILED:
        return call(), 0.0
    t0 = time.perf_counter()
    out = call()
    backend.wait(out)
    first = time.perf_counter() - t0
    _COMPILED.add(sig)
    t0 = time.perf_counter()
    backend.wait(call())
    return out, max(first - (time.perf_counter() - t0), 0.0)


def compute(backend: BaseBackend, impl: str, op: str, pass_: str, inp: Inputs,
            mode: str | None = None) -> tuple[Any, float]:
    """One implementation of one op, forward or backward, alone, as a framework array, and its compile
    time (NaN in eager mode)."""
    mode = mode or backend.default_mode
    fn, args = compiled_step(backend, (op, impl, pass_), inp.temperature, mode), step_args(impl, op, inp)
    if mode != "compiled":
        return fn(*args), np.nan
    T = inp.temperature if impl == "temperature" else 1.0
    return first_call(backend, (op, impl, pass_, T), args, lambda: fn(*args))


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
    return Inputs(
        x=backend.put(ref.x, dtype, device),
        z=backend.put(ref.z, dtype, device),
        targets=backend.put_targets(targets, device),
        probs=backend.put(ref.probs, dtype, device),
        cotangents={op: backend.put(g, dtype, device) for op, g in ref.cotangents.items()},
        temperature=ref.temperature,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _row(backend: BaseBackend, device: str, dtype: str, ref: Reference, inp: Inputs,
         key: Key, precomputed: tuple[Any, float] | None, base: dict) -> dict:
    op, impl, pass_ = key
    expected = ref.for_impl(impl)[(op, pass_)]
    row = {**base, "op": op, "impl": impl, "pass": pass_, "exact_finite": expected.all_finite}
    try:
        out, row["compile_s"] = compute(backend, impl, op, pass_, inp, base["mode"]) if precomputed is None \
            else precomputed
        got, got_dtype = fetch(backend, device, out)
    except Exception as exc:  # noqa: BLE001 - any failure is a row, the run goes on
        compiler = backend.compile_error(exc) if base["mode"] == "compiled" else None
        if compiler is not None:  # a compile failure: an error row with the compiler's own first line
            return {**row, "verdict": "error", "message": "compile failed: " + _first_line(compiler)}
        return {**row, "verdict": backend.classify(exc), "message": _first_line(exc)}
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
    return row


def run_slice(plan: Plan, dtypes: list[str], tick: Callable[[str], None]) -> tuple[list[dict], RunInfo]:
    """Rows for the given dtypes; `tick(case_name)` after each (case, dtype)."""
    rows: list[dict] = []
    info = RunInfo()
    plugins.ensure(plan.plugins)
    pairs = targets(plan, info)
    with np.errstate(all="ignore"):
        for case in plan.cases:
            for dtype in dtypes:
                t0 = time.perf_counter()
                ref = reference(plan, case, dtype)
                info.add_time("reference", time.perf_counter() - t0)
                for backend, device, mode in pairs:
                    t0 = time.perf_counter()
                    rows += _case_rows(plan, backend, device, dtype, case, ref, mode)
                    info.add_time(f"{backend.name}/{device}" + ("" if mode == backend.default_mode else f"/{mode}"),
                                  time.perf_counter() - t0)
                tick(case.name)
    return rows, info


def _case_rows(plan: Plan, backend: BaseBackend, device: str, dtype: str, case: Case,
               ref: Reference, mode: str | None = None) -> list[dict]:
    mode = mode or backend.default_mode
    base = {"backend": backend.name, "backend_version": backend.version, "device": device, "mode": mode,
            "dtype": dtype, "case": case.name, "n_classes": case.n_classes,
            "temperature": case.temperature, "tags": ",".join(case.tags)}
    impls = [i for i in plan.impls if plugins.runs_on(i, backend.name)]  # a plug-in: its framework only
    keys = [(op, impl, pass_) for op in plan.ops for impl in impls for pass_ in plan.passes]
    try:
        inp = _put_inputs(backend, device, dtype, ref, case.targets)
    except Exception as exc:  # noqa: BLE001 - the framework refuses this dtype/device outright
        verdict, message = backend.classify(exc), _first_line(exc)
        return [{**base, "op": k[0], "impl": k[1], "pass": k[2], "verdict": verdict, "message": message,
                 "exact_finite": ref.for_impl(k[1])[(k[0], k[2])].all_finite} for k in keys]
    batch: dict[Key, tuple[Any, float]] = {}
    if backend.compile_matrix and mode == "compiled":  # the built-ins in one program, each plug-in's in its own
        groups = [[k for k in keys if plugins.get(k[1]) is None]] + [
            [k for k in keys if k[1] == name and k[0] in plugins.get(name).ops] for name in impls
            if plugins.get(name) is not None]
        for group in filter(None, groups):
            try:
                seconds: dict[Key, float] = {}
                results = compute_group(backend, group, inp, seconds)
                batch.update((k, (r, seconds[k])) for k, r in results.items())
            except Exception:  # noqa: BLE001 - one bad impl: redo row by row to find it
                pass
    return [_row(backend, device, dtype, ref, inp, key, batch.get(key), base) for key in keys]


def _die_with_parent(parent: int) -> None:
    """Initializer of the workers and the manager: end with the run's process, even when it is killed
    with SIGKILL, instead of computing on for minutes (PR_SET_PDEATHSIG on Linux; a watcher thread
    everywhere, which also covers a parent that died before the prctl)."""
    import signal
    import threading

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):  # not Linux: the watcher alone
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _pool(ctx):
    """One worker process (the runner hands each its tasks one at a time: suite/lanes.py) that dies with
    the parent; when the run ends cleanly it is killed instead of waited for."""
    from concurrent.futures import ProcessPoolExecutor

    class Pool(ProcessPoolExecutor):
        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:  # every result is in hand: don't wait for the worker's own teardown (~2 s)
                for process in list(self._processes.values()):
                    process.kill()
            self.shutdown(wait=True)
            return False

    return Pool(1, mp_context=ctx, initializer=_die_with_parent, initargs=(os.getpid(),))


def _worker(plan: Plan, dtype: str, queue) -> tuple[list[dict], RunInfo]:
    return run_slice(plan, [dtype], queue.put)


def _tasks(plan: Plan) -> list[tuple[Plan, str]]:
    """One task per (backend, dtype), backend-major, so each backend's partition is complete (and can
    be stored) as early as possible; a task computes its (case, dtype) references itself, except the
    wide cases' (`reference`: the first task computes them, the others map its files).
    The last selected backend first: in the default order (numpy, torch, tensorflow, jax) that is the
    longest first (JAX compiles, TensorFlow's eager dispatch is slow), so the workers finish together
    on short tasks instead of one waiting for the other's long last one. suite/lanes.py picks each
    worker's next task from this list, keeping each framework's import to as few workers as it can."""
    return [(replace(plan, backends=[b]), d) for b in reversed(plan.backends) for d in plan.dtypes]


def _merge(info: RunInfo, other: RunInfo) -> None:
    info.frameworks.update(other.frameworks)
    info.devices.update(other.devices)
    info.threads.update(other.threads)
    info.skipped += [s for s in other.skipped if s not in info.skipped]
    for k, v in other.seconds.items():
        info.add_time(k, v)


def _frame(rows: list[dict], plan: Plan) -> pd.DataFrame:
    """Rows in catalog order with every column of COLUMNS."""
    rank = {n: {v: i for i, v in enumerate(vals)} for n, vals in
            (("backend", plan.backends), ("dtype", plan.dtypes), ("case", [c.name for c in plan.cases]))}
    rows = sorted(rows, key=lambda r: (rank["backend"][r["backend"]], r["device"], rank["dtype"][r["dtype"]],
                                       rank["case"][r["case"]]))
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = np.nan
    df = df[COLUMNS]
    df["message"] = df["message"].fillna("")
    return df


def run(plan: Plan, progress: bool | None = None, jobs: int = 1,
        on_backend: Callable[[pd.DataFrame], None] | None = None) -> tuple[pd.DataFrame, RunInfo]:
    """The whole matrix, in this process or in `jobs` worker processes (one (backend, dtype) per task).

    `on_backend(df)` is called with each backend's rows as soon as all of them are done (the store
    writes that backend's partitions then, so they survive a later interruption)."""
    from tqdm import tqdm

    total = len(plan.cases) * len(plan.dtypes) * len(plan.backends)
    bar = tqdm(total=total, desc="accuracy", unit="case", dynamic_ncols=True,
               disable=(None if progress is None else not progress))

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

    jobs = max(1, min(jobs, len(plan.dtypes) * len(plan.backends)))
    if plan.threads is None:
        # one intra-op thread per framework, whatever --jobs, the selection or the machine: a parallel
        # reduction's result depends on how many threads split it (torch's on 262,147 classes does), and a
        # row must not depend on what else was selected; the workers share the cores instead
        plan = replace(plan, threads=ACCURACY_THREADS)
    # references are computed once per (case, dtype) and shared by every framework's task through a
    # run-private cache, in this process or across the workers
    with tempfile.TemporaryDirectory(prefix="softmax-suite-refs-") as cache:
        _run_tasks(replace(plan, cache_dir=cache), jobs, tick, info, finished)
    bar.close()
    df = pd.concat(frames, ignore_index=True) if frames else _frame([], plan)
    return df, info


def _run_tasks(plan: Plan, jobs: int, tick: Callable[[str], None], info: RunInfo,
               finished: Callable[[str, list[dict]], None]) -> None:
    """Every (backend, dtype) task, in this process or in `jobs` workers; `finished(backend, rows)` as
    soon as all of a backend's tasks are done."""
    if jobs == 1:
        for backend in plan.backends:
            rows, part = run_slice(replace(plan, backends=[backend]), plan.dtypes, tick)
            _merge(info, part)
            finished(backend, rows)
    else:
        import multiprocessing as mp
        from multiprocessing.managers import SyncManager

        ctx = mp.get_context("spawn")  # frameworks are not fork-safe once started
        manager = SyncManager(ctx=ctx)
        manager.start(_die_with_parent, (os.getpid(),))
        with manager, contextlib.ExitStack() as stack:
            workers = [stack.enter_context(_pool(ctx)) for _ in range(jobs)]
            # a backend's partition is written while this loop goes on handing out tasks (a write took
            # ~1 s, which an idle worker waited out); in order, one at a time, a failed one stops the run
            writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="suite-store"))
            writes: list[Any] = []
            queue = manager.Queue()
            tasks = _tasks(plan)
            lanes = Lanes([p.backends[0] for p, _ in tasks], jobs)
            running: dict[int, tuple[Any, int]] = {}  # worker -> (future, task)
            results: dict[int, tuple[list[dict], RunInfo]] = {}
            pending = {b: [i for i, (p, _) in enumerate(tasks) if p.backends == [b]] for b in plan.backends}
            while pending:
                for w, worker in enumerate(workers):
                    if w not in running and (i := lanes.take(w)) is not None:
                        running[w] = (worker.submit(_worker, *tasks[i], queue), i)
                try:
                    tick(queue.get(timeout=0.05))  # short: an idle worker waits for this loop to hand it a task
                except queue_mod.Empty:
                    pass
                for w, (future, i) in list(running.items()):
                    if future.done():  # a failed task or dead worker stops the run: no task is handed out after
                        results[i] = future.result()
                        lanes.done(i)
                        del running[w]
                for backend, ids in list(pending.items()):
                    if all(i in results for i in ids):
                        for i in ids:
                            _merge(info, results[i][1])
                        writes.append(writer.submit(finished, backend, [r for i in ids for r in results[i][0]]))
                        del pending[backend]
                for write in writes:
                    if write.done():
                        write.result()
            for write in writes:
                write.result()
            while not queue.empty():
                tick(queue.get())


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Verdict counts per backend x device x mode x impl (the end-of-run table)."""
    from suite.ops import VERDICTS

    t = pd.crosstab([df["backend"], df["device"], df["mode"], df["impl"]], df["verdict"])
    return t.reindex(columns=[v for v in VERDICTS if v in t.columns] or list(t.columns), fill_value=0)

