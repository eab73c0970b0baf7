"""Fault injection: SIGKILL at random points, concurrent writers, bit flips, wrongly typed files,
unwritable and full stores, hostile case files, the umask, and a fresh clone's default store. Each
test injects its fault and checks the promise of the "Reliability" section of docs/store.md: no traceback,
no silent loss, no silent corruption. Runs are tiny (numpy only) so the file stays fast."""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite import cli
from suite.store import DEFAULT_STORE, SCHEMA, Store
from suite.tests.helpers import one_line_error, suite_main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--backends", "numpy", "--dtypes", "float32", "--cases", "seed", "--no-progress"]


def real_suite(*args: str, cwd: Path = ROOT, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    """`python -m suite ...` in a fresh interpreter: for what needs a process of its own (a memory limit)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "suite", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env, **kw)


def suite(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m suite ...` through its `main` in this process (no interpreter start-up)."""
    return suite_main(*args, cwd=cwd)


def run_small(store: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return suite("run", *SMALL, "--store", str(store), *extra, **kw)


@pytest.fixture
def main(capsys):
    """`python -m suite ...` in this process (no interpreter start-up): a CompletedProcess-like result."""
    def call(*args: str) -> subprocess.CompletedProcess:
        rc = cli.main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)
    return call


def small(main, store: Path, *extra: str) -> subprocess.CompletedProcess:
    return main("run", *SMALL, "--jobs", "1", "--store", str(store), *extra)


@pytest.fixture(scope="module")
def timing_store(tmp_path_factory) -> Path:
    """A store holding one tiny timing run and nothing else (bench measures copy bandwidth: do it once)."""
    store = tmp_path_factory.mktemp("timing") / "s"
    p = suite("bench", "--backends", "numpy", "--dtypes", "float32", "--ops", "softmax", "--impls", "fused",
              "--passes", "forward", "--sizes", "8x16", "--min-time", "0.01", "--store", str(store),
              "--no-progress", "--run-id", "good")
    assert p.returncode == 0, p.stderr
    return store


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- 1. report on a store with one table ------------------------------------------------------------

def test_report_on_a_store_with_only_accuracy(tmp_path, main):
    """"Run, then report" on a new store, the report in a real process as a user types it."""
    assert small(main, tmp_path / "s").returncode == 0
    p = real_suite("report", "--store", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "s" / "report" / "report.md").read_text()
    assert "✔" in md and "## Speed" in md and "_no data in the store_" in md.split("## Speed")[1]


def test_report_on_a_store_with_only_timing(timing_store, tmp_path):
    store = tmp_path / "s"
    shutil.copytree(timing_store, store)
    p = suite("report", "--store", str(store))
    assert p.returncode == 0, p.stderr
    md = (store / "report" / "report.md").read_text()
    assert md.split("## Stability matrix")[1].split("##")[0].count("_no data in the store_") == 1


# --- 2. a reused run id is refused before computing -----------------------------------------------

def test_reused_run_id_is_refused_and_the_first_run_kept(tmp_path, main, monkeypatch):
    store = tmp_path / "s"
    assert small(main, store, "--run-id", "r1").returncode == 0
    before = files(store)
    import suite.runner

    monkeypatch.setattr(suite.runner, "run", lambda *a, **k: pytest.fail("computed before refusing"))
    p = small(main, store, "--run-id", "r1", "--dtypes", "float64")
    one_line_error(p, 2, "--run-id 'r1' already has accuracy results", "choose another --run-id")
    assert files(store) == before  # nothing overwritten: rows and env.json are the first run's


@pytest.mark.parametrize(("first", "second", "says"), [
    ([], ["--shard", "1/2"], "already has an unsharded accuracy run"),
    (["--shard", "1/2"], [], "already has accuracy results (shard-1-of-2)"),
    (["--shard", "1/2"], ["--shard", "2/3"], "shards of 2, not 3"),
    (["--shard", "2/2"], ["--shard", "2/2"], "already has accuracy shard 2/2"),
])
def test_full_runs_and_shards_of_one_id_do_not_mix(tmp_path, main, first, second, says):
    store = tmp_path / "s"
    assert small(main, store, "--run-id", "r", *first).returncode == 0
    before = files(store)
    one_line_error(small(main, store, "--run-id", "r", *second), 2, says)
    assert files(store) == before
    df = Store(store).load("accuracy")
    assert not df.duplicated(["dtype", "op", "impl", "case", "pass"]).any()


def test_concurrent_runs_with_one_id_one_wins(tmp_path):
    """Two writers start together under one id: exactly one runs, the other is refused; no row twice."""
    store = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "suite", "run", *SMALL, "--store", str(store), "--run-id", "same", "--jobs", "1"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    assert all("Traceback" not in err for _, err in results)
    df = Store(store).load("accuracy")
    assert len(df) > 0 and not df.duplicated(["dtype", "op", "impl", "case", "pass"]).any()


def test_a_full_run_and_a_shard_claiming_at_the_same_moment_do_not_mix(tmp_path, monkeypatch):
    """The race a listing cannot close: a shard claims between a full run's check and its claim. The
    full run sees it once its own claim is made, steps back and is refused."""
    from suite.selection import UsageError
    from suite.store import Shard

    store = Store(tmp_path)
    store.root.mkdir(exist_ok=True)
    real, calls = Store.existing, []

    def racing(self, table, run_id):
        calls.append(1)
        if len(calls) == 1:  # the full run's check: the shard has not claimed yet
            return set()
        return real(self, table, run_id)

    store.claim("accuracy", "r", Shard(1, 2), {})
    monkeypatch.setattr(Store, "existing", racing)
    with pytest.raises(UsageError, match="claimed at the same moment"):
        store.claim("accuracy", "r", Shard(), {})
    assert not store.meta_path("r", "accuracy").exists() and store.meta_path("r", "accuracy.shard-1-of-2").exists()


def test_concurrent_runs_with_distinct_ids_lose_nothing(tmp_path):
    store = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "suite", "run", *SMALL, "--store", str(store), "--run-id",
                               f"r{i}", "--jobs", "1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    df = Store(store).load("accuracy")
    counts = df.groupby("run_id").size()
    assert set(counts.index) == {"r0", "r1"} and counts["r0"] == counts["r1"] > 0


# --- 3. a killed run leaves a mark, no litter and no orphans ---------------------------------------

def _children(pid: int) -> set[int]:
    """Every live descendant of `pid`, from /proc (no psutil needed)."""
    parent_of = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":
                parent_of[int(d.name)] = int(fields[1])
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parent_of.items() if pp == p}
        todo += list(kids - out)
        out |= kids
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point(tmp_path, seed):
    """SIGKILL to the run's process alone (not its group) at a random moment: its workers, manager and
    resource tracker exit within seconds; the store holds only whole files; the run reads as
    incomplete unless it had finished; the next run clears the temporary files."""
    store = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "suite", "run", "--backends", "numpy", "--dtypes",
                             "float32,float64", "--cases", "seed,large-vocab", "--jobs", "2", "--no-progress",
                             "--store", str(store), "--run-id", "k"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + random.Random(seed).uniform(0.5, 6.0)
    seen: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        seen |= _children(proc.pid)
        time.sleep(0.05)
    seen |= _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone_by = time.monotonic() + 15
    while any(_alive(c) for c in seen) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not [c for c in seen if _alive(c)], "worker/manager processes outlived the killed run"

    status = json.loads((store / "runs" / "k" / "accuracy.json").read_text()) if store.exists() else None
    problems: list[str] = []
    df = Store(store).load("accuracy", problems)
    if status is None or status["status"] != "complete":  # killed before the end: visibly incomplete
        assert df.empty
        assert status is None or (status["status"] == "running"
                                  and any("run k (accuracy) is incomplete" in p and "killed" in p for p in problems)
                                  or not list((store / "accuracy").rglob("k.parquet")))
    else:
        assert problems == [] and len(df) > 0
    for p in (store.rglob("*") if store.exists() else []):  # every visible file is whole
        if p.is_file() and not p.name.startswith("."):
            if p.suffix == ".parquet":
                pd.read_parquet(p)
            else:
                json.loads(p.read_text())
    assert run_small(store, "--run-id", "after", "--jobs", "1").returncode == 0
    assert not list(store.rglob(".partial-*")), "temporary files of the killed run were not cleared"


