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


# Packages whose version can change a row, recorded when no lock file is at hand (an installed copy).
ROW_PACKAGES = ("numpy", "scipy", "ml_dtypes", "mpmath", "pandas", "pyarrow", "jax", "jaxlib", "tensorflow-cpu",
                "tensorflow", "torch", "keras")
LOCK_FILE = Path(__file__).resolve().parent.parent / "constraints" / "lock-cpu.txt"
LOCK_COMMAND = 'python -m pip install -e ".[all,test,gpu-kernels,zoo]" -c constraints/lock-cpu.txt'


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    """{canonical name: version} of every `name==version` line of a pip-compile lock file."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name.split("[", 1)[0].strip())] = version.split(";", 1)[0].strip()
    return pins


def installed(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(lock: Path = LOCK_FILE) -> dict[str, str | None]:
    """{canonical name: installed version, None if absent}: every package the lock pins (the tested set),
    else the packages that can change a row (ROW_PACKAGES) that are installed."""
    from packaging.utils import canonicalize_name

    try:
        names = sorted(read_lock(lock))
    except OSError:
        names = []
    if names:
        return {n: installed(n) for n in names}
    found = {canonicalize_name(n): installed(n) for n in ROW_PACKAGES}
    return {n: v for n, v in sorted(found.items()) if v is not None}


def lock_drift(pins: dict[str, str], versions: dict[str, str | None], what: str = "the lock") -> str:
    """'' when every pinned package is installed at its pin; else one line per difference and the command
    that installs the tested set."""
    from packaging.utils import canonicalize_name

    versions = {canonicalize_name(k): v for k, v in versions.items()}
    bad = [(n, want, versions.get(canonicalize_name(n))) for n, want in sorted(pins.items())
           if versions.get(canonicalize_name(n)) != want]
    if not bad:
        return ""
    lines = [f"{len(bad)} installed package(s) differ from {what}:"]
    lines += [f"  {n}: installed {have or 'not installed'}, {what} has {want}" for n, want, have in bad]
    lines.append(f"install the tested set: {LOCK_COMMAND}")
    return "\n".join(lines)


def recorded_packages(env: dict | None) -> dict[str, str] | None:
    """The package versions an env.json records ({canonical name: version}), None for one written before
    they were recorded ("not recorded")."""
    from packaging.utils import canonicalize_name

    if not isinstance(env, dict) or not isinstance(env.get("packages"), dict):
        return None
    return {canonicalize_name(k): str(v) for k, v in env["packages"].items() if v is not None}


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
        "cpu_seconds": getattr(info, "cpu", None) or info.seconds,  # `run`: the workers' process CPU time
        "isolation_seconds": getattr(info, "isolation", {}),  # copies, checks and settings around each call
        "online_chunk": ONLINE_CHUNK,  # classes per chunk of the `online` implementation
        "malloc_env": {v: os.environ[v] for v in MALLOC_VARS if v in os.environ},  # timings depend on it
        "packages": package_versions(),  # every locked package's installed version (None: not installed)
    }
    if extra:
        env.update(extra)
    return env
