"""`python -m suite ab`: the replicated, interleaved timing protocol for two builds (or one build twice, A/A).

Rounds inside one process are not independent (a slow spell of a shared machine outlasts many
rounds), so the unit of replication is a whole `python -m suite bench` run in a fresh process. Runs
of A and B alternate A B B A A B ... so a drift that is linear over a block lands equally on both;
every run shuffles its configurations with its own seed, so a slow spell hits different
configurations in every run; every run is pinned to the same CPUs with the same thread count. The
runs land in the store as `<protocol id>-<arm>-<k>`, and `compare <protocol id>:A <protocol id>:B`
(which this command runs at the end) judges one time per run and configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from suite.selection import UsageError

# The nox sessions' sweep (noxfile.DEFAULT_SIZES, 252 configurations per framework with the bench defaults).
NOX_SWEEP = "64x16,8x1000,16x4096,256x32768,83x50257,64x131072,16x262147"
DEFAULT_RUNS = 6  # per arm; with the exact test at alpha 0.01 this allows one out-of-order pair of runs
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
# glibc's malloc returns a large freed block to the kernel (munmap, heap trimming) depending on what the
# process allocated before: then the next call's fresh output page-faults on every page. A 32 MiB
# torch.softmax took 16 ms that way and 3.5 ms from recycled memory (jax.jit: 17 and 4.5 ms), and which
# of the two a run got depended on its shuffled order: the bimodal run-to-run noise of the large inputs.
# Every run of every arm keeps freed memory instead (a user's value of GLIBC_TUNABLES is kept as is).
ALLOCATOR_ENV = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"}


@dataclass(frozen=True)
class Arm:
    """One side of the protocol: a name (A, B, ...) and the argv prefix that runs `suite bench` in its own
    python, e.g. [".venvs/jax-0.9.2/bin/python", "-m", "suite", "bench"]."""

    name: str
    command: tuple[str, ...]

    @classmethod
    def python(cls, name: str, python: str) -> Arm:
        return cls(name, (python, "-m", "suite", "bench"))


def schedule(arms: Sequence[str], runs: int) -> list[tuple[str, int]]:
    """(arm, k) in run order: block k takes the arms in order, reversed on every other block (ABBA...)."""
    out = []
    for k in range(1, runs + 1):
        out += [(a, k) for a in (arms if k % 2 else list(reversed(arms)))]
    return out


def run_id(protocol: str, arm: str, k: int) -> str:
    return f"{protocol}-{arm}-{k:02d}"


def new_protocol_id() -> str:
    return f"ab-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def _pin(cpus: list[int]) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, cpus)


def run_protocol(arms: Sequence[Arm], runs: int, bench_args: Sequence[str], store: str | Path, cpus: list[int],
                 protocol: str, seed: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Every run of every arm, interleaved; returns (and writes to <store>/runs/<protocol>/protocol.json)
    what ran, in which order, with which seeds, CPUs and threads, and how long each run took."""
    import numpy as np

    by_name = {a.name: a for a in arms}
    order = schedule([a.name for a in arms], runs)
    seeds = np.random.SeedSequence(seed).generate_state(len(order)).tolist()
    env = {**ALLOCATOR_ENV, **os.environ, **{v: str(len(cpus)) for v in THREAD_VARS}}
    meta = {"protocol": protocol, "arms": {a.name: list(a.command) for a in arms}, "runs_per_arm": runs,
            "bench_args": list(bench_args), "cpu_affinity": cpus, "threads": len(cpus),
            "thread_env": {v: env[v] for v in THREAD_VARS},
            "allocator_env": {v: env[v] for v in ALLOCATOR_ENV}, "seed": seed, "command": sys.argv,
            "utc_start": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "runs": []}
    path = Path(store) / "runs" / protocol / "protocol.json"
    t_all = time.perf_counter()
    for i, ((name, k), run_seed) in enumerate(zip(order, seeds, strict=True)):
        rid = run_id(protocol, name, k)
        cmd = [*by_name[name].command, *bench_args, "--store", str(store), "--run-id", rid, "--order", "random",
               "--seed", str(run_seed), "--no-progress"]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, preexec_fn=_pin(cpus), env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        meta["runs"].append({"run_id": rid, "arm": name, "k": k, "seed": run_seed, "seconds": round(seconds, 1),
                             "returncode": p.returncode})
        log(f"[{i + 1}/{len(order)}] {rid}: {'ok' if p.returncode == 0 else f'FAILED ({p.returncode})'} "
            f"in {seconds:.0f} s")
        if p.returncode != 0:
            log("\n".join(p.stderr.strip().splitlines()[-5:]))
        _write_meta(path, meta)
    meta["seconds"] = round(time.perf_counter() - t_all, 1)
    _write_meta(path, meta)
    return meta


