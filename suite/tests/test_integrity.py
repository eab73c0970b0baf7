"""Issue 22: what a store file or an env.json can silently get wrong, each made with the fault itself, and the
messages and options around it: a flipped bit in a footer's row count, deleted partitions, malformed env.json
files of every shape, a broken entry point in a temporary environment, unusable --out/--store paths and odd
case files. The "Reliability" section of docs/store.md points here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from suite.store import Store
from suite.tests.helpers import one_line_error, suite_main

ROOT = Path(__file__).resolve().parents[2]
TWO = ["--backends", "numpy,torch", "--dtypes", "float32", "--cases", "seed", "--jobs", "1", "--no-progress"]
ONE = ["--backends", "numpy", "--dtypes", "float32", "--cases", "seed", "--ops", "softmax", "--jobs", "1",
       "--no-progress"]


def suite(*args: str) -> subprocess.CompletedProcess:
    return suite_main(*args)


def real_suite(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "suite", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """Runs r1 and r2 of numpy and torch (identical rows: accuracy is deterministic)."""
    pytest.importorskip("torch")
    store = tmp_path_factory.mktemp("two") / "s"
    for rid in ("r1", "r2"):
        p = suite("run", *TWO, "--store", str(store), "--run-id", rid)
        assert p.returncode == 0, p.stderr
    return store


@pytest.fixture
def store(two_runs, tmp_path) -> Path:
    copy = tmp_path / "s"
    shutil.copytree(two_runs, copy)
    return copy


def part(store: Path, run: str, backend: str) -> Path:
    [path] = list((store / "accuracy" / f"backend={backend}").rglob(f"{run}.parquet"))
    return path


def env_of(store: Path, run: str) -> dict:
    return json.loads((store / "runs" / run / "accuracy.json").read_text())


def old_style(store: Path, run: str) -> None:
    """The env.json as runs wrote it before per-partition row counts: the run's total `rows` and `devices`."""
    env = env_of(store, run)
    del env["partitions"]
    (store / "runs" / run / "accuracy.json").write_text(json.dumps(env))


def copy_run(store: Path, src: str, dst: str) -> None:
    """Run `src` again under the id `dst`: its partitions (with their run_id column) and its env.json."""
    for p in (store / "accuracy").rglob(f"{src}.parquet"):
        pq.read_table(p).to_pandas().assign(run_id=dst).to_parquet(p.with_name(f"{dst}.parquet"), index=False)
    (store / "runs" / dst).mkdir(parents=True)
    env = env_of(store, src)
    env["partitions"] = {k.replace(f"{src}.parquet", f"{dst}.parquet"): v for k, v in env["partitions"].items()}
    (store / "runs" / dst / "accuracy.json").write_text(json.dumps(env))


def _varint(n: int) -> bytes:
    """How the thrift compact protocol of a parquet footer writes an i64 (zigzag, then 7 bits a byte)."""
    z, out = n << 1, bytearray()
    while True:
        b, z = z & 0x7F, z >> 7
        out.append(b | (0x80 if z else 0))
        if not z:
            return bytes(out)


def row_count_sites(data: bytes, rows: int) -> list[tuple[int, int]]:
    """(position, bit) of every place in the footer that encodes `rows` (the file's num_rows, the row group's,
    the columns' num_values and any coincidence): the lowest set bit of the varint's last byte, so the flip
    lowers the count (5184 -> 5120, as in the issue): pyarrow then reads that many rows of the row group."""
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    code = _varint(rows)
    bit = code[-1] & -code[-1]
    sites, at = [], data.find(code, footer)
    while 0 <= at < len(data) - 8:
        sites.append((at + len(code) - 1, bit))
        at = data.find(code, at + 1)
    return sites


def flip(path: Path, *sites: tuple[int, int]) -> None:
    data = bytearray(path.read_bytes())
    for pos, bit in sites:
        data[pos] ^= bit
    path.write_bytes(bytes(data))


# --- 1. the rows a run recorded: footer row counts, deleted partitions ------------------------------------

def test_runs_record_each_partitions_rows(two_runs):
    env = env_of(two_runs, "r1")
    assert sum(env["partitions"].values()) == env["rows"] > 0
    for rel, rows in env["partitions"].items():
        assert pq.read_metadata(two_runs / "accuracy" / rel).num_rows == rows


