"""`python -m suite bench`: the timing sweep, in one process (timings must not share the cores)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from suite import plugins
from suite.dtypes import np_dtype
from suite.progress import progress_bar
from suite.runner import RunInfo, Selection, loaded, usable_modes
from suite.store import Shard
from suite.timing import TIMING_COLUMNS, bench_one, copy_bandwidth, shared_inputs, traffic_bytes

BENCH_DEFAULTS = {"dtypes": ["float32", "bfloat16"], "ops": ["softmax", "log_softmax", "cross_entropy"],
                  "impls": ["fused", "shifted", "naive"]}
COPY_BYTES = 256 * 2**20
MEMORY_FACTOR = 8  # inputs, outputs, saved activations and gradients of a naive fwd+bwd, with room


@dataclass
class SweepCosts:
    """Where a sweep's wall time went besides its measured rounds (env.json `overhead`), to keep the
    overhead in view: --min-time is what the user asked to spend, the rest should stay small."""

    measured_s: float = 0.0  # the rounds kept as samples
    configs_s: float = 0.0  # whole configurations (measured rounds included)
    inputs_s: float = 0.0  # making inputs on the device (once per backend, device, shape and dtype)
    inputs_made: int = 0
    copy_bandwidth_s: float = 0.0  # the copy measurements, at the start and the end of each device
    load_s: float = 0.0  # importing and setting up the frameworks
    configs: int = 0

    def summary(self, wall_s: float, plugins_s: float = 0.0) -> dict:
        """The figures env.json records, wall_s being the sweep's whole time."""
        over = wall_s - self.measured_s
        return {"wall_s": round(wall_s, 3), "measured_s": round(self.measured_s, 3),
                "overhead_s": round(over, 3),
                "overhead_pct_of_measured": round(100 * over / self.measured_s, 1) if self.measured_s else None,
                "configs": self.configs,
                "per_config_overhead_s": round((self.configs_s - self.measured_s) / self.configs, 4)
                if self.configs else None,
                "parts_s": {"inputs": round(self.inputs_s, 3), "copy_bandwidth": round(self.copy_bandwidth_s, 3),
                            "load_frameworks": round(self.load_s, 3), "load_plugins": round(plugins_s, 3),
                            "warm_up_and_rest_of_configs": round(self.configs_s - self.measured_s - self.inputs_s,
                                                                 3)},
                "inputs_made": self.inputs_made}


@dataclass
class BenchPlan(Selection):
    sizes: list[tuple[int, int]]
    min_time: float = 0.2
    threads: int | None = None
    shard: Shard = field(default_factory=Shard)
    order: str = "grid"  # "random": each run shuffles its configurations (seeded) so drift is spread evenly
    seed: int | None = None
    copy: dict[str, tuple[float, str]] = field(default_factory=dict)
    copy_end: dict[str, float] = field(default_factory=dict)  # measured again after each backend's sweep
    modes: list[str] | None = None  # None: each framework's own mode (suite.modes)
    costs: SweepCosts = field(default_factory=SweepCosts)


def _copy_source(plan: BenchPlan, device: str, backend):
    return loaded("numpy", plan.threads) if device == "cpu" and "numpy" in _installed() else backend