@pytest.mark.parametrize(("fault", "status", "rc"), [(KeyboardInterrupt, "interrupted", 130),
                                                     (RuntimeError, "failed", 5)])
def test_interrupted_or_crashed_run_says_so(tmp_path, main, monkeypatch, fault, status, rc):
    import suite.runner

    def broken(*args, **kwargs):
        raise fault("boom")

    monkeypatch.setattr(suite.runner, "run", broken)
    p = small(main, tmp_path / "s", "--run-id", "x")
    assert p.returncode == rc and p.stderr.count("\n") == 1, p.stderr
    assert json.loads((tmp_path / "s" / "runs" / "x" / "accuracy.json").read_text())["status"] == status
    problems: list[str] = []
    Store(tmp_path / "s").load("accuracy", problems)  # nothing was written, so nothing to skip
    assert problems == []


def test_stale_temporary_files_are_cleared_and_live_ones_kept(tmp_path):
    from suite import store as st

    s = Store(tmp_path)
    part = tmp_path / "accuracy" / "backend=numpy" / "backend_version=1" / "device=cpu"
    part.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    litter = part / f".partial-{st._HOST}-{dead.pid}-abc.parquet"
    live = part / f".partial-{st._HOST}-{os.getpid()}-abc.parquet"
    foreign_new = part / ".partial-otherhost-1-abc.parquet"
    foreign_old = part / ".partial-otherhost-2-abc.parquet"
    legacy_old = part / ".partial-xyz.parquet"
    for p in (litter, live, foreign_new, foreign_old, legacy_old):
        p.write_bytes(b"PAR1")
    old = time.time() - st.STALE_AFTER_S - 60
    for p in (foreign_old, legacy_old):
        os.utime(p, (old, old))
    s.check_writable()
    left = {p.name for p in part.iterdir()}
    assert left == {live.name, foreign_new.name}


