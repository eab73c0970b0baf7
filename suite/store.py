"""The result store: every run as hive-partitioned parquet that pandas, pyarrow and DuckDB read as one
dataset with no code of ours.

    <root>/<table>/backend=<b>/backend_version=<v>/device=<d>/<run_id>[.shard-i-of-n].parquet
    <root>/runs/<run_id>/<table>[.shard-i-of-n].json          (env: versions, machine, command)

Each partition file is written to a hidden temporary file beside its final name (ignored by
pyarrow's dataset discovery, which skips names starting with '.' or '_') and renamed into place when
complete, so a killed run leaves no torn file and every partition finished before the kill survives.
`load` reads file by file: a corrupt or foreign file is reported by path and skipped, the rest loads.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from suite.selection import UsageError

TABLES = ("accuracy", "timing")
PARTITIONS = ("backend", "backend_version", "device")
REQUIRED = {"accuracy": ("run_id", "dtype", "op", "impl", "pass", "case", "verdict"),
            "timing": ("run_id", "dtype", "op", "impl", "pass", "batch", "vocab", "median_s")}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable by time (UTC), unique by a random suffix: 20261122T184500Z-3fa2c1."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id) or ".shard-" in run_id:
        raise UsageError(f"--run-id {run_id!r} is not valid: use 1-100 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return run_id


@dataclass(frozen=True)
class Shard:
    """Slice i of n of a run's work list (1-based), taken round-robin so slices stay balanced and the
    union of all n slices is exactly the unsharded run."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if text is None:
            return cls()
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m or not 1 <= int(m[1]) <= int(m[2]):
            raise UsageError(f"--shard {text!r} is not valid: expected i/n with 1 <= i <= n, e.g. 2/4")
        return cls(int(m[1]), int(m[2]))

    def owns(self, k: int) -> bool:
        return k % self.count == self.index - 1

    def take(self, items: Sequence) -> list:
        return [x for k, x in enumerate(items) if self.owns(k)]

    @property
    def suffix(self) -> str:
        return "" if self.count == 1 else f".shard-{self.index}-of-{self.count}"


def atomic_write(path: Path, write) -> None:
    """`write(tmp)` to a hidden file beside `path`, then rename it into place (no torn file, ever)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def check_writable(self) -> None:
        """A usage error now rather than a failure after the run."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--store {str(self.root)!r} exists and is not a directory")

    # --- writing -------------------------------------------------------------------------------

    def partition_path(self, table: str, backend: str, version: str, device: str, run_id: str,
                       shard: Shard = Shard()) -> Path:
        parts = [f"{k}={_SAFE.sub('_', str(v))}" for k, v in zip(PARTITIONS, (backend, version, device), strict=True)]
        return self.root.joinpath(table, *parts, f"{run_id}{shard.suffix}.parquet")

    def write_table(self, table: str, df: pd.DataFrame, run_id: str, shard: Shard = Shard()) -> list[Path]:
        """One file per (backend, backend_version, device) in `df`, each renamed into place when whole."""
        paths = []
        df = df.assign(run_id=run_id)
        for (backend, version, device), part in df.groupby(list(PARTITIONS), sort=False):
            path = self.partition_path(table, backend, version, device, run_id, shard)
            body = part.drop(columns=list(PARTITIONS)).reset_index(drop=True)
            atomic_write(path, lambda tmp, body=body: body.to_parquet(tmp, index=False))
            paths.append(path)
        return paths

    def write_meta(self, run_id: str, name: str, meta: dict) -> Path:
        path = self.root / "runs" / run_id / f"{name}.json"
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, default=str)))
        return path

    # --- reading -------------------------------------------------------------------------------

    def files(self, table: str) -> list[Path]:
        base = self.root / table
        if not base.is_dir():
            return []
        return sorted(p for p in base.rglob("*") if p.is_file()
                      and not any(part.startswith((".", "_")) for part in p.relative_to(base).parts))

    def load(self, table: str, problems: list[str] | None = None) -> pd.DataFrame:
        """Every readable file of `table`, partition columns included; `problems` gets one line per
        skipped file (path and reason)."""
        import pyarrow.parquet as pq

        problems = [] if problems is None else problems
        frames = []
        for path in self.files(table):
            rel = path.relative_to(self.root / table)
            keys = [p.split("=", 1) for p in rel.parts[:-1]]
            if len(keys) != len(PARTITIONS) or [k[0] for k in keys if len(k) == 2] != list(PARTITIONS) \
                    or path.suffix != ".parquet":
                problems.append(f"{path}: foreign file (expected {'/'.join(p + '=...' for p in PARTITIONS)}/"
                                "<run_id>.parquet)")
                continue
            try:
                df = pq.read_table(path).to_pandas()
            except Exception as exc:  # noqa: BLE001 - truncated, not parquet, unreadable: skip it
                problems.append(f"{path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
                continue
            missing = [c for c in REQUIRED[table] if c not in df.columns]
            if missing:
                problems.append(f"{path}: foreign file (no column {', '.join(missing)})")
                continue
            for k, v in keys:
                df[k] = v
            frames.append(df)
        if not frames:
            return pd.DataFrame(columns=[*PARTITIONS, *REQUIRED[table]])
        df = pd.concat(frames, ignore_index=True)
        first = [*PARTITIONS]
        return df[first + [c for c in df.columns if c not in first]]

    def runs(self) -> dict[str, dict]:
        """run_id -> {table name: env dict} from runs/<run_id>/*.json (unreadable files are skipped)."""
        out: dict[str, dict] = {}
        for path in sorted((self.root / "runs").glob("*/*.json")):
            try:
                out.setdefault(path.parent.name, {})[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        return out
