"""Writing a run: accuracy table (parquet + CSV) and env.json, all or nothing.

Files are written into a temporary directory beside the target and moved into place only when
every one of them is complete, so an interrupted run never leaves a half-written result.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
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


def environment(info, extra: dict | None = None) -> dict:
    """env.json: versions, machine, devices, threads, commit, time and the command line."""
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
    }
    if extra:
        env.update(extra)
    return env


def write_run(out: Path, tables: dict[str, pd.DataFrame], env: dict) -> list[Path]:
    """Write <name>.parquet and <name>.csv for every table, plus env.json, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        names = []
        for name, df in tables.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False)
            df.to_csv(tmp / f"{name}.csv", index=False)
            names += [f"{name}.parquet", f"{name}.csv"]
        (tmp / "env.json").write_text(json.dumps(env, indent=2, default=str))
        names.append("env.json")
        for n in names:
            os.replace(tmp / n, out / n)
        return [out / n for n in names]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
