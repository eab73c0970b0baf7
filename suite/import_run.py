"""Put a run made elsewhere (a GPU machine) into a store, rows and env.json byte for byte.

    python -m suite.import_run RUN.parquet RUN.json [--store results]

RUN.parquet is one partition file exactly as the store wrote it on the other machine (one backend, one
device) and RUN.json that run's env.json (`runs/<run_id>/<table>.json` there). The file lands at the path the
store gives it, `<table>/backend=<b>/backend_version=<v>/device=<d>/<run_id>.parquet`, with backend, version and
device taken from the env.json. Nothing is rewritten: the run is checked by the store's own reader (row
counts, partitions, column types, page checksums) in a scratch store first, and only a run that loads there
without a problem is copied in. Bad input: one line on stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from suite.selection import UsageError
from suite.store import (
    PUBLISHED_STORE,
    TABLES,
    Store,
    StoreWriteError,
    atomic_write,
    check_run_id,
    env_problem,
    os_reason,
)


def _env(path: Path) -> dict:
    try:
        env = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (expected the run's env.json)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not readable as JSON ({type(exc).__name__}); expected the run's env.json") from None
    why = env_problem(env)
    if why:
        raise UsageError(f"{path}: not a usable env.json: {why}")
    if env.get("status", "complete") != "complete":
        raise UsageError(f"{path}: the run is {env['status']!r}, not complete; only finished runs are imported")
    if env.get("table") not in TABLES:
        raise UsageError(f"{path}: 'table' is {env.get('table')!r}; expected one of {', '.join(TABLES)}")
    if not isinstance(env.get("run_id"), str):
        raise UsageError(f"{path}: no 'run_id' string; expected the env.json a run of the suite writes")
    check_run_id(env["run_id"])
    return env


def partition_of(env: dict, where: str) -> tuple[str, str, str]:
    """(backend, version, device) of a one-partition run, from what its env.json recorded."""
    parts = env.get("partitions")
    if parts is not None:
        if len(parts) != 1:
            raise UsageError(f"{where}: the run wrote {len(parts)} partitions; import them one run of one "
                             "backend and device at a time")
        keys = dict(p.split("=", 1) for p in next(iter(parts)).split("/")[:-1])
        return keys["backend"], keys["backend_version"], keys["device"]
    devices = [k.split("/", 1) for k in (env.get("devices") or {}) if "/" in k]
    if len(devices) != 1:
        raise UsageError(f"{where}: 'devices' records {len(devices)} backend/device pairs; expected exactly one "
                         "(a run of one backend on one device is one partition file)")
    backend, device = devices[0]
    version = (env.get("frameworks") or {}).get(backend)
    if not isinstance(version, str):
        raise UsageError(f"{where}: 'frameworks' records no version for {backend!r}")
    return backend, version, device


def _rows(path: Path, run_id: str) -> int:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["run_id"])
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (expected one partition file of the run)") from None
    except Exception as exc:  # noqa: BLE001 - not parquet, truncated, no run_id column
        raise UsageError(f"{path}: not readable as a partition file ({type(exc).__name__})") from None
    ids = set(table.column("run_id").to_pylist())
    if ids != {run_id}:
        raise UsageError(f"{path}: its rows' run_id is {', '.join(sorted(map(str, ids))) or 'missing'}, but the "
                         f"env.json is run {run_id!r}; give the env.json of the run that wrote this file")
    return table.num_rows


def _place(store: Store, table: str, part: tuple[str, str, str], run_id: str, parquet: Path,
           env_path: Path) -> list[Path]:
    dest = store.partition_path(table, *part, run_id)
    meta = store.meta_path(run_id, table)
    for p in (dest, meta):
        if p.exists():
            raise UsageError(f"{p} exists: run {run_id!r} is already in {store.root} (remove it to import again)")
    atomic_write(dest, lambda tmp: shutil.copyfile(parquet, tmp), exclusive=True)
    try:
        atomic_write(meta, lambda tmp: shutil.copyfile(env_path, tmp), exclusive=True)
    except BaseException:  # never half an import: rows without their env.json would load as a run of no status
        dest.unlink(missing_ok=True)
        raise
    return [dest, meta]


def import_run(parquet: Path, env_path: Path, root: Path) -> list[Path]:
    """Check, then copy; the two paths written. A UsageError (nothing written) for anything wrong."""
    env = _env(env_path)
    run_id, table = env["run_id"], env["table"]
    part = partition_of(env, str(env_path))
    rows = _rows(parquet, run_id)
    with tempfile.TemporaryDirectory() as scratch:  # the store's own reader, on the files exactly as they land
        trial = Store(scratch)
        _place(trial, table, part, run_id, parquet, env_path)
        problems: list[str] = []
        loaded = trial.load(table, problems)
        if problems:
            raise UsageError(f"{parquet}: the store would not load this run: {problems[0].replace(scratch, '<store>')}")
        if len(loaded) != rows:
            raise UsageError(f"{parquet}: {rows} rows in the file, but the store loads {len(loaded)}")
    return _place(Store(root), table, part, run_id, parquet, env_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m suite.import_run", description=__doc__.split("\n\n")[0])
    ap.add_argument("parquet", type=Path, help="one partition file of the run, as the store wrote it")
    ap.add_argument("env", type=Path, help="that run's env.json (runs/<run_id>/<table>.json in its store)")
    ap.add_argument("--store", type=Path, default=Path(PUBLISHED_STORE),
                    help=f"the store to import into (default: the published {PUBLISHED_STORE}/)")
    args = ap.parse_args(argv)
    try:
        written = import_run(args.parquet, args.env, args.store)
    except UsageError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except (OSError, StoreWriteError) as exc:
        print(f"error: writing {args.store} failed: {os_reason(exc) if isinstance(exc, OSError) else exc}",
              file=sys.stderr)
        return 4
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
