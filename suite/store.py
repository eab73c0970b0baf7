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


# fields of env.json that the readers use, and the JSON type each must have
_ENV_FIELDS = {"status": str, "error": str, "host": str, "pid": int, "rows": int, "frameworks": dict,
               "devices": dict, "packages": dict, "partitions": dict}
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
               bool: "a boolean", type(None): "null"}


def _json_kind(value) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def env_problem(meta) -> str:
    """'' for a usable env.json; else what is wrong with it ('not a JSON object but an array', ...)."""
    if not isinstance(meta, dict):
        return f"not a JSON object but {_json_kind(meta)}"
    for name, want in _ENV_FIELDS.items():
        value = meta.get(name)
        if name in meta and (not isinstance(value, want) or isinstance(value, bool) and want is int):
            return f"its {name!r} is {_json_kind(value)}, expected {_JSON_NAMES[want]}"
    parts = meta.get("partitions", {})
    bad = [k for k, v in parts.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad:
        return f"its 'partitions' records no row count for {bad[0]!r}"
    return ""


def _listed(items: Sequence[str], most: int = 3) -> str:
    """'a, b, c and 17 more': a one-line error stays short however many names there are."""
    items = list(items)
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        # run id -> the backends of its files that `load` left out (damaged, missing): a reader pairing runs by
        # framework (compare) counts them as the run's, so one lost partition never pairs different frameworks
        self.left_out: dict[str, set[str]] = {}

    def check_writable(self, where: str | None = None) -> None:
        """A usage error now rather than a failure after the run: create the store and write (and
        remove) a probe file in it; then clear temporary files that killed runs left behind. `where` names
        the directory as the user gave it (default: --store '<root>')."""
        where = where or f"--store {str(self.root)!r}"
        try:
            if self.root.exists() and not self.root.is_dir():
                raise UsageError(f"{where} exists and is not a directory")
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
                    paths: list[Path] | None = None, counts: dict[str, int] | None = None) -> list[Path]:
        """One file per (backend, backend_version, device) in `df`, each renamed into place when whole
        (and appended to `paths` then, so a caller knows what was kept if a later one fails; `counts` gets
        its rows under its path relative to <root>/<table>, which the run's env.json records as `partitions`)."""
        paths = [] if paths is None else paths
        df = df.assign(run_id=run_id)
        for (backend, version, device), part in df.groupby(list(PARTITIONS), sort=False):
            path = self.partition_path(table, backend, version, device, run_id, shard)
            body = part.drop(columns=list(PARTITIONS)).reset_index(drop=True)
            atomic_write(path, lambda tmp, body=body: body.to_parquet(tmp, index=False, write_page_checksum=True))
            paths.append(path)
            if counts is not None:
                counts[path.relative_to(self.root / table).as_posix()] = len(body)
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

    def read_env(self, run_id: str, name: str) -> tuple[dict | None, str]:
        """(env, '') for `runs/<run_id>/<name>.json`; (None, '') when there is none; (None, why) when it is
        unreadable or malformed (not a JSON object, or a field the readers use has the wrong type)."""
        path = self.meta_path(run_id, name)
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            return None, ""
        except (OSError, ValueError) as exc:
            return None, f"its env file {path} is unreadable ({type(exc).__name__})"
        why = env_problem(meta)
        return (None, f"its env file {path} is malformed: {why}") if why else (meta, "")

    def status(self, run_id: str, name: str) -> tuple[str, str]:
        """('complete', '') or (status, why) for `runs/<run_id>/<name>.json`; runs written before
        status files existed have none and count as complete."""
        path = self.meta_path(run_id, name)
        meta, why = self.read_env(run_id, name)
        if why:
            return "unusable", why
        if meta is None:
            return "complete", ""
        st = meta.get("status", "complete")
        if st == "complete":
            return st, ""
        if st == "running" and meta.get("host") == _HOST and isinstance(meta.get("pid"), int):
            gone = not _pid_alive(meta["pid"])
            return st, (f"its process {meta['pid']} is gone: it was killed or crashed" if gone
                        else f"still running as process {meta['pid']}")
        return st, str(meta.get("error", "")) or f"status {st!r} in {path}"

    def env_files(self, table: str) -> dict[tuple[str, str], Path]:
        """(run id, shard suffix) -> its env file `runs/<run_id>/<table>[.shard-i-of-n].json`."""
        out = {}
        for p in sorted((self.root / "runs").glob(f"*/{table}*.json")):
            rest = p.stem[len(table):]
            if rest == "" or re.fullmatch(r"\.shard-\d+-of-\d+", rest):
                out[p.parent.name, rest] = p
        return out

    # --- reading -------------------------------------------------------------------------------

    def files(self, table: str) -> list[Path]:
        base = self.root / table
        if not base.is_dir():
            return []
        return sorted(p for p in base.rglob("*") if p.is_file()
                      and not any(part.startswith((".", "_")) for part in p.relative_to(base).parts))

    def load(self, table: str, problems: list[str] | None = None) -> pd.DataFrame:
        """Every readable file of `table` from complete runs, partition columns included; `problems`
        gets one line per skipped file (path and reason), per incomplete run and per partition a run
        recorded that is missing. Each file is checked against what its run recorded: the rows its
        env.json records for it (`partitions`; an older env.json: the run's total `rows`, and a partition
        for each backend/device it lists under `devices`), and the row count in the file's own metadata
        (the footer has no checksum: a flipped bit in a row group's count drops rows silently). Rows of runs
        written before the `mode` column existed get the mode they ran in (suite.modes.fill_mode)."""
        import pyarrow.parquet as pq

        problems = [] if problems is None else problems
        frames: dict[tuple[str, str], list] = {}  # (run id, shard suffix) -> its loaded frames
        seen: dict[tuple[str, str], set[tuple[str, str]]] = {}  # -> (backend, device) of its files, loaded or not
        incomplete: dict[tuple[str, str], list[Path]] = {}
        statuses: dict[tuple[str, str], tuple[str, str]] = {}
        envs: dict[tuple[str, str], dict | None] = {}
        for path in self.files(table):
            rel = path.relative_to(self.root / table)
            keys = [p.split("=", 1) for p in rel.parts[:-1]]
            if len(keys) != len(PARTITIONS) or [k[0] for k in keys if len(k) == 2] != list(PARTITIONS) \
                    or path.suffix != ".parquet":
                problems.append(f"{path}: foreign file (expected {'/'.join(p + '=...' for p in PARTITIONS)}/"
                                "<run_id>.parquet)")
                continue
            stem = _STEM.fullmatch(path.stem)
            run = run_id, suffix = stem["run"], stem["suffix"] or ""
            if run not in statuses:
                statuses[run] = self.status(run_id, table + suffix)
                envs[run] = self.read_env(run_id, table + suffix)[0]
            st, why = statuses[run]
            if st != "complete":
                incomplete.setdefault((f"{run_id}{suffix}", f"{st}: {why}"), []).append(path)
                continue
            seen.setdefault(run, set()).add((keys[0][1], keys[2][1]))
            try:
                arrow = pq.read_table(path, page_checksum_verification=True)
                meta = pq.read_metadata(path)
                missing = [c for c in REQUIRED[table] if c not in arrow.schema.names]
                wrong = schema_problems(table, arrow.schema) + _footer_problems(arrow.schema)
                df = None if missing or wrong else arrow.to_pandas()
            except Exception as exc:  # noqa: BLE001 - truncated, not parquet, bit rot: skip it
                why = f"unreadable ({type(exc).__name__}: {_first_line(exc)})"
            else:
                why = (f"foreign file (no column {', '.join(missing)})" if missing
                       else f"wrong column types ({'; '.join(wrong)})" if wrong else "")
                counted = "" if why else self._row_problem(arrow.num_rows, meta, rel.as_posix(), envs[run])
                why = why or (f"{counted}; skipped" if counted else "")
            if why:
                problems.append(f"{path}: {why}")
                self.left_out.setdefault(run_id, set()).add(keys[0][1])
                continue
            for k, v in keys:
                df[k] = v
            frames.setdefault(run, []).append(df)
        for (run, why), paths in incomplete.items():
            if why.startswith("unusable: "):
                problems.append(f"run {run} ({table}): {why.removeprefix('unusable: ')}; its {len(paths)} file(s) "
                                f"{table}/*/*/*/{run}.parquet are skipped (fix or remove the env file)")
            else:
                problems.append(f"run {run} ({table}) is incomplete ({why}); its {len(paths)} file(s) "
                                f"{table}/*/*/*/{run}.parquet are skipped (rerun under a new id)")
        self._missing_partitions(table, statuses, seen, frames, problems)
        import pandas as pd

        from suite.modes import fill_mode

        frames_ = [df for run in frames.values() for df in run]
        if not frames_:  # every column the readers use, so a store holding only the other table still reports
            return pd.DataFrame(columns=list(dict.fromkeys([*PARTITIONS, *REQUIRED[table], *SCHEMA[table]])))
        df = fill_mode(pd.concat(frames_, ignore_index=True))
        first = [*PARTITIONS, "mode"]
        return df[first + [c for c in df.columns if c not in first]]

    @staticmethod
    def _row_problem(rows: int, meta, rel: str, env: dict | None) -> str:
        """Why a file's `rows` (as read) disagree with its own metadata or with its run's env.json ('' if not)."""
        groups = sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        if not rows == groups == meta.num_rows:
            return (f"{rows} rows read, but the file's metadata says {meta.num_rows} (its row groups: {groups}): "
                    "a damaged footer")
        parts = (env or {}).get("partitions")
        if parts is None:
            return ""
        if rel not in parts:
            return "its run's env.json does not list this partition among those it wrote"
        if parts[rel] != rows:
            return f"{rows} rows read, but its run's env.json records {parts[rel]} (a damaged or replaced file)"
        return ""

    def _missing_partitions(self, table: str, statuses: dict, seen: dict, frames: dict, problems: list[str]) -> None:
        """Partitions a complete run recorded that are not there (deleted, moved); and, for an env.json from
        before per-partition counts, a run whose rows do not add up to the `rows` it recorded (left out whole)."""
        for run, path in self.env_files(table).items():
            run_id, suffix = run
            st, _ = statuses[run] if run in statuses else self.status(run_id, table + suffix)
            env = self.read_env(run_id, table + suffix)[0]
            if st != "complete" or env is None:
                continue  # an incomplete or unusable run is reported as such (if it has files at all)
            name = f"run {run_id}{suffix} ({table})"
            if isinstance(env.get("partitions"), dict):
                gone = [k for k in env["partitions"] if not (self.root / table / k).is_file()]
                for k in gone:
                    self.left_out.setdefault(run_id, set()).add(k.split("/", 1)[0].removeprefix("backend="))
                if gone:
                    problems.append(f"{name}: {len(gone)} partition(s) its env.json records are missing: "
                                    f"{_listed([f'{table}/{k}' for k in gone])}; the rest of the run is used")
                continue
            want = {tuple(k.split("/", 1)) for k in (env.get("devices") or {}) if "/" in k}
            gone = sorted(f"{b}/{d}" for b, d in want - seen.get(run, set()))
            for g in gone:
                self.left_out.setdefault(run_id, set()).add(g.split("/", 1)[0])
            if gone:
                problems.append(f"{name}: no partition for {_listed(gone)}, which its env.json {path} records it "
                                "ran; the rest of the run is used")
                continue
            if isinstance(env.get("rows"), int) and run in frames and len(frames[run]) == len(seen.get(run, ())):
                got = sum(len(df) for df in frames[run])
                if got != env["rows"]:
                    del frames[run]
                    problems.append(f"{name}: its files hold {got} rows, but its env.json records {env['rows']}; "
                                    "the whole run is skipped")

    def runs(self, problems: list[str] | None = None) -> dict[str, dict]:
        """run_id -> {table name: env dict} from runs/<run_id>/*.json; an unreadable or malformed file is
        skipped, and named in `problems` unless a line there names it already (Store.load's)."""
        out: dict[str, dict] = {}
        for path in sorted((self.root / "runs").glob("*/*.json")):
            try:
                meta = json.loads(path.read_text())
                why = env_problem(meta)
            except (OSError, ValueError) as exc:
                why = f"unreadable ({type(exc).__name__})"
            if not why:
                out.setdefault(path.parent.name, {})[path.stem] = meta
            elif problems is not None and not any(str(path) in p for p in problems):
                problems.append(f"{path}: env file {why}; skipped (the run's package versions are unknown)")
        return out