def _write_meta(path: Path, meta: dict) -> None:
    from suite.store import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))


# --- command line ------------------------------------------------------------------------------------

def add_parser(sub) -> None:
    ab = sub.add_parser("ab", help="replicated, interleaved timing runs of two builds (A B B A ...), then compare")
    ab.add_argument("--a", required=True, metavar="PYTHON", help="python of the base build (e.g. a nox venv's)")
    ab.add_argument("--b", required=True, metavar="PYTHON", help="python of the new build (the same one: A/A)")
    ab.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                    help=f"runs per side, each in a fresh process (default {DEFAULT_RUNS})")
    ab.add_argument("--backends", required=True, metavar="A,B", help="frameworks to time (passed to bench)")
    for name in ("dtypes", "ops", "impls", "passes", "devices"):
        ab.add_argument(f"--{name}", default=None, metavar="A,B", help=f"passed to bench (default: bench's {name})")
    ab.add_argument("--sizes", default=NOX_SWEEP, metavar="BxV,...", help=f"the sweep (default: nox's, {NOX_SWEEP})")
    ab.add_argument("--min-time", type=float, default=0.2, help="bench --min-time of every run (default 0.2)")
    ab.add_argument("--cpus", default=None, metavar="0,1",
                    help="CPUs every run is pinned to, one thread each; 'all': this process's affinity "
                         "(default: its last CPU, one thread: on a shared machine more threads stall at barriers)")
    ab.add_argument("--seed", type=int, default=None, help="seed of the runs' seeds (default: fresh entropy)")
    ab.add_argument("--id", default=None, help="protocol id (default: ab-<UTC time>-<random>)")
    ab.add_argument("--store", default="results", metavar="DIR", help="result store (default: results)")
    ab.add_argument("--out", default=None, metavar="FILE.md",
                    help="comparison report (default: <store>/comparisons/<id>.md)")


def _python(text: str, flag: str) -> str:
    path = shutil.which(text) or (text if Path(text).is_file() else None)
    if path is None:
        raise UsageError(f"{flag} {text!r} is not a python executable (give a path such as "
                         ".venvs/jax-0.9.2/bin/python or .nox/<session>/bin/python)")
    p = subprocess.run([path, "-c", "import suite"], capture_output=True, text=True, check=False, timeout=120)
    if p.returncode != 0:
        raise UsageError(f"{flag} {text!r} cannot import the suite; install it there: {path} -m pip install -e .")
    return path


def _cpus(text: str | None) -> list[int]:
    have = sorted(os.sched_getaffinity(0))
    if text is None:
        return have[-1:]
    if text == "all":
        return have
    try:
        cpus = sorted({int(c) for c in text.split(",") if c.strip()})
    except ValueError:
        cpus = []
    if not cpus or not set(cpus) <= set(have):
        raise UsageError(f"--cpus {text!r} is not valid: give CPU numbers from {','.join(map(str, have))}")
    return cpus


def cmd_ab(args: argparse.Namespace) -> int:
    from suite.compare import Thresholds, compare, render_markdown, resolve, write_csv
    from suite.store import Store, atomic_write, check_run_id

    if args.runs < 1:
        raise UsageError(f"--runs must be a positive integer, got {args.runs}")
    if not args.min_time > 0:
        raise UsageError(f"--min-time must be positive, got {args.min_time}")
    protocol = check_run_id(args.id) if args.id else new_protocol_id()
    arms = [Arm.python("A", _python(args.a, "--a")), Arm.python("B", _python(args.b, "--b"))]
    cpus = _cpus(args.cpus)
    bench_args = ["--backends", args.backends, "--sizes", args.sizes, "--min-time", str(args.min_time)]
    for name in ("dtypes", "ops", "impls", "passes", "devices"):
        if getattr(args, name):
            bench_args += [f"--{name}", getattr(args, name)]
    store = Store(args.store)
    store.check_writable()
    print(f"protocol {protocol}: {args.runs} runs per side, A B B A ..., pinned to CPUs {cpus}")
    meta = run_protocol(arms, args.runs, bench_args, store.root, cpus, protocol, args.seed)
    failed = [r["run_id"] for r in meta["runs"] if r["returncode"] != 0]
    if failed:
        print(f"warning: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    tables = {t: store.load(t) for t in ("accuracy", "timing")}
    base, new = f"{protocol}:A", f"{protocol}:B"
    result = compare(resolve(tables, base), resolve(tables, new), Thresholds())
    md = render_markdown(result, base, new, Thresholds())
    out = Path(args.out) if args.out else store.root / "comparisons" / f"{protocol}.md"
    atomic_write(out, lambda tmp: tmp.write_text(md, encoding="utf-8"))
    write_csv(result, out)
    print(md)
    print(f"protocol took {meta['seconds'] / 60:.1f} min -> {out}")
    return 1 if result.regressions else 0
