"""How much memory a run needs, from the size of its case files: the one model of docs/memory.md.

A worker process holds its task's cases (the logits and probability targets, float64), the inputs and
cotangents of one (case, dtype) twice (the suite's and the framework's copies), one (op, pass) of the
reference (suite/reference.py), one implementation's output and temporaries, and fixed costs (Python, the
libraries, the reference's and the scoring's temporaries of one block of rows). So its peak is a fixed part
plus a number of bytes per value of the case files; the supervising process holds the case files too. The
figures below were measured (docs/memory.md: command and runs) with the numpy backend, all dtypes, ops,
implementations and passes, on a float64 case of 64 rows (the worst dtype: float64 inputs are the widest).
A run is refused before it computes anything when supervisor + workers would not fit (`check`).
"""

from __future__ import annotations

import os

MIB = 2**20
GIB = 2**30
# measured peaks (max RSS, docs/memory.md), rounded up
WORKER_FIXED = 200 * MIB  # Python, numpy, scipy, pandas, one block of rows' temporaries
WORKER_PER_VALUE = 160  # bytes per value of the case being computed (its own 16 included)
CASE_BYTES = 16  # per value of every other case of the run: its float64 logits and probability targets
PARENT_FIXED = 140 * MIB
PARENT_PER_VALUE = 48  # per value of all cases: the loaded file, its logits and targets, a task being pickled
HEADROOM = 0.9  # of the available memory: the model is measured, not a bound on every allocator's behaviour


def worker_bytes(largest: int, total: int) -> int:
    """Peak resident memory of one worker for cases of `total` values in all, the largest of `largest`."""
    return WORKER_FIXED + WORKER_PER_VALUE * largest + CASE_BYTES * (total - largest)


def run_bytes(largest: int, total: int, workers: int) -> int:
    """Peak resident memory of a run: the supervisor and `workers` workers at their peaks at once."""
    return PARENT_FIXED + PARENT_PER_VALUE * total + workers * worker_bytes(largest, total)


def fitting_values(available: int, workers: int, others: int = 0) -> int:
    """The most values one case file may hold for a run with `workers` workers to fit in `available` bytes,
    beside other cases of `others` values (each smaller)."""
    room = HEADROOM * available - run_bytes(0, others, workers)
    return max(int(room // (PARENT_PER_VALUE + workers * WORKER_PER_VALUE)), 0)


def available_bytes() -> int:
    """Memory available to new processes now (Linux: MemAvailable), else the machine's physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return 2**63  # unknown: nothing is refused


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def refusal(sizes: list[int], workers: int, jobs_given: bool = True, available: int | None = None) -> str | None:
    """Why a run over cases of `sizes` values each in `workers` workers would not fit in memory (None if it
    fits): the numbers, and how large the largest case could be."""
    available = available_bytes() if available is None else available
    largest, total = max(sizes, default=0), sum(sizes)
    need = run_bytes(largest, total, workers)
    if need <= HEADROOM * available:
        return None
    others = total - largest
    fit, one = fitting_values(available, workers, others), fitting_values(available, 1, others)
    hint = f"a case of at most {fit:,} values fits" + (f" ({one:,} with --jobs 1)" if workers > 1 else "")
    what = "use fewer rows" + (" or --jobs 1" if workers > 1 and one >= largest else "")
    jobs = "" if jobs_given or workers == 1 else "; --jobs defaults to the number of CPUs"
    return (f"the largest case holds {largest:,} values ({total:,} in all): the run would need about "
            f"{_gib(need)} ({workers} worker{'s' if workers != 1 else ''} x {_gib(worker_bytes(largest, total))} "
            f"+ the supervisor; docs/memory.md), more than {HEADROOM:.0%} of the {_gib(available)} available; "
            f"{hint}: {what}{jobs}")
