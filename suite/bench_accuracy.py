"""Benchmark: wall time of the full CPU accuracy matrix (every installed backend, dtype, op,
implementation, pass and catalog case). The README's target is <= 120 s on a 2-core machine;
this script measures and reports, it does not assert.

    python -m suite.bench_accuracy [--jobs N] [--repeat K] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from cases import CASES
from suite.backend_api import discover
from suite.dtypes import DTYPES
from suite.ops import IMPLS, OPS, PASSES
from suite.runner import Plan, run

TARGET_S = 120.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    backends = [n for n, i in discover().items() if i.installed]
    plan = Plan(backends=backends, devices=["cpu"], dtypes=list(DTYPES), ops=list(OPS), impls=list(IMPLS),
                passes=list(PASSES), cases=list(CASES))
    walls, rows, info = [], 0, None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        df, info = run(plan, progress=None, jobs=args.jobs)
        walls.append(time.perf_counter() - t0)
        rows = len(df)
    result = {
        "backends": backends, "cases": len(CASES), "rows": rows, "jobs": args.jobs, "cpus": os.cpu_count(),
        "wall_s": [round(w, 2) for w in walls], "median_wall_s": round(statistics.median(walls), 2),
        "target_s": TARGET_S, "target_met": statistics.median(walls) <= TARGET_S,
        "cpu_seconds": info.seconds if info else {},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
