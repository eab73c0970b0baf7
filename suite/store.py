"""The result store: every run as hive-partitioned parquet that pandas, pyarrow and DuckDB read as one
dataset with no code of ours.

    <root>/<table>/backend=<b>/backend_version=<v>/device=<d>/<run_id>[.shard-i-of-n].parquet
    <root>/runs/<run_id>/<table>[.shard-i-of-n].json          (env: versions, machine, command)

Each partition file is written to a hidden temporary file beside its final name (ignored by
pyarrow's dataset discovery, which skips names starting with '.' or '_') and renamed into place when
complete, so a killed run leaves no torn file and every partition finished before the kill survives.
Parquet pages carry CRC checksums, verified on reading, so bit rot is caught rather than graded.

A run claims `runs/<run_id>/<table>.json` (status "running") before computing and rewrites it with
status "complete" at the end: a killed run stays visibly incomplete, and a reused id is refused.
`load` reads file by file: a corrupt, foreign or wrongly typed file, or the files of an incomplete
run, are reported (path and reason) and skipped; the rest loads.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from suite.selection import UsageError

if TYPE_CHECKING:
    import pandas as pd

TABLES = ("accuracy", "timing")
DEFAULT_STORE = "results/local"  # git-ignored: a user's runs never dirty the published store in results/
PUBLISHED_STORE = "results"
PARTITIONS = ("backend", "backend_version", "device")
REQUIRED = {"accuracy": ("run_id", "dtype", "op", "impl", "pass", "case", "verdict"),
            "timing": ("run_id", "dtype", "op", "impl", "pass", "batch", "vocab", "median_s")}
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")
_STEM = re.compile(r"(?P<run>.+?)(?P<suffix>\.shard-(?P<i>\d+)-of-(?P<n>\d+))?")
# Arrow types the readers (compare, report) rely on; a file with another type is skipped, not half-read.
_STR, _INT, _NUM, _BOOL = "string", "integer", "number", "bool"
SCHEMA = {
    "accuracy": {"run_id": _STR, "dtype": _STR, "op": _STR, "impl": _STR, "pass": _STR, "case": _STR,
                 "verdict": _STR, "message": _STR, "max_abs_err": _NUM, "max_rel_err": _NUM, "max_ulp_err": _NUM,
                 "ulp_err_scaled": _NUM, "ulp_bound": _NUM, "n_nonfinite": _NUM, "n_flushed": _NUM,
                 "row_sum_dev": _NUM, "tv_to_t1": _NUM, "n_elements": _NUM, "n_classes": _NUM,
                 "temperature": _NUM, "exact_finite": _BOOL, "mode": _STR, "compile_s": _NUM},
    "timing": {"run_id": _STR, "dtype": _STR, "op": _STR, "impl": _STR, "pass": _STR, "message": _STR,
               "batch": _INT, "vocab": _INT, "bytes": _INT, "rounds": _INT, "number": _INT, "median_s": _NUM,
               "iqr_s": _NUM, "min_s": _NUM, "gbps": _NUM, "pct_of_copy": _NUM, "copy_gbps": _NUM,
               "compile_s": _NUM, "mode": _STR},
}
STALE_AFTER_S = 6 * 3600  # a temporary file of another host (or of no known process) older than this is litter
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
_PARTIAL = re.compile(r"\.partial-(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)-")


class StoreWriteError(Exception):
    """Writing the store failed part way (disk full, permissions): the CLI prints it, exit status 4."""


def os_reason(exc: OSError) -> str:
    """'No space left on device (ENOSPC)' rather than a traceback."""
    code = errno.errorcode.get(exc.errno or 0, "")
    return f"{exc.strerror or type(exc).__name__}{f' ({code})' if code else ''}"


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable by time (UTC), unique by a random suffix: 20261122T184500Z-3fa2c1."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id) or ".shard-" in run_id:
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def partial_prefix() -> str:
    """Temporary names say which process made them, so a later run can tell litter from work in progress."""
    return f".partial-{_HOST}-{os.getpid()}-"


def atomic_write(path: Path, write, exclusive: bool = False) -> None:
    """`write(tmp)` to a hidden file beside `path`, then rename it into place (no torn file, ever).

    The file gets the mode the umask gives a new file (mkstemp's 0600 would lock out a shared store).
    `exclusive`: fail with FileExistsError if `path` exists (a hard link is atomic and never replaces)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=partial_prefix(), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:160]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


