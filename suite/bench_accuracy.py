"""Benchmark: wall time of the main job, the full CPU accuracy matrix, as a new user runs it
(`python -m suite run`, every installed backend, dtype, op, implementation, pass and catalog case, in a
fresh process, framework imports included). Cold: JAX's persistent compilation cache empty (a fresh
directory); warm: the same command again with that cache filled; edited: once more after deleting the
suite's own kept programs (backends/_jax_programs.py), as after an edit of the suite's code (they are
compiled again, outside JAX's persistent cache, so this costs what a cold run does). The targets
(docs/performance.md) are <= 120 s cold and <= 60 s warm on a 2-core machine; this script measures and reports,
it does not assert.

    python -m suite.bench_accuracy [--warm-repeat K] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TARGETS_S = {"cold": 120.0, "warm": 60.0}


def _run_once(store: str, cache: str) -> tuple[float, str]:
    env = {**os.environ, "SUITE_JAX_CACHE": cache}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "suite", "run", "--store", store, "--no-progress"], env=env,
                       capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"python -m suite run failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    seconds = re.search(r"time per backend.*", p.stdout)
    return wall, seconds.group(0) if seconds else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warm-repeat", type=int, default=2, help="warm runs after the cold one (default 2)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    result: dict = {"cpus": os.cpu_count(), "targets_s": TARGETS_S}
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        cache = os.path.join(tmp, "jax-cache")
        runs = []
        kinds = ["cold"] + ["warm"] * args.warm_repeat + ["edited"]
        for i, kind in enumerate(kinds):
            if kind == "edited":  # as after an edit of the suite's code: the suite's programs miss
                shutil.rmtree(os.path.join(cache, "programs"), ignore_errors=True)
            wall, per_backend = _run_once(os.path.join(tmp, f"store{i}"), cache)
            runs.append({"kind": kind, "wall_s": round(wall, 1), "cpu": per_backend})
            print(f"{kind}: {wall:.1f} s  ({per_backend})", flush=True)
    result["runs"] = runs
    for kind in TARGETS_S:
        walls = [r["wall_s"] for r in runs if r["kind"] == kind]
        if walls:
            result[f"{kind}_s"] = statistics.median(walls)
            result[f"{kind}_target_met"] = result[f"{kind}_s"] <= TARGETS_S[kind]
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