@pytest.mark.parametrize("env", ["partitions", "old", "none"])
def test_a_flipped_row_count_in_the_footer_is_caught(store, tmp_path, env):
    """One bit of a row group's num_rows: pyarrow then reads fewer rows without complaint. Every reader
    names the file and leaves it out: by the file's own num_rows, whatever the env.json records (per-partition
    counts, an older one's total, or none)."""
    if env == "old":
        old_style(store, "r2")
    elif env == "none":
        (store / "runs" / "r2" / "accuracy.json").unlink()
    path = part(store, "r2", "numpy")
    rows = pq.read_metadata(path).num_rows
    assert rows >= 64
    original = path.read_bytes()
    silent = 0
    for site in row_count_sites(original, rows):
        path.write_bytes(original)
        flip(path, site)
        try:
            silent += pq.read_table(path).num_rows != rows  # the fault: fewer rows, no error
        except Exception:  # noqa: BLE001 - this site pyarrow catches itself
            pass
        problems: list[str] = []
        df = Store(store).load("accuracy", problems)
        mine = df[(df.run_id == "r2") & (df.backend == "numpy")]
        if any(str(path) in p for p in problems):
            assert mine.empty
        else:
            assert len(mine) == rows, problems
    assert silent >= 1, "no flip reproduced the silent row loss"
    path.write_bytes(original)
    site = next(s for s in row_count_sites(original, rows) if _silent(path, original, s, rows))
    flip(path, site)
    rep = suite("report", "--store", str(store), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 3, rep.stderr
    assert "damaged footer" in rep.stderr and str(path) in rep.stderr
    assert "damaged footer" in (tmp_path / "rep" / "report.md").read_text()
    cmp = suite("compare", "r1", "r2", "--store", str(store), "--out", str(tmp_path / "c.md"))
    assert cmp.returncode == 3, cmp.stderr
    md = (tmp_path / "c.md").read_text()
    assert "damaged footer" in md and "## Skipped (1)" in md


def _silent(path: Path, original: bytes, site: tuple[int, int], rows: int) -> bool:
    data = bytearray(original)
    data[site[0]] ^= site[1]
    path.write_bytes(bytes(data))
    try:
        return pq.read_table(path).num_rows != rows
    except Exception:  # noqa: BLE001
        return False
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("env", ["partitions", "old"])
def test_row_counts_flipped_consistently_are_caught_by_the_env(store, env):
    """Both the file's and the row group's num_rows flipped alike: the file agrees with itself, not with what
    its run recorded (per partition, or an older env.json's total: then the whole run is left out)."""
    if env == "old":
        old_style(store, "r2")
    path = part(store, "r2", "numpy")
    rows = pq.read_metadata(path).num_rows
    original = path.read_bytes()
    sites = [s for s in row_count_sites(original, rows) if _silent(path, original, s, rows)]
    flip(path, *row_count_sites(original, rows))
    problems: list[str] = []
    df = Store(store).load("accuracy", problems)
    assert problems and not ((df.run_id == "r2") & (df.backend == "numpy")).any(), problems
    assert sites
    text = "\n".join(problems)
    assert ("env.json records" in text) or ("damaged footer" in text), text
    if env == "old" and "damaged footer" not in text:
        assert "the whole run is skipped" in text and not (df.run_id == "r2").any()


@pytest.mark.parametrize("env", ["partitions", "old"])
def test_a_deleted_partition_is_named_and_the_rest_is_used(store, tmp_path, env):
    if env == "old":
        old_style(store, "r2")
    gone = part(store, "r2", "torch")
    gone.unlink()
    problems: list[str] = []
    df = Store(store).load("accuracy", problems)
    assert len(problems) == 1 and "run r2 (accuracy)" in problems[0] and "torch" in problems[0], problems
    assert set(df[df.run_id == "r2"].backend) == {"numpy"}
    rep = suite("report", "--store", str(store), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 3 and "run r2 (accuracy)" in rep.stderr, rep.stderr
    cmp = suite("compare", "r1", "r2", "--store", str(store), "--out", str(tmp_path / "c.md"))
    assert cmp.returncode == 3, (cmp.returncode, cmp.stderr)  # not exit 2 blaming the selection
    assert "select the same frameworks" not in cmp.stderr
    assert "## Skipped (1)" in (tmp_path / "c.md").read_text()


def test_damage_on_both_sides_never_pairs_different_frameworks(store, tmp_path):
    """r1's numpy rotten (a flipped data-page bit) and r2's torch deleted: each side has one framework left,
    but the runs recorded two each, so nothing is paired across frameworks (no fake regression)."""
    path = part(store, "r1", "numpy")
    flip(path, (len(path.read_bytes()) // 3, 0x10))
    part(store, "r2", "torch").unlink()
    cmp = suite("compare", "r1", "r2", "--store", str(store), "--out", str(tmp_path / "c.md"))
    assert cmp.returncode == 3, (cmp.returncode, cmp.stdout[-3000:], cmp.stderr)
    md = (tmp_path / "c.md").read_text()
    assert "## Skipped (2)" in md
    csv = pd.read_csv(tmp_path / "c.csv")
    assert csv.empty or (csv.backend.nunique() == 1 if "backend" in csv else False)


def test_one_framework_each_is_still_matched_across_frameworks(store, tmp_path):
    """On purpose, numpy==V against torch==W still pairs them (docs/comparing.md)."""
    env = env_of(store, "r1")["frameworks"]
    cmp = suite("compare", f"numpy=={env['numpy']}", f"torch=={env['torch']}", "--store", str(store),
                "--out", str(tmp_path / "c.md"))
    assert cmp.returncode in (0, 1), cmp.stderr
    assert len(pd.read_csv(tmp_path / "c.csv")) or "same" in cmp.stdout


# --- 2. malformed env.json ---------------------------------------------------------------------------

MALFORMED = ["[]", '"complete"', "42", "null", "{", '{"status": 5}', '{"frameworks": []}', '{"devices": "cpu"}',
             '{"partitions": {"backend=numpy/x.parquet": "many"}}', '{"packages": ["numpy"]}']


@pytest.mark.parametrize("text", MALFORMED)
def test_a_malformed_env_json_is_named_and_skipped(store, tmp_path, text):
    """Valid JSON of the wrong shape (or none): the run is named and skipped, exit 3 from report and compare,
    never an internal error."""
    copy_run(store, "r2", "r3")
    assert Store(store).load("accuracy").run_id.nunique() == 3
    bad = store / "runs" / "r3" / "accuracy.json"
    bad.write_text(text)
    rep = suite("report", "--store", str(store), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 3, (rep.returncode, rep.stderr)
    assert str(bad) in rep.stderr and "internal error" not in rep.stderr
    cmp = suite("compare", "r1", "r2", "--store", str(store), "--out", str(tmp_path / "c.md"))
    assert cmp.returncode == 3, (cmp.returncode, cmp.stderr)
    assert str(bad) in (tmp_path / "c.md").read_text()
    (store / "runs" / "r3" / "protocol.json").write_text("[]")  # any env file, not only a table's
    cmp = suite("compare", "r1", "r2", "--store", str(store), "--out", str(tmp_path / "c.md"))
    assert cmp.returncode == 3 and "protocol.json" in cmp.stderr, cmp.stderr


# --- 3. a broken entry point -------------------------------------------------------------------------

def _broken_environment(tmp_path: Path) -> dict:
    """A package `brokenpkg` 1.0 installed (its dist-info) on PYTHONPATH, registering a plug-in whose import
    fails."""
    site = tmp_path / "site"
    info = site / "brokenpkg-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenpkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[softmax_suite.plugins]\nbroken_softmax = broken_softmax_mod\n")
    (site / "broken_softmax_mod.py").write_text("raise RuntimeError('broken on purpose')\n")
    return {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}


def test_a_broken_entry_point_is_a_warning_and_the_run_goes_on(tmp_path):
    env = _broken_environment(tmp_path)
    p = real_suite("run", *ONE, "--impls", "shifted", "--store", str(tmp_path / "s"), env=env)
    assert p.returncode == 0, p.stderr
    [warn] = [x for x in p.stderr.splitlines() if "broken_softmax" in x]
    assert warn.startswith("warning:") and "brokenpkg 1.0" in warn and "broken on purpose" in warn, warn
    p = real_suite("run", *ONE, "--store", str(tmp_path / "s"), env=env)  # the default selection too
    assert p.returncode == 0 and "brokenpkg" in p.stderr, p.stderr
    asked = real_suite("run", *ONE, "--impls", "shifted,broken_softmax", "--store", str(tmp_path / "s"), env=env)
    one_line_error(asked, 2, "broken_softmax", "brokenpkg 1.0", "broken on purpose")
    none = real_suite("run", *ONE, "--no-entry-points", "--store", str(tmp_path / "s"), env=env)
    assert none.returncode == 0 and "brokenpkg" not in none.stderr, none.stderr


# --- 5. messages: the path the user gave, checked before computing ------------------------------------

def test_compare_checks_its_output_before_computing(store, tmp_path):
    p = suite("compare", "r1", "r2", "--store", str(store), "--out", str(tmp_path))
    one_line_error(p, 2, f"--out {str(tmp_path)!r} is a directory")
    assert not list(tmp_path.glob(".partial-*"))
    (tmp_path / "file").write_text("x")
    p = suite("compare", "r1", "r2", "--store", str(store), "--out", str(tmp_path / "file" / "c.md"))
    one_line_error(p, 2, "--out", "cannot be written")
    assert p.stdout == ""  # refused before computing
    long = tmp_path / ("x" * 300 + ".md")
    line = one_line_error(suite("compare", "r1", "r2", "--store", str(store), "--out", str(long)), 2, "--out")
    assert "File name too long" in line or "longer than the file system allows" in line


def test_compare_of_many_run_ids_gets_a_file_name_that_fits(store, tmp_path):
    """40 run ids per side: the default name is shortened (with a hash), not ENAMETOOLONG on a temporary file."""
    ids = [f"run-{k:02d}-with-a-longish-name" for k in range(40)]
    for rid in ids:
        copy_run(store, "r1", rid)
    p = suite("compare", ",".join(ids[:20]), ",".join(ids[20:]), "--store", str(store))
    assert p.returncode == 0, p.stderr
    [md] = list((store / "comparisons").glob("*.md"))
    assert len(md.name) < 140


def test_an_unusable_store_path_is_exit_2(tmp_path):
    long = str(tmp_path / ("s" * 300))
    one_line_error(suite("run", *ONE, "--store", long), 2, "--store", "File name too long")
    one_line_error(suite("report", "--store", long), 2, "--store", "File name too long")
    one_line_error(suite("compare", "a", "b", "--store", long), 2, "--store", "File name too long")


def _mount_read_only(path: Path) -> bool:
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(path), str(path)],
                                           capture_output=True).returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(path)], capture_output=True)
        return False
    return True