def _arrow_kind(t) -> str | None:
    import pyarrow as pa

    if pa.types.is_null(t):
        return None  # an all-missing column: fine for an optional one
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t) \
            and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        return _STR
    if pa.types.is_boolean(t):
        return _BOOL
    if pa.types.is_integer(t):
        return _INT
    if pa.types.is_floating(t):
        return _NUM
    return str(t)


def _footer_problems(schema) -> list[str]:
    """The footer has no checksum; pandas' metadata in it repeats the column names, so a flipped bit in
    a name shows up as a disagreement (a file without that metadata is not checked)."""
    try:
        meta = schema.pandas_metadata
    except Exception as exc:  # noqa: BLE001 - the metadata itself is damaged
        return [f"damaged pandas metadata ({type(exc).__name__})"]
    if not meta:
        return []
    cols = [c for c in meta.get("columns", []) if not str(c.get("field_name", "")).startswith("__index_level_")]
    named = [str(c.get("field_name")) for c in cols]
    if any(str(c.get("name")) != str(c.get("field_name")) for c in cols) \
            or sorted(named) != sorted(n for n in schema.names if not n.startswith("__index_level_")):
        return ["the column names disagree with the file's pandas metadata (a damaged footer)"]
    return []


def schema_problems(table: str, schema) -> list[str]:
    """'median_s is string, expected number', one per column whose type the readers cannot use."""
    out = []
    for name, want in SCHEMA[table].items():
        if name not in schema.names:
            continue
        got = _arrow_kind(schema.field(name).type)
        if got is None and name not in REQUIRED[table]:
            continue
        if got != want and not (want == _NUM and got == _INT):
            out.append(f"{name} is {schema.field(name).type}, expected {want}")
    return out


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def check_writable(self) -> None:
        """A usage error now rather than a failure after the run: create the store and write (and
        remove) a probe file in it; then clear temporary files that killed runs left behind."""
        where = f"--store {str(self.root)!r}"
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{where} exists and is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{where} cannot be created: {os_reason(exc)}; choose a writable directory") from None
        try:
            fd, probe = tempfile.mkstemp(prefix=partial_prefix() + "probe-", dir=self.root)
            try:
                os.write(fd, b"\0" * 4096)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            raise UsageError(f"{where} is not writable: {os_reason(exc)}; choose a writable directory") from None
        removed = self.clean_partials()
        if removed:
            print(f"note: removed {removed} temporary file(s) left in {self.root} by killed runs", file=sys.stderr)

    def clean_partials(self, now: float | None = None) -> int:
        """Remove `.partial-*` litter: made by a process of this host that is gone, or older than
        STALE_AFTER_S (another host's, or unattributable). Work in progress is left alone."""
        now = time.time() if now is None else now
        removed = 0
        for p in self.root.rglob(".partial-*"):
            m = _PARTIAL.match(p.name)
            try:
                old = now - p.lstat().st_mtime > STALE_AFTER_S
                dead = bool(m) and m["host"] == _HOST and not _pid_alive(int(m["pid"]))
                if not (old or dead):
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed += 1
            except OSError:
                continue
        return removed

    # --- writing -------------------------------------------------------------------------------

    def partition_path(self, table: str, backend: str, version: str, device: str, run_id: str,
                       shard: Shard = Shard()) -> Path:
        parts = [f"{k}={_SAFE.sub('_', str(v))}" for k, v in zip(PARTITIONS, (backend, version, device), strict=True)]
        return self.root.joinpath(table, *parts, f"{run_id}{shard.suffix}.parquet")

    def write_table(self, table: str, df: pd.DataFrame, run_id: str, shard: Shard = Shard(),
                    paths: list[Path] | None = None) -> list[Path]:
        """One file per (backend, backend_version, device) in `df`, each renamed into place when whole
        (and appended to `paths` then, so a caller knows what was kept if a later one fails)."""
        paths = [] if paths is None else paths
        df = df.assign(run_id=run_id)
        for (backend, version, device), part in df.groupby(list(PARTITIONS), sort=False):
            path = self.partition_path(table, backend, version, device, run_id, shard)
            body = part.drop(columns=list(PARTITIONS)).reset_index(drop=True)
            atomic_write(path, lambda tmp, body=body: body.to_parquet(tmp, index=False, write_page_checksum=True))
            paths.append(path)
        return paths

    def meta_path(self, run_id: str, name: str) -> Path:
        return self.root / "runs" / run_id / f"{name}.json"

    def write_meta(self, run_id: str, name: str, meta: dict) -> Path:
        path = self.meta_path(run_id, name)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, default=str)))
        return path

    def existing(self, table: str, run_id: str) -> set[str]:
        """Shard suffixes ('' for an unsharded run) that `run_id` already has in `table`: by its
        status files and by its partition files."""
        found = set()
        for p in (self.root / "runs" / run_id).glob(f"{table}*.json"):
            rest = p.stem[len(table):]
            if rest == "" or re.fullmatch(r"\.shard-\d+-of-\d+", rest):
                found.add(rest)
        for pattern in (f"{run_id}.parquet", f"{run_id}.shard-*-of-*.parquet"):
            for p in (self.root / table).glob(f"*/*/*/{pattern}"):
                m = _STEM.fullmatch(p.stem)
                if m and m["run"] == run_id:
                    found.add(m["suffix"] or "")
        return found

    def _conflict(self, table: str, run_id: str, shard: Shard, have: set[str]) -> str | None:
        """Why `shard` of `run_id` cannot join what `run_id` already has (`have`: shard suffixes)."""
        what = ", ".join(sorted("the unsharded run" if s == "" else s.lstrip(".") for s in have))
        if shard.count == 1 and have:
            return f"already has {table} results ({what})"
        if shard.count > 1:
            counts = {int(_STEM.fullmatch(f"x{s}")["n"]) for s in have if s}
            if "" in have:
                return f"already has an unsharded {table} run; shards cannot be added to it"
            if counts - {shard.count}:
                return (f"already has {table} shards of {sorted(counts - {shard.count})[0]}, not {shard.count}; "
                        "give every shard of a run the same I/N count")
            if shard.suffix in have:
                return f"already has {table} shard {shard.index}/{shard.count}"
        return None

    def claim(self, table: str, run_id: str, shard: Shard, meta: dict) -> Path:
        """Mark `run_id` (this shard) as running in `table`, or refuse if that would mix it with results
        already there: a reused id, a full run and shards of one id, or shards of different counts.
        The claim is an atomic hard link, checked again once made, so concurrent runs cannot mix either."""
        hint = (f"choose another --run-id (e.g. {run_id}-2), or leave it out for a fresh one; {table} results "
                f"of {run_id!r} are in {self.root}")
        why = self._conflict(table, run_id, shard, self.existing(table, run_id))
        if why:
            raise UsageError(f"--run-id {run_id!r} {why}; {hint}")
        path = self.meta_path(run_id, table + shard.suffix)
        body = {**meta, "status": "running", "pid": os.getpid(), "host": _HOST,
                "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        try:
            atomic_write(path, lambda tmp: tmp.write_text(json.dumps(body, indent=2, default=str)), exclusive=True)
        except FileExistsError:  # a concurrent run took the id between the check and now
            raise UsageError(f"--run-id {run_id!r} was just claimed by another {table} run; {hint}") from None
        why = self._conflict(table, run_id, shard, self.existing(table, run_id) - {shard.suffix})
        if why:  # a concurrent run of another kind claimed the id at the same moment: both step back
            path.unlink(missing_ok=True)
            raise UsageError(f"--run-id {run_id!r} was claimed at the same moment by another {table} run that "
                             f"cannot mix with this one ({why}); {hint}")
        return path

    def status(self, run_id: str, name: str) -> tuple[str, str]:
        """('complete', '') or (status, why) for `runs/<run_id>/<name>.json`; runs written before
        status files existed have none and count as complete."""
        path = self.meta_path(run_id, name)
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            return "complete", ""
        except (OSError, ValueError) as exc:
            return "unknown", f"its status file {path} is unreadable ({type(exc).__name__})"
        st = meta.get("status", "complete") if isinstance(meta, dict) else "unknown"
        if st == "complete":
            return st, ""
        if st == "running" and meta.get("host") == _HOST and isinstance(meta.get("pid"), int):
            gone = not _pid_alive(meta["pid"])
            return st, (f"its process {meta['pid']} is gone: it was killed or crashed" if gone
                        else f"still running as process {meta['pid']}")
        return st, str(meta.get("error", "")) or f"status {st!r} in {path}"

    # --- reading -------------------------------------------------------------------------------

    def files(self, table: str) -> list[Path]:
        base = self.root / table
        if not base.is_dir():
            return []
        return sorted(p for p in base.rglob("*") if p.is_file()
                      and not any(part.startswith((".", "_")) for part in p.relative_to(base).parts))

    def load(self, table: str, problems: list[str] | None = None) -> pd.DataFrame:
        """Every readable file of `table` from complete runs, partition columns included; `problems`
        gets one line per skipped file (path and reason) and per incomplete run. Rows of runs written before
        the `mode` column existed get the mode they ran in (suite.modes.fill_mode)."""
        import pyarrow.parquet as pq

        problems = [] if problems is None else problems
        frames = []
        incomplete: dict[tuple[str, str], list[Path]] = {}
        statuses: dict[tuple[str, str], tuple[str, str]] = {}
        for path in self.files(table):
            rel = path.relative_to(self.root / table)
            keys = [p.split("=", 1) for p in rel.parts[:-1]]
            if len(keys) != len(PARTITIONS) or [k[0] for k in keys if len(k) == 2] != list(PARTITIONS) \
                    or path.suffix != ".parquet":
                problems.append(f"{path}: foreign file (expected {'/'.join(p + '=...' for p in PARTITIONS)}/"
                                "<run_id>.parquet)")
                continue
            stem = _STEM.fullmatch(path.stem)
            run_id, suffix = stem["run"], stem["suffix"] or ""
            if (run_id, suffix) not in statuses:
                statuses[run_id, suffix] = self.status(run_id, table + suffix)
            st, why = statuses[run_id, suffix]
            if st != "complete":
                incomplete.setdefault((f"{run_id}{suffix}", f"{st}: {why}"), []).append(path)
                continue
            try:
                arrow = pq.read_table(path, page_checksum_verification=True)
                missing = [c for c in REQUIRED[table] if c not in arrow.schema.names]
                wrong = schema_problems(table, arrow.schema) + _footer_problems(arrow.schema)
                df = None if missing or wrong else arrow.to_pandas()
            except Exception as exc:  # noqa: BLE001 - truncated, not parquet, bit rot: skip it
                problems.append(f"{path}: unreadable ({type(exc).__name__}: {_first_line(exc)})")
                continue
            if missing:
                problems.append(f"{path}: foreign file (no column {', '.join(missing)})")
                continue
            if wrong:
                problems.append(f"{path}: wrong column types ({'; '.join(wrong)})")
                continue
            for k, v in keys:
                df[k] = v
            frames.append(df)
        for (run, why), paths in incomplete.items():
            problems.append(f"run {run} ({table}) is incomplete ({why}); its {len(paths)} file(s) "
                            f"{table}/*/*/*/{run}.parquet are skipped (rerun under a new id)")
        import pandas as pd

        from suite.modes import fill_mode

        if not frames:  # every column the readers use, so a store holding only the other table still reports
            return pd.DataFrame(columns=list(dict.fromkeys([*PARTITIONS, *REQUIRED[table], *SCHEMA[table]])))
        df = fill_mode(pd.concat(frames, ignore_index=True))
        first = [*PARTITIONS, "mode"]
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
