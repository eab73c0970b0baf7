"""Fidelity of the suite's timer, measured (a benchmark script, not a test):

1. torch CPU fused softmax (float32) at sizes >= 1 MiB: the suite's median against
   torch.utils.benchmark.Timer(...).blocked_autorange() in the same process (target: within +-5 %);
2. two back-to-back runs of the suite's timer: CoV of the two medians (target <= 5 %);
3. harness overhead: the suite's timer on an empty callable, as a share of a 100 us call (target <= 1 %).

    python -m suite.bench_fidelity [--min-time 0.5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from suite.timing import measure

SIZES = ((64, 4096), (64, 32768), (64, 131072), (256, 131072))  # 1, 8, 32, 128 MiB of float32


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-time", type=float, default=0.5)
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch
    import torch.utils.benchmark as tb

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = "cuda" if args.device == "gpu" else "cpu"
    wait = (lambda out: torch.cuda.synchronize()) if dev == "cuda" else (lambda out: None)
    rows = []
    for batch, vocab in SIZES:
        x = torch.randn(batch, vocab, device=dev)
        fn = lambda x=x: torch.softmax(x, dim=-1)  # noqa: E731
        a = measure(fn, wait, min_time=args.min_time).median
        timer = tb.Timer(stmt="torch.softmax(x, dim=-1)", globals={"torch": torch, "x": x},
                         num_threads=torch.get_num_threads())  # Timer defaults to 1 thread
        ref = timer.blocked_autorange(min_run_time=args.min_time).median  # syncs CUDA itself
        b = measure(fn, wait, min_time=args.min_time).median
        ours = statistics.median([a, b])
        rows.append({"batch": batch, "vocab": vocab, "mib": batch * vocab * 4 / 2**20, "suite_run1_s": a,
                     "suite_run2_s": b, "torch_timer_s": ref, "diff_pct": 100 * (ours - ref) / ref,
                     "cov_pct": 100 * statistics.stdev([a, b]) / statistics.mean([a, b])})
    empty = measure(lambda: None, lambda out: None, min_time=args.min_time).median
    result = {
        "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch": torch.__version__,
        "threads": torch.get_num_threads(), "min_time_s": args.min_time, "sizes": rows,
        "max_abs_diff_pct": max(abs(r["diff_pct"]) for r in rows), "max_cov_pct": max(r["cov_pct"] for r in rows),
        "empty_call_s": empty, "overhead_pct_of_100us": 100 * empty / 100e-6,
    }
    result["targets_met"] = {"within_5pct_of_torch_timer": result["max_abs_diff_pct"] <= 5,
                             "cov_le_5pct": result["max_cov_pct"] <= 5,
                             "overhead_le_1pct": result["overhead_pct_of_100us"] <= 1}
    print(json.dumps(result, indent=2, default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