# --- 4. bit rot is caught by page checksums ---------------------------------------------------------

@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("flips") / "s"
    for rid in ("a", "b"):
        p = run_small(store, "--run-id", rid, "--jobs", "1", "--dtypes", "float32,float64")
        assert p.returncode == 0, p.stderr
    return store


@pytest.mark.parametrize("region", ["pages", "footer"])
def test_bit_flips_are_caught_or_harmless(small_store, tmp_path, region):
    """Flip one bit at a time (seeded) in a partition: every read either skips the file with a reason or
    returns exactly the original rows; none returns different numbers."""
    [path] = list((small_store / "accuracy").rglob("a.parquet"))
    data = path.read_bytes()
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    original = Store(small_store).load("accuracy")
    original = original[original.run_id == "a"].reset_index(drop=True)
    rng = random.Random(region)
    caught = 0
    for k in range(60):
        copy = tmp_path / f"c{k}"
        shutil.copytree(small_store, copy, ignore=shutil.ignore_patterns("report", "comparisons"))
        pos = rng.randrange(4, footer) if region == "pages" else rng.randrange(footer, len(data) - 8)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        (copy / path.relative_to(small_store)).write_bytes(bytes(flipped))
        problems: list[str] = []
        df = Store(copy).load("accuracy", problems)
        df = df[df.run_id == "a"].reset_index(drop=True)
        if any("a.parquet" in p for p in problems):
            caught += 1
            assert df.empty
        else:
            pd.testing.assert_frame_equal(df, original)
        shutil.rmtree(copy)
    assert caught >= (50 if region == "pages" else 15), caught


