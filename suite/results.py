"""What a run records about where it ran (env.json): versions, machine, devices, threads, commit."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent.parent)
        commit = out.stdout.strip()
        return commit if out.returncode == 0 and len(commit) == 40 else None
    except (OSError, subprocess.SubprocessError):
        return None


MALLOC_VARS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "THP_MEM_ALLOC_ENABLE")


def environment(info, extra: dict | None = None) -> dict:
    """env.json: versions, machine, devices, threads, commit, time and the command line."""
    from suite.formulas import ONLINE_CHUNK
    from suite.reference import EXTENDED, LD

    env = {
        "utc_time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "reference": {"long_double_mantissa_bits": int(np.finfo(LD).nmant) + 1,
                      "extended_precision": bool(EXTENDED)},
        "frameworks": info.frameworks,
        "devices": info.devices,
        "threads": info.threads,
        "skipped": info.skipped,
        "cpu_seconds": info.seconds,
        "online_chunk": ONLINE_CHUNK,  # classes per chunk of the `online` implementation
        "malloc_env": {v: os.environ[v] for v in MALLOC_VARS if v in os.environ},  # timings depend on it
    }
    if extra:
        env.update(extra)
    return env
