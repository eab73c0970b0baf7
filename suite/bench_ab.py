"""Benchmark of the A/B protocol itself (not a timed test): its false alarms, its power and its time.

    python -m suite.bench_ab collect-torch [--runs 6] [--store .ab]    A, A again and A slowed 1.25x, interleaved
    python -m suite.bench_ab collect-pair --a PY --b PY --backends jax [--runs 6] [--store results]
    python -m suite.bench_ab analyze --store .ab --protocol ID [--pair-store results --pair ID]

`collect-torch` runs three arms over the nox sweep with torch: A and B are the same build (the A/A
control), S is the same build doing 25% more work in every timed call (the same op on 1.25x the
rows, in one call, reported as the batch asked for), so it is a known slowdown (about 1.25x where
the op is bandwidth-bound) that flows through the whole protocol (process, shuffling, pinning,
store, compare).
`analyze` prints the figures docs/comparing.md quotes: flags in A/A, regressions found in A vs S on
configurations of >= 1 MiB, improvements found by a version pair among the configurations whose
pooled median ratio is <= 0.7, and the protocol's time for one pair.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from suite.ab import DEFAULT_RUNS, NOX_SWEEP, Arm, new_protocol_id, run_protocol

MIB = 2**20


# --- the slowed build: 25% more work in every timed call -------------------------------------------

def slowed_bench_one(factor: float):
    """suite.timing.bench_one of a build that does `factor` times the work in every timed call: the same
    op, impl and pass, in one call, on round(batch * factor) rows; reported (bytes, GB/s) as the batch
    that was asked for. One call, not two, so the per-call overhead is not doubled: small inputs slow
    down by less than `factor`, bandwidth-bound ones by about `factor`."""
    from suite import timing

    original = timing.bench_one

    def bench_one(backend, device, dtype, op, impl, pass_, batch, vocab, min_time, seed=0, mode=None):
        from suite.dtypes import np_dtype

        row = original(backend, device, dtype, op, impl, pass_, max(batch, round(batch * factor)), vocab, min_time,
                       seed, mode)
        row["bytes"] = timing.traffic_bytes(op, pass_, batch, vocab, np_dtype(dtype).itemsize)
        row["gbps"] = row["bytes"] / row["median_s"] / 1e9
        return row

    return bench_one


def bench_slowed(factor: float, argv: list[str]) -> int:
    """`python -m suite bench ARGV` with the slowed bench_one (the S arm's command)."""
    from suite import bench, cli

    bench.bench_one = slowed_bench_one(factor)
    return cli.main(["bench", *argv])


# --- collecting --------------------------------------------------------------------------------------

def collect(arms: list[Arm], runs: int, backends: str, store: str, protocol: str | None, min_time: float,
            seed: int | None) -> str:
    import os

    protocol = protocol or new_protocol_id()
    cpus = sorted(os.sched_getaffinity(0))[-1:]  # as `python -m suite ab` by default: one CPU, one thread
    bench_args = ["--backends", backends, "--sizes", NOX_SWEEP, "--min-time", str(min_time)]
    print(f"protocol {protocol}: arms {', '.join(a.name for a in arms)}, {runs} runs each, CPUs {cpus}", flush=True)
    meta = run_protocol(arms, runs, bench_args, store, cpus, protocol, seed,
                        log=lambda s: print(s, flush=True))
    print(f"{protocol}: {meta['seconds'] / 60:.1f} min", flush=True)
    return protocol


# --- analysis -----------------------------------------------------------------------------------------

def _side(store, protocol: str, arm: str):
    from suite.compare import resolve

    tables = {t: store.load(t) for t in ("accuracy", "timing")}
    return resolve(tables, f"{protocol}:{arm}")


def judge(store, protocol: str, base: str, new: str, statistic: str = "median"):
    from suite.compare import Thresholds, compare

    return compare(_side(store, protocol, base), _side(store, protocol, new), Thresholds(statistic=statistic))


def _kinds(speed: pd.DataFrame) -> pd.Series:
    return speed.change.str.split(":").str[0]


def _input_bytes(df: pd.DataFrame) -> pd.Series:
    return df.batch * df.vocab * df.dtype.map({"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8})


def pair_seconds(store, protocol: str, arms: tuple[str, str]) -> float:
    """Wall time of the two arms' runs (for a three-arm collection: what a two-arm protocol would take)."""
    meta = json.loads((Path(store.root) / "runs" / protocol / "protocol.json").read_text())
    return sum(r["seconds"] for r in meta["runs"] if r["arm"] in arms)


def analyze(args: argparse.Namespace) -> int:
    from suite.store import Store

    out: dict = {"statistic": args.statistic}
    if args.protocol:
        store = Store(args.store)
        aa = judge(store, args.protocol, "A", "B", args.statistic)
        k = _kinds(aa.speed)
        out["aa"] = {"configurations": len(aa.speed), "unstable_runs": int(aa.stability.unstable.sum()),
                     "regressions": int((k == "regression").sum()),
                     "improvements": int((k == "improvement").sum()), "no change": int((k == "no change").sum()),
                     "inconclusive": int((k == "inconclusive").sum()),
                     "noise_median_pct": round(100 * float(aa.speed.noise.median()), 1),
                     "minutes_per_pair": round(pair_seconds(store, args.protocol, ("A", "B")) / 60, 1)}
        pw = judge(store, args.protocol, "A", "S", args.statistic)
        big = pw.speed[_input_bytes(pw.speed) >= MIB]
        kb = _kinds(big)
        out["power"] = {"configurations_ge_1MiB": len(big), "regressions": int((kb == "regression").sum()),
                        "fraction": round(float((kb == "regression").mean()), 3),
                        "median_ratio": round(float(big.time_ratio.median()), 3),
                        "other": {str(x): int(n) for x, n in kb[kb != "regression"].value_counts().items()},
                        "improvements_anywhere": int((_kinds(pw.speed) == "improvement").sum())}
    if args.pair:
        store = Store(args.pair_store)
        res = judge(store, args.pair, "A", "B", args.statistic)
        sp = res.speed
        pooled = (sp.median_s_new / sp.median_s_base).to_numpy()  # medians of all rounds of all runs
        fast = sp[pooled <= 0.7]
        kf = _kinds(fast)
        k = _kinds(sp)
        out["pair"] = {"configurations": len(sp), "ratio_le_0.7": len(fast),
                       "improvements_among_them": int((kf == "improvement").sum()),
                       "fraction": round(float((kf == "improvement").mean()), 3) if len(fast) else math.nan,
                       "all": {str(x): int(n) for x, n in k.value_counts().items()},
                       "minutes": round(pair_seconds(store, args.pair, ("A", "B")) / 60, 1)}
    print(json.dumps(out, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench-slowed"]:
        return bench_slowed(float(argv[1]), argv[2:])
    p = argparse.ArgumentParser(prog="python -m suite.bench_ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("collect-torch", help="A, A again and A slowed 1.25x (torch, nox sweep), interleaved")
    pr = sub.add_parser("collect-pair", help="two builds, interleaved (as `python -m suite ab`)")
    pr.add_argument("--a", required=True)
    pr.add_argument("--b", required=True)
    pr.add_argument("--backends", required=True)
    for q in (t, pr):
        q.add_argument("--runs", type=int, default=DEFAULT_RUNS)
        q.add_argument("--store", default=".ab")
        q.add_argument("--id", default=None)
        q.add_argument("--min-time", type=float, default=0.2)
        q.add_argument("--seed", type=int, default=None)
    a = sub.add_parser("analyze", help="docs/comparing.md's figures from collected protocols")
    a.add_argument("--store", default=".ab")
    a.add_argument("--protocol", default=None, help="id of a collect-torch protocol (A/A and power)")
    a.add_argument("--pair-store", default="results")
    a.add_argument("--pair", default=None, help="id of a version-pair protocol (improvements found)")
    a.add_argument("--statistic", choices=("min", "median"), default="min", help="per-run statistic judged")
    args = p.parse_args(argv)
    if args.command == "analyze":
        return analyze(args)
    py = sys.executable
    if args.command == "collect-torch":
        arms = [Arm.python("A", py), Arm.python("B", py),
                Arm("S", (py, "-m", "suite.bench_ab", "bench-slowed", "1.25"))]
        collect(arms, args.runs, "torch", args.store, args.id, args.min_time, args.seed)
    else:
        collect([Arm.python("A", args.a), Arm.python("B", args.b)], args.runs, args.backends, args.store, args.id,
                args.min_time, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