def _copy_for(plan: BenchPlan, device: str, backend) -> tuple[float, str]:
    """One copy bandwidth per device, shared by every backend: numpy on the CPU, else this backend."""
    if device not in plan.copy:
        src = _copy_source(plan, device, backend)
        nbytes = min(COPY_BYTES, src.free_memory(device) // 4)
        plan.copy[device] = copy_bandwidth(src, device, nbytes, max(plan.min_time, 0.5))
    return plan.copy[device]


def _copy_again(plan: BenchPlan, device: str, backend) -> float:
    """The same copy measurement after the sweep: a run whose calibration moved meanwhile ran on a
    machine that changed under it (compare flags it unstable)."""
    src = _copy_source(plan, device, backend)
    nbytes = min(COPY_BYTES, src.free_memory(device) // 4)
    plan.copy_end[device] = copy_bandwidth(src, device, nbytes, max(plan.min_time, 0.5))[0]
    return plan.copy_end[device]


def ordered(configs: list, order: str, seed: int | None) -> list:
    """The run's configurations in grid order, or shuffled with the run's own seed."""
    if order == "grid":
        return list(configs)
    if order != "random":
        raise ValueError(f"order must be 'grid' or 'random', got {order!r}")
    perm = np.random.default_rng(seed).permutation(len(configs))
    return [configs[i] for i in perm]


def _installed() -> list[str]:
    from suite.backend_api import discover

    return [n for n, i in discover().items() if i.installed]


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in TIMING_COLUMNS:
        if col not in df:
            df[col] = np.nan
    return df[TIMING_COLUMNS]


@contextlib.contextmanager
def _signals_deferred():
    """^C or SIGTERM while finished rows are written is acted on right after the write, so it is never cut in
    half (in the main thread only: elsewhere the signal handlers cannot be swapped)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if got:
            signal.raise_signal(got[0])  # the handler it would have met: KeyboardInterrupt, cli's Terminated


def _configs(plan: BenchPlan) -> list[tuple]:
    """This shard's configurations, in the run's order; within a size and dtype (grid order) every op, impl
    and pass runs on the same inputs."""
    configs = [(s, dt, op, impl, p) for s in plan.sizes for dt in plan.dtypes for op in plan.ops
               for impl in plan.impls for p in plan.passes]
    return ordered(plan.shard.take(configs), plan.order, plan.seed)


def run_bench(plan: BenchPlan, progress: bool | None = None,
              on_backend: Callable[[pd.DataFrame], None] | None = None) -> tuple[pd.DataFrame, RunInfo]:
    """Every selected configuration (this shard's share of them), backend after backend;
    `on_backend(df)` gets each backend's rows when it is done, and on ^C or SIGTERM the rows finished
    so far (then the interrupt goes on). Progress: suite.progress (a bar, or plain lines in a pipe);
    where the time went: plan.costs."""
    info = RunInfo()
    mine = _configs(plan)
    bar = progress_bar(len(mine) * len(plan.backends) * len(plan.devices), "timing", "config", progress)
    frames: list[pd.DataFrame] = []
    rows: list[dict] = []

    def keep() -> None:
        nonlocal rows
        if rows:
            frames.append(_frame(rows))
            rows = []
            if on_backend is not None:
                with _signals_deferred():
                    on_backend(frames[-1])

    with shared_inputs() as cache:
        try:
            for name in plan.backends:
                t0 = time.perf_counter()
                backend = loaded(name, plan.threads)
                plan.costs.load_s += time.perf_counter() - t0
                usable = [d for d in plan.devices if _usable(backend, d, info)]
                bar.total -= len(mine) * (len(plan.devices) - len(usable))  # progress counts what runs
                for device in usable:
                    _sweep_device(plan, backend, device, mine, bar, info, rows)
                keep()
        except KeyboardInterrupt:
            keep()  # the finished configurations are kept; the caller marks the run interrupted
            raise
        finally:
            bar.close()
            plan.costs.inputs_s, plan.costs.inputs_made = cache.seconds, cache.made
    return (pd.concat(frames, ignore_index=True) if frames else _frame([])), info


def _usable(backend, device: str, info: RunInfo) -> bool:
    reason = backend.devices().get(device, f"no device {device}")
    if reason is not None:
        info.skipped.append(f"{backend.name}/{device}: {reason}")
    return reason is None


def _sweep_device(plan: BenchPlan, backend, device: str, mine: list[tuple], bar, info: RunInfo,
                  rows: list[dict]) -> None:
    """One backend's configurations on one device, each row appended to `rows` as soon as it is done (an
    interrupt keeps them)."""
    name = backend.name
    info.frameworks[name] = backend.version
    info.threads[name] = backend.threads()
    info.devices[f"{name}/{device}"] = backend.device_name(device)
    t0 = time.perf_counter()
    copy_gbps, _ = _copy_for(plan, device, backend)
    plan.costs.copy_bandwidth_s += time.perf_counter() - t0
    free = backend.free_memory(device)
    modes = usable_modes(backend, device, plan.modes, info)
    bar.total += len(mine) * (len(modes) - 1)  # one tick per configuration and mode
    first = len(rows)
    # the modes side by side: each configuration eager, then compiled, before the next one
    for (batch, vocab), dtype, op, impl, pass_, mode in [(*c, m) for c in mine for m in modes]:
        if not plugins.runs_on(impl, name):  # a plug-in is timed on its own framework only
            bar.total -= 1
            continue
        bar.set_postfix_str(f"{name} {device} {mode} {dtype} {batch}x{vocab} {op} {impl} {pass_}", refresh=False)
        t_config = time.perf_counter()
        rows.append(_config_row(plan, backend, device, mode, dtype, batch, vocab, op, impl, pass_, copy_gbps, free))
        rows[-1]["overhead_s"] = time.perf_counter() - t_config - (rows[-1].get("measured_s") or 0.0)
        plan.costs.configs_s += time.perf_counter() - t_config
        plan.costs.measured_s += rows[-1].get("measured_s") or 0.0
        plan.costs.configs += 1
        bar.update(1)
    t0 = time.perf_counter()
    end = _copy_again(plan, device, backend)
    plan.costs.copy_bandwidth_s += time.perf_counter() - t0
    for row in rows[first:]:
        row["copy_gbps_end"] = end


def _config_row(plan: BenchPlan, backend, device: str, mode: str, dtype: str, batch: int, vocab: int, op: str,
                impl: str, pass_: str, copy_gbps: float, free: int) -> dict:
    """One configuration's row: its timing, a skip (not enough memory) or the error it raised."""
    itemsize = np_dtype(dtype).itemsize
    row = {"backend": backend.name, "backend_version": backend.version, "device": device, "mode": mode,
           "dtype": dtype, "batch": batch, "vocab": vocab, "copy_gbps": copy_gbps, "op": op, "impl": impl,
           "pass": pass_, "bytes": traffic_bytes(op, pass_, batch, vocab, itemsize)}
    need = MEMORY_FACTOR * batch * vocab * itemsize
    if need > free:
        return {**row, "message": f"skipped: needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {device}"}
    try:
        row.update(bench_one(backend, device, dtype, op, impl, pass_, batch, vocab, plan.min_time, mode=mode))
        row["pct_of_copy"] = 100.0 * row["gbps"] / copy_gbps
        row["message"] = ""
    except Exception as exc:  # noqa: BLE001 - one failure is a row, the sweep goes on
        row["message"] = f"{backend.classify(exc)}: {type(exc).__name__}: {str(exc)[:200]}"
    return row


def plot_gbps(df: pd.DataFrame, path) -> None:
    """GB/s against vocab, one line per backend x impl (solid forward, dashed fwd+bwd), a panel per
    op x dtype, with the device's copy bandwidth as the ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df.gbps.notna()]
    ops, dtypes = sorted(ok.op.unique()), sorted(ok.dtype.unique())
    if ok.empty:
        return
    fig, axes = plt.subplots(len(ops), len(dtypes), figsize=(5 * len(dtypes), 3.6 * len(ops)), squeeze=False)
    for i, op in enumerate(ops):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            sub = ok[(ok.op == op) & (ok.dtype == dtype)]
            for (backend, device, impl, pass_), g in sub.groupby(["backend", "device", "impl", "pass"]):
                g = g.sort_values("bytes").groupby("vocab", as_index=False).last()  # largest batch per vocab
                ax.plot(g.vocab, g.gbps, marker="o", ms=3, linestyle="-" if pass_ == "forward" else "--",
                        label=f"{backend}/{device} {impl}{'' if pass_ == 'forward' else ' +bwd'}")
            for device, c in sub.groupby("device").copy_gbps.first().items():
                ax.axhline(c, color="grey", lw=0.8, ls=":")
                ax.annotate(f"{device} copy {c:.0f} GB/s", (0.01, c), xycoords=("axes fraction", "data"),
                            fontsize=7, color="grey", va="bottom")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{op} {dtype}", fontsize=10)
            ax.set_xlabel("vocab (classes)")
            ax.set_ylabel("GB/s")
            ax.grid(True, which="both", lw=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
