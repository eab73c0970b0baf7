"""Worker processes that keep what an implementation does to its own rows.

Every row of a run is computed in a worker process, never in the process that supervises the run:

- the built-ins of a framework run in workers of their own, and each plug-in in workers of its own
  (a worker that would switch is replaced by a fresh process), so nothing a plug-in or a framework sets
  process-wide (at import or in a call) reaches another implementation, and no two frameworks' native
  libraries meet in one process (TensorFlow's and Triton's LLVM abort it); a plug-in that declares ENV
  (suite/plugins.py) gets workers started with that environment;
- a worker says which call it is making before it makes it, so a call that overruns `timeout` is
  stopped (the worker is killed and replaced), and a worker that dies (a segfault, `os._exit`, the OOM
  killer) is named in the rows of the call it was making; a fresh worker computes the rest;
- SIGINT and SIGTERM reach the supervisor alone (workers are started with both blocked), which kills
  the workers at once;
- at most `gpu_jobs` workers may see the GPU (the others are started with it hidden), JAX never
  preallocates GPU memory and TensorFlow grows its own as needed: several frameworks share one GPU.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from suite import plugins
from suite.lanes import Lanes
from suite.runner import Hooks, Key, Plan, RunInfo, run_slice

DEFAULT_TIMEOUT = 900.0  # seconds one call (or one compiled program of a case) may take; --timeout
GPU_JOBS = 1  # workers that may hold the GPU at once; --gpu-jobs
# set in every worker before a framework starts, unless the user set them: JAX would otherwise take 75 %
# of the GPU in each process, TensorFlow all of it
GPU_MEMORY_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
HIDE_GPU_ENV = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}  # a worker that must not hold the GPU


@dataclass
class Task:
    """One (backend, dtype, device kind) slice of the built-ins, or of one plug-in; picklable."""

    plan: Plan
    group: str  # "" the built-ins; a plug-in's source label: only that plug-in's workers run it
    gpu: bool  # its devices are ["gpu"]: only a worker allowed to hold the GPU runs it
    start: int = 0  # resumed at this case after its worker died
    failed: dict[tuple[int, int, Key], str] = field(default_factory=dict)  # calls that killed a worker
    deaths: int = 0  # deaths outside any call at this start (the task is given up at two)
    env: dict[str, str] = field(default_factory=dict)  # the plug-in's ENV: its workers start with it

    @property
    def lane(self) -> str:
        """What a worker has loaded to run it (suite/lanes.py keeps workers to what they loaded)."""
        return self.plan.backends[0] + (f"+{self.group}" if self.group else "")

    def describe(self) -> str:
        return f"{self.plan.backends[0]}/{'gpu' if self.gpu else 'cpu'}/{self.plan.dtypes[0]}" + (
            f" (plug-in {self.group})" if self.group else "")


def gpu_present() -> bool:
    """Whether this machine has a GPU device node (NVIDIA's or AMD's), found without importing a framework."""
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")


def make_tasks(plan: Plan, gpu: bool | None = None) -> list[Task]:
    """Backend-major, last selected backend first (the longest in the default order: see Lanes); per
    backend the built-ins, then each plug-in of that framework apart; where a GPU is `gpu` (default:
    gpu_present()) and selected, its tasks apart from the CPU's, so that only GPU workers take them
    (elsewhere one task holds both devices, and the GPU's is skipped with the framework's reason)."""
    out = []
    sources = {p.source: [n for n in plan.impls if (q := plugins.get(n)) is not None and q.source == p.source]
               for name in plan.impls if (p := plugins.get(name)) is not None}
    builtins = [n for n in plan.impls if plugins.get(n) is None]
    split = "gpu" in plan.devices and (gpu_present() if gpu is None else gpu)
    kinds = [[d] for d in plan.devices] if split else [list(plan.devices)]
    for backend in reversed(plan.backends):
        groups = [("", builtins, [])] if builtins else []
        groups += [(src.label, names, [src]) for src, names in sources.items()
                   if plugins.get(names[0]).framework == backend]
        for label, impls, srcs in groups:
            for devices in kinds:
                for dtype in plan.dtypes:
                    out.append(Task(replace(plan, backends=[backend], dtypes=[dtype], devices=devices, impls=impls,
                                            plugins=srcs), label, devices == ["gpu"],
                                    env=dict(srcs[0].env) if srcs else {}))
    return out


def worker_env(gpu: bool, plugin_env: dict[str, str] | None = None) -> dict[str, str]:
    """What a worker's environment gets before any framework starts: GPU memory shared, not grabbed (the
    user's own settings of these variables win), a plug-in's ENV, and the GPU hidden from a worker that may
    not hold it (over anything the plug-in says)."""
    env = {**{k: os.environ.get(k, v) for k, v in GPU_MEMORY_ENV.items()}, **(plugin_env or {})}
    return env if gpu else {**env, **HIDE_GPU_ENV}


def _die_with_parent(parent: int) -> None:
    """End with the run's process, even when it is killed with SIGKILL (PR_SET_PDEATHSIG on Linux; a
    watcher thread everywhere, which also covers a parent that died before the prctl)."""
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


MAX_KEYS = 2048  # (op, impl, pass) keys one task may hold: 6 ops x 2 passes x 170 implementations
IN_CALL, CASE, TARGET, SINCE, FLAGS = range(5)  # the layout of a worker's call state (a shared array)


def task_keys(plan: Plan) -> list[Key]:
    """Every (op, impl, pass) of a one-backend task, in the order suite.runner computes them."""
    impls = [i for i in plan.impls if plugins.runs_on(i, plan.backends[0])]
    return [(op, impl, pass_) for op in plan.ops for impl in impls for pass_ in plan.passes]


class CallState:
    """What a worker is computing, in memory the supervisor reads without a message per call: whether it
    is inside a call, the case and target indices, since when (CLOCK_MONOTONIC is one clock for every
    process) and a flag per key of its task. Written before and after every call; read by the supervisor
    for the time limit and, after the worker died, to name the calls it was making."""

    def __init__(self, ctx) -> None:
        self.array = ctx.RawArray("d", FLAGS + MAX_KEYS)
        self.keys: dict[Key, int] = {}
        self.set: list[int] = []

    def task(self, plan: Plan) -> None:
        self.keys = {k: i for i, k in enumerate(task_keys(plan))}

    def begin(self, where: tuple) -> None:
        a = self.array
        case, target, keys = where
        for i in self.set:
            a[FLAGS + i] = 0.0
        self.set = [self.keys[k] for k in keys if self.keys.get(k, MAX_KEYS) < MAX_KEYS]
        for i in self.set:
            a[FLAGS + i] = 1.0
        a[CASE], a[TARGET], a[SINCE] = case, target, time.monotonic()
        a[IN_CALL] = 1.0  # last: the rest is in place when the supervisor sees it

    def end(self) -> None:
        self.array[IN_CALL] = 0.0

    def read(self, keys: list[Key]) -> tuple[tuple, float] | None:
        """((case, target, keys), since) of the call in progress; None between calls."""
        a = self.array
        if a[IN_CALL] != 1.0:
            return None
        flagged = tuple(k for i, k in enumerate(keys[:MAX_KEYS]) if a[FLAGS + i] == 1.0)
        return (int(a[CASE]), int(a[TARGET]), flagged), a[SINCE]


def _serve(conn, state: CallState, env: dict[str, str], parent: int) -> None:
    """A worker: tasks in, a case's rows at a time out, until told to stop (None) or killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is the supervisor's: it kills the workers
    os.environ.update(env)
    _die_with_parent(parent)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the supervisor is gone: so is this worker, quietly
            os._exit(0)
        if task is None:
            return
        names = [c.name for c in task.plan.cases]

        def begin(where: tuple, plan: Plan = task.plan) -> None:
            if not state.keys:  # the plug-ins are registered by now (task_keys asks which run where)
                state.task(plan)
            state.begin(where)

        state.keys = {}
        hooks = Hooks(begin=begin, end=state.end, start=task.start, failed=task.failed,
                      emit=lambda index, rows, names=names: conn.send(("rows", index, rows, names[index])))
        try:
            try:
                _, info = run_slice(task.plan, task.plan.dtypes, hooks)
            except (BrokenPipeError, ConnectionError):
                raise
            except Exception as exc:  # noqa: BLE001 - the suite's own failure: the supervisor stops the run
                conn.send(("failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]))
                continue
            conn.send(("done", info))
        except (BrokenPipeError, ConnectionError, EOFError):  # the supervisor is gone: so is this worker
            os._exit(0)


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class WorkerFailed(RuntimeError):
    """The suite's own code failed in a worker (not an implementation: those are rows)."""


@dataclass
class _Slot:
    lane: int
    gpu: bool  # may hold the GPU
    process: Any = None
    conn: Any = None
    runs: str | None = None  # the Task.lane its process was started for; None: not started
    state: CallState | None = None
    task: int | None = None


class Supervisor:
    """Hands tasks to `jobs` worker processes and keeps the run going through their deaths."""

    def __init__(self, plan: Plan, jobs: int, tick: Callable[[str], None], info: RunInfo,
                 finished: Callable[[str, list[dict]], None], timeout: float = DEFAULT_TIMEOUT,
                 gpu_jobs: int = GPU_JOBS) -> None:
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")  # frameworks are not fork-safe once started
        self.plan, self.tick, self.info, self.finished = plan, tick, info, finished
        self.timeout = timeout
        self.tasks = make_tasks(plan)
        jobs = max(1, min(jobs, len(self.tasks)))
        present, gpu = gpu_present(), "gpu" in plan.devices
        # may hold the GPU: the first gpu_jobs workers when it is selected; every worker where there is none
        self.slots = [_Slot(i, not present or (gpu and i < max(1, gpu_jobs))) for i in range(jobs)]
        self.lanes = Lanes([t.lane for t in self.tasks], jobs)
        self.rows: dict[int, list[dict]] = {i: [] for i in range(len(self.tasks))}
        self.done: set[int] = set()
        info.gpu = {"gpu_present": present, "gpu_jobs": sum(s.gpu for s in self.slots) if present and gpu else 0,
                    "worker_env": worker_env(gpu=True), "hidden_from_the_others": HIDE_GPU_ENV}

    # ---- processes

    def _start(self, slot: _Slot, runs: str, plugin_env: dict[str, str]) -> None:
        self._stop(slot)
        env = worker_env(slot.gpu, plugin_env)
        mine, theirs = self.ctx.Pipe()
        state = CallState(self.ctx)
        process = self.ctx.Process(target=_serve, args=(theirs, state, env, os.getpid()),
                                   name=f"suite-worker-{slot.lane}")
        # started with ^C ignored: an ignored signal stays ignored through exec, and Python then installs no
        # KeyboardInterrupt handler, so a worker is immune from its first instruction (^C is the supervisor's,
        # which kills the workers). In the supervisor, ^C cannot land inside start() either (a worker left
        # half-started would outlive it); one pressed in those few milliseconds is lost.
        import threading

        main = threading.current_thread() is threading.main_thread()  # where Python lets handlers be set
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            process.start()
            slot.process, slot.conn, slot.runs, slot.state = process, mine, runs, state
        finally:
            if main:
                signal.signal(signal.SIGINT, old)
        theirs.close()

    @staticmethod
    def _stop(slot: _Slot) -> None:
        if slot.process is not None:
            slot.process.kill()
            slot.process.join()
            slot.conn.close()
        slot.process = slot.conn = slot.runs = None

    def close(self) -> None:
        for slot in self.slots:
            self._stop(slot)

    # ---- the loop

    def run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor
        from multiprocessing.connection import wait

        pending = {b: [i for i, t in enumerate(self.tasks) if t.plan.backends == [b]] for b in self.plan.backends}
        # a backend's partition is written while the loop goes on handing out tasks (a write takes ~1 s);
        # in order, one at a time; a failed write stops the run
        writer, writes = ThreadPoolExecutor(1, thread_name_prefix="suite-store"), []
        try:
            while pending:
                self._hand_out()
                busy = [s for s in self.slots if s.task is not None]
                ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout=0.05)
                for slot in busy:
                    if slot.conn in ready or slot.process.sentinel in ready:
                        self._read(slot)
                    call = self._call(slot) if slot.task is not None else None
                    if call is not None and time.monotonic() - call[1] > self.timeout:
                        slot.process.kill()
                        slot.process.join()
                        self._died(slot, f"timed out after {self.timeout:g} s")
                for backend, ids in list(pending.items()):
                    if all(i in self.done for i in ids):
                        writes.append(writer.submit(self.finished, backend, [r for i in ids for r in self.rows.pop(i)]))
                        del pending[backend]
                for write in writes:
                    if write.done():
                        write.result()
            for slot in self.slots:  # done: don't wait for the workers' own teardown (~2 s)
                if slot.process is not None:
                    slot.process.kill()
            for write in writes:
                write.result()
        finally:
            self.close()
            writer.shutdown(wait=True)

    def _hand_out(self) -> None:
        for slot in self.slots:
            if slot.task is not None:
                continue
            i = self.lanes.take(slot.lane, lambda j, slot=slot: slot.gpu or not self.tasks[j].gpu)
            if i is None:
                continue
            task = self.tasks[i]
            if slot.process is None or slot.runs != task.lane or not slot.process.is_alive():
                self._start(slot, task.lane, task.env)  # one framework's built-ins, or one plug-in, per process
            slot.task = i
            slot.conn.send(task)

    def _read(self, slot: _Slot) -> None:
        while slot.task is not None:
            try:
                if not slot.conn.poll():
                    if not slot.process.is_alive():
                        raise EOFError
                    return
                msg = slot.conn.recv()
            except (EOFError, OSError):
                slot.process.join()
                self._died(slot, _signal_name(slot.process.exitcode))
                return
            self._message(slot, msg)

    def _message(self, slot: _Slot, msg: tuple) -> None:
        kind, i = msg[0], slot.task
        task = self.tasks[i]
        if kind == "rows":
            self.rows[i] += msg[2]
            self.tick(msg[3])
            task.start, task.deaths = msg[1] + 1, 0
            task.failed = {k: v for k, v in task.failed.items() if k[0] > msg[1]}
        elif kind == "done":
            from suite.runner import _merge

            _merge(self.info, msg[1])
            self.lanes.done(i)
            self.done.add(i)
            slot.task = None
        elif kind == "failed":
            raise WorkerFailed(f"{task.describe()}: {msg[1]}")

    def _call(self, slot: _Slot) -> tuple[tuple, float] | None:
        """((case, target, keys), since) of the call the worker of `slot` is making, or None."""
        return slot.state.read(task_keys(self.tasks[slot.task].plan))

    def _died(self, slot: _Slot, why: str) -> None:
        """The worker of `slot` is gone: the call it was making becomes error rows saying why, and its
        task goes back to be resumed by a fresh worker at the case it was computing."""
        i, call = slot.task, self._call(slot)
        task = self.tasks[i]
        self._stop(slot)
        slot.task = None
        if call is not None:
            (case, target, keys), _ = call
            name = task.plan.cases[case].name
            for key in keys:
                op, impl, pass_ = key
                task.failed[(case, target, key)] = (
                    f"worker {why} while computing {impl} {op} {pass_} on case {name} ({task.plan.dtypes[0]}); "
                    "a fresh worker computed the other rows")
            task.start = case
            calls = ", ".join(f"{k[1]} {k[0]} {k[2]}" for k in keys)
            self.info.failures.append(f"{task.describe()}: worker {why} in {calls} on case {name}")
        else:
            task.deaths += 1
            self.info.failures.append(f"{task.describe()}: worker {why} outside any implementation call"
                                      + ("; given up: its remaining rows are missing" if task.deaths >= 2 else ""))
            if task.deaths >= 2:
                self.lanes.done(i)
                self.done.add(i)
                return
        self.lanes.retry(i)