def test_a_flipped_bit_is_no_regression(small_store, tmp_path):
    """compare a b with a third run's file rotten: no fake regression; the skip is in the Markdown and the
    exit status (3)."""
    store = tmp_path / "s"
    shutil.copytree(small_store, store)
    assert run_small(store, "--run-id", "c", "--jobs", "1").returncode == 0
    [path] = list((store / "accuracy").rglob("c.parquet"))
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))
    out = tmp_path / "cmp.md"
    p = suite("compare", "a", "b", "--store", str(store), "--out", str(out))
    assert p.returncode == 3, p.stderr
    md = out.read_text()
    assert "no regression" in md and "## Skipped (1)" in md and "c.parquet: unreadable" in md
    assert "checksum" in md.lower()


def test_files_written_now_carry_page_checksums(tmp_path):
    import pyarrow.parquet as pq

    Store(tmp_path).write_table("accuracy", pd.DataFrame({
        "backend": "numpy", "backend_version": "1", "device": "cpu", "dtype": "float32", "op": "softmax",
        "impl": "naive", "pass": "forward", "case": [f"c{i}" for i in range(50)], "verdict": "ok"}), "r")
    [path] = list(tmp_path.rglob("r.parquet"))
    data = bytearray(path.read_bytes())
    rg = pq.ParquetFile(path).metadata.row_group(0)
    [md] = [rg.column(i) for i in range(rg.num_columns) if rg.column(i).path_in_schema == "case"]
    pos = (md.dictionary_page_offset or md.data_page_offset) + md.total_compressed_size - 3
    data[pos] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="CRC checksum verification failed"):
        pq.read_table(path, page_checksum_verification=True)


# --- 5. wrongly typed files -------------------------------------------------------------------------

def _typed_store(tmp_path: Path, table: str, timing_store: Path) -> tuple[Path, Path]:
    store = tmp_path / "s"
    if table == "accuracy":
        assert cli.main(["run", *SMALL, "--jobs", "1", "--store", str(store), "--run-id", "good"]) == 0
        df = Store(store).load("accuracy")
        df = df.assign(ulp_err_scaled=df.ulp_err_scaled.astype(str), exact_finite=df.exact_finite.astype(int))
    else:
        shutil.copytree(timing_store, store)
        df = Store(store).load("timing").assign(median_s=lambda d: d.median_s.astype(str))
    [good] = list((store / table).rglob("good.parquet"))
    bad = good.with_name("typed.parquet")
    df.drop(columns=["backend", "backend_version", "device"]).assign(run_id="typed").to_parquet(bad)
    return store, bad


@pytest.mark.parametrize("table", ["accuracy", "timing"])
def test_wrongly_typed_file_is_skipped_and_reported(tmp_path, table, timing_store):
    store, bad = _typed_store(tmp_path, table, timing_store)
    problems: list[str] = []
    df = Store(store).load(table, problems)
    assert set(df.run_id) == {"good"}
    assert len(problems) == 1 and str(bad) in problems[0] and "wrong column types" in problems[0], problems
    assert ("median_s is large_string, expected number" if table == "timing"
            else "ulp_err_scaled is large_string, expected number") in problems[0]
    p = suite("report", "--store", str(store))
    assert p.returncode == 3 and "Traceback" not in p.stderr, p.stderr
    md = (store / "report" / "report.md").read_text()
    assert "## Skipped" in md and f"{bad}: wrong column types" in md
    if table == "accuracy":
        p = suite("compare", "good", "good", "--store", str(store), "--out", str(tmp_path / "c.md"))
        assert p.returncode == 3 and "Traceback" not in p.stderr, p.stderr
        assert "wrong column types" in (tmp_path / "c.md").read_text()


def test_schema_covers_what_the_writers_write():
    from suite.runner import COLUMNS
    from suite.timing import TIMING_COLUMNS

    assert set(SCHEMA["accuracy"]) <= set(COLUMNS) | {"run_id"}
    assert set(SCHEMA["timing"]) <= set(TIMING_COLUMNS) | {"run_id"}


# --- 6. unwritable, missing and full stores --------------------------------------------------------

@pytest.mark.parametrize("where", ["/proc/forbidden/store", "/proc", "FILE/sub"])
def test_unwritable_store_is_refused_before_computing(tmp_path, main, where):
    (tmp_path / "FILE").write_text("x")
    where = where.replace("FILE", str(tmp_path / "FILE"))
    line = one_line_error(small(main, Path(where)), 2, "--store")
    assert "cannot be created" in line or "not writable" in line or "not a directory" in line