def test_a_read_only_store_is_named_before_computing(store):
    """report and compare write into the store by default: on a read-only one they say so, naming the
    directory or file they would write (not --store '<store>/report'), before any work."""
    if not _mount_read_only(store):
        pytest.skip("no permission to bind-mount read-only (needs root and CAP_SYS_ADMIN)")
    try:
        line = one_line_error(suite("report", "--store", str(store)), 2, "the report directory",
                              "default --out", "Read-only file system")
        assert "--store" not in line
        line = one_line_error(suite("compare", "r1", "r2", "--store", str(store)), 2, "the comparison file",
                              "--out FILE.md", "Read-only file system")
    finally:
        subprocess.run(["umount", str(store)], capture_output=True)


def test_a_case_file_path_may_hold_a_comma(tmp_path):
    f = tmp_path / "with,comma.npz"
    np.savez(f, logits=np.random.default_rng(0).normal(size=(2, 8)))
    p = suite("run", "--backends", "numpy", "--dtypes", "float32", "--ops", "softmax", "--impls", "shifted",
              "--case-file", str(f), "--jobs", "1", "--no-progress", "--store", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert set(Store(tmp_path / "s").load("accuracy").case) == {"with,comma"}


def test_a_case_file_with_many_extra_arrays_is_a_short_line(tmp_path):
    f = tmp_path / "many.npz"
    np.savez(f, logits=np.zeros((1, 4)), **{f"extra{k:05d}": np.zeros(1) for k in range(20_000)})
    line = one_line_error(suite("run", *ONE, "--case-file", str(f), "--store", str(tmp_path / "s")), 2,
                          "unexpected arrays", "and 19,995 more")
    assert len(line) < 600, len(line)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_case_file_that_is_not_a_regular_file_says_so(tmp_path, kind):
    f = tmp_path / "odd.npz"
    if kind == "fifo":
        os.mkfifo(f)
    elif kind == "device":
        f.symlink_to("/dev/zero")
    else:
        f.mkdir()
    line = one_line_error(suite("run", *ONE, "--case-file", str(f), "--store", str(tmp_path / "s")), 2,
                          "is not a regular file")
    assert "does not exist" not in line and {"fifo": "a FIFO", "device": "a device", "directory": "a directory"
                                             }[kind] in line


def test_the_published_store_loads_without_problems():
    for table in ("accuracy", "timing"):
        problems: list[str] = []
        Store(ROOT / "results").load(table, problems)
        assert problems == [], problems
    problems = []
    Store(ROOT / "results").runs(problems)
    assert problems == [], problems


def test_messages_list_a_few_names_and_a_count():
    from suite.selection import listed

    assert listed([f"n{k}" for k in range(20_000)]) == "n0, n1, n2, n3, n4 and 19,995 more"
    assert listed(["a", "b"]) == "a, b"