def _mount(args: list[str], target: Path) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    return os.geteuid() == 0 and subprocess.run(["mount", *args, str(target)], capture_output=True).returncode == 0


def test_read_only_store_is_refused_before_computing(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if not _mount(["--bind", str(ro)], ro):
        pytest.skip("no permission to bind-mount (needs root and CAP_SYS_ADMIN)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only")
        one_line_error(run_small(ro / "store", "--jobs", "1"), 2, "cannot be created", "Read-only file system")
        one_line_error(run_small(ro, "--jobs", "1"), 2, "not writable", "EROFS")
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_disk_full_on_a_small_tmpfs_is_one_line(tmp_path):
    fs = tmp_path / "fs"
    if not _mount(["-t", "tmpfs", "-o", "size=64k", "tmpfs"], fs):
        pytest.skip("no permission to mount a tmpfs (needs root and CAP_SYS_ADMIN)")
    try:
        (fs / "filler").write_bytes(b"\0" * (64 - 12) * 1024)  # room for the probe and the status file only
        p = run_small(fs / "s", "--run-id", "full", "--jobs", "1")
        line = one_line_error(p, 4, "No space left on device (ENOSPC)", "kept: nothing")
        assert "readers skip it" in line
        assert not list(fs.rglob(".partial-*"))
        problems: list[str] = []
        assert Store(fs / "s").load("accuracy", problems).empty
    finally:
        subprocess.run(["umount", str(fs)], capture_output=True)


def test_disk_full_after_the_partitions_says_what_was_kept(tmp_path, monkeypatch, capsys):
    """ENOSPC (mocked) when the run's final status is written: the finished partition is kept and
    named, the run stays incomplete, exit 4 and one line."""
    real = Store.write_meta

    def full(self, run_id, name, meta):
        if meta.get("status") in ("complete", "failed"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.meta_path(run_id, name)))
        return real(self, run_id, name, meta)

    monkeypatch.setattr(Store, "write_meta", full)
    rc = cli.main(["run", *SMALL, "--store", str(tmp_path / "s"), "--run-id", "r", "--jobs", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 4 and len(err.splitlines()) == 1, err
    assert "No space left on device (ENOSPC)" in err and "kept: accuracy/backend=numpy/" in err
    assert "left marked running" in err
    monkeypatch.undo()
    problems: list[str] = []
    assert Store(tmp_path / "s").load("accuracy", problems).empty and "incomplete" in problems[0]
    assert not list((tmp_path / "s").rglob(".partial-*"))


@pytest.mark.parametrize("argv", [["run", "--jobs", "x"], ["nosuch"], ["compare"], ["run", "--frobnicate"]])
def test_argument_errors_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "--help" in err, err


def test_unexpected_errors_are_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "cmd_list", lambda args: 1 / 0)
    assert cli.main(["list"]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "ZeroDivisionError" in err


# --- 7. decompression bombs --------------------------------------------------------------------------

def _bomb(path: Path, shape: tuple[int, ...], data_mib: int = 8) -> None:
    """An .npz whose header declares `shape` float64, backed by `data_mib` MiB of zeros that deflate
    to almost nothing."""
    from numpy.lib import format as npf

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("logits.npy", "w", force_zip64=True) as f:
        npf.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        for _ in range(data_mib):
            f.write(b"\0" * 2**20)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.npz"
    _bomb(bomb, (2**20, 2**13))  # 64 GiB declared
    assert bomb.stat().st_size < 2**20
    t0 = time.perf_counter()
    p = real_suite("run", "--backends", "numpy", "--case-file", str(bomb), "--store", str(tmp_path / "s"),
                   preexec_fn=_limit_memory)
    one_line_error(p, 2, "8,589,934,592 values", "the limit is", "docs/memory.md")
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "s").exists()


def test_case_file_at_the_limit_loads(tmp_path, monkeypatch):
    from suite import memory
    from suite.selection import UsageError, load_case_file, max_case_values

    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * 2**30)  # the limit follows the memory available
    limit = max_case_values()
    assert limit == memory.fitting_values(8 * 2**30, 1)

    ok = tmp_path / "ok.npz"
    np.savez(ok, logits=np.zeros((4, 8)))
    assert load_case_file(str(ok)).logits.shape == (4, 8)
    over = tmp_path / "over.npz"
    _bomb(over, (1, limit + 1), data_mib=1)
    with pytest.raises(UsageError, match="the limit is"):
        load_case_file(str(over))


# --- 8. file modes honour the umask -----------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_honour_the_umask(tmp_path, main, umask):
    store = tmp_path / "s"
    old = os.umask(umask)
    try:
        p = small(main, store)
        assert p.returncode == 0, p.stderr
        p = main("report", "--store", str(store))
        assert p.returncode == 0, p.stderr
    finally:
        os.umask(old)
    made = [f for f in store.rglob("*") if f.is_file()]
    assert any(f.suffix == ".parquet" for f in made) and any(f.suffix == ".json" for f in made)
    assert any(f.name == "report.md" for f in made)
    assert {oct(f.stat().st_mode & 0o777) for f in made} == {oct(0o666 & ~umask)}


# --- 9. case-file and run-id messages ---------------------------------------------------------------

@pytest.mark.parametrize(("kind", "says"), [
    ("text", "is not an .npz file"), ("npy", "is a single .npy array, not an .npz"),
    ("object", "holds Python objects"), ("nan_probs", "'probs' must be finite and non-negative"),
    ("neg_probs", "'probs' must be finite and non-negative"), ("zero_rows", "at least one row"),
    ("truncated", "is not an .npz file"), ("corrupt", "is not a readable .npz"),
])
def test_bad_case_files_get_their_own_message(tmp_path, main, kind, says):
    f = tmp_path / "case.npz"
    logits = np.zeros((2, 3))
    if kind == "text":
        f.write_text("logits,1,2,3\n")
    elif kind == "npy":
        with open(f, "wb") as fh:
            np.save(fh, logits)
    elif kind == "object":
        np.savez(f, logits=np.array([{"a": 1}], dtype=object))
    elif kind == "nan_probs":
        np.savez(f, logits=logits, probs=np.full((2, 3), np.nan))
    elif kind == "neg_probs":
        np.savez(f, logits=logits, probs=np.array([[1.5, -0.5, 0.0]] * 2))
    elif kind == "zero_rows":
        np.savez(f, logits=np.zeros((0, 5)))
    else:
        np.savez_compressed(f, logits=np.arange(4000.0).reshape(40, 100))
        data = bytearray(f.read_bytes())
        if kind == "truncated":
            del data[-200:]
        else:  # damage the compressed data behind a good header
            data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
        f.write_bytes(bytes(data))
    p = main("run", "--backends", "numpy", "--case-file", str(f), "--store", str(tmp_path / "s"))
    line = one_line_error(p, 2, says)
    assert "allow_pickle" not in line and "pickle=" not in line
    assert not (tmp_path / "s").exists()


def test_run_id_with_a_trailing_newline_is_refused(tmp_path, main):
    one_line_error(small(main, tmp_path / "s", "--run-id", "ok\n"), 2, "--run-id", "is not valid")
    assert not (tmp_path / "s").exists()


# --- 10. a user's runs go to a git-ignored store ---------------------------------------------------

def test_default_store_is_local_and_git_ignored(tmp_path):
    p = suite("run", *SMALL, "--jobs", "1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert list((tmp_path / DEFAULT_STORE / "accuracy").rglob("*.parquet"))
    p = suite("report", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / DEFAULT_STORE / "report" / "report.md").exists()
    if shutil.which("git") and (ROOT / ".git").exists():
        probe = f"{DEFAULT_STORE}/accuracy/backend=numpy/backend_version=1/device=cpu/x.parquet"
        assert subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT).returncode == 0
        assert subprocess.run(["git", "check-ignore", "-q", "results/accuracy/x.parquet"], cwd=ROOT).returncode == 1
