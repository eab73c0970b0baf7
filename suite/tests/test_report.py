"""`python -m suite report`: the Markdown, the self-contained HTML (checked in a real headless browser
when Debian's `chromium` is installed), the PNGs and the CSVs, from a small store built here."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite import report as report_mod
from suite.ops import IMPLS, OPS
from suite.report import verdict_cell
from suite.store import Store
from suite.tests.helpers import suite_main

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def suite(*args: str) -> subprocess.CompletedProcess:
    """`python -m suite ...` (its `main`, in this process)."""
    return suite_main(*args)


# the seeds, the overflow cases and the small random ones (the 32,000- to 262,147-class ones add 14 s of
# numpy and nothing the report's tables or plots are checked for)
REPORT_CASES = ("seed,overflow,normal_scale_1,normal_scale_10,normal_scale_100,normal_scale_10000,batch_3d,"
                "target_at_min_scale10,label_smoothing,normal_scale10_T100,normal_scale10_T0.01")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A store with an accuracy run and a timing run of numpy, plus the same rows relabelled as an
    older version (so the version table has a pair), then the report built from it."""
    d = tmp_path_factory.mktemp("report")
    store = d / "store"
    p = suite("run", "--backends", "numpy", "--dtypes", "float16,float32", "--cases", REPORT_CASES, "--jobs", "1",
              "--store", str(store), "--run-id", "20260102T000000Z-new", "--no-progress")
    assert p.returncode == 0, p.stderr
    p = suite("bench", "--backends", "numpy", "--dtypes", "float32", "--ops", "softmax,cross_entropy",
              "--impls", "fused,naive", "--sizes", "8x512,64x131072", "--min-time", "0.01", "--store", str(store),
              "--run-id", "20260102T000000Z-new", "--no-progress")
    assert p.returncode == 0, p.stderr
    st = Store(store)
    for table in ("accuracy", "timing"):
        old = st.load(table).drop(columns="run_id").assign(backend_version="0.0.1")
        for c in ("backend", "device"):
            old[c] = old[c].astype(str)
        st.write_table(table, old, "20260101T000000Z-old")
    out = d / "out"
    p = suite("report", "--store", str(store), "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return out


def test_verdict_cell():
    assert verdict_cell(pd.Series(["ok"] * 5)) == "✔ 5/5"
    assert verdict_cell(pd.Series(["ok", "nonfinite", "nonfinite", "inaccurate"])) == \
        "✘ 1/4: 2 nonfinite, 1 inaccurate"
    assert verdict_cell(pd.Series(["unsupported"] * 3)) == "— unsupported"


def test_outputs_exist(report):
    names = {p.name for p in report.iterdir()}
    assert {"report.md", "report.html", "error_vs_magnitude.png", "gbps_vs_vocab.png", "speed.csv",
            "versions.csv", "stability_matrix_cpu_forward.csv", "stability_matrix_cpu_backward.csv",
            "accuracy_of_the_stable_implementations.csv"} <= names, names
    assert not [n for n in names if n.startswith(".partial")]
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_markdown_tables(report):
    md = (report / "report.md").read_text()
    for title in ("Stability matrix", "Accuracy of the stable implementations", "Speed", "Versions"):
        assert f"## {title}" in md
    moved = report / report_mod.MATRICES  # the dense tables, each linked from where it stood
    dense = moved.read_text() if moved.exists() else ""
    for title in re.findall(r"(?m)^## (.+)$", dense):
        assert f"({moved.name}#{report_mod._anchor(title)})" in md, title
    both = md + dense
    assert "✔" in both and "✘" in both and "nonfinite" in both  # seed cases break naive, not the stable forms
    assert "| softmax · shifted " in both and "numpy float16" in both
    assert "64×131072" in both
    assert "![Where each implementation breaks down](error_vs_magnitude.png)" in md
    versions = pd.read_csv(report / "versions.csv")
    assert versions[["backend", "base", "new"]].astype(str).values.tolist() == [["numpy", "0.0.1", np.__version__]]
    assert (versions["accuracy compared"] > 0).all() and (versions["accuracy regressions"] == 0).all()


def test_csv_tables_match(report):
    stab = pd.read_csv(report / "stability_matrix_cpu_forward.csv", index_col=0)
    assert stab.shape[0] == len(OPS) * len(IMPLS) and list(stab.columns) == ["numpy float16", "numpy float32"]
    acc = pd.read_csv(report / "accuracy_of_the_stable_implementations.csv")
    assert {"median ULP", "worst ULP", "bound", "over bound"} <= set(acc.columns)
    assert (acc["worst ULP"] >= acc["median ULP"]).all()
    speed = pd.read_csv(report / "speed.csv")
    assert set(speed["pass"]) == {"forward", "forward+backward"} and speed["numpy"].str.contains("%").all()


def test_html_is_self_contained(report):
    text = (report / "report.html").read_text()
    assert "<style>" in text and "<link" not in text
    srcs = re.findall(r'src="([^"]+)"', text)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="https?:', text)


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = self.rows = self.cells = self.images = 0
        self.decoded: str | None = None
        self.headings: list[str] = []
        self._h = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tables += tag == "table"
        self.rows += tag == "tr"
        self.cells += tag == "td"
        self.images += tag == "img" and (a.get("src") or "").startswith("data:image/png")
        if tag == "html":
            self.decoded = a.get("data-images-decoded")
        self._h = tag == "h2"

    def handle_data(self, data):
        if self._h and data.strip():
            self.headings.append(data.strip())
            self._h = False


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(BROWSER is None, reason="Debian's chromium is not installed (apt-get install chromium); "
                                            "the browser check of report.html is skipped")
def test_html_renders_in_a_real_browser(report, tmp_path):
    page = (report / "report.html").resolve().as_uri()
    p = _chromium("--dump-dom", page)
    assert p.returncode == 0, p.stderr[-2000:]
    dom = _Dom()
    dom.feed(p.stdout)
    assert dom.headings[:4] == ["Stability matrix", "Accuracy of the stable implementations", "Speed", "Versions"]
    assert dom.tables >= 5 and dom.rows > 60 and dom.cells > 200
    assert dom.images == 2 and dom.decoded == "2", (dom.images, dom.decoded)  # both plots decoded by the browser
    shot = tmp_path / "shot.png"
    p = _chromium("--window-size=1200,1600", f"--screenshot={shot}", page)
    assert shot.is_file() and shot.stat().st_size > 20000, p.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.std() > 0.05  # not a blank page


def test_empty_store_is_a_usage_error(tmp_path):
    (tmp_path / "s").mkdir()
    p = suite("report", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "no results" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "o").exists()


def test_runs_option_restricts_the_report(report, tmp_path):
    store = report.parent / "store"
    p = suite("report", "--store", str(store), "--runs", "20260102T000000Z-new", "--out", str(tmp_path / "one"))
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "one" / "report.md").read_text()
    assert "(1 runs;" in md or "(1 run" in md
    assert not (tmp_path / "one" / "versions.csv").exists()  # a single version: no version pairs
    p = suite("report", "--store", str(store), "--runs", "nosuchrun", "--out", str(tmp_path / "none"))
    assert p.returncode == 2 and "no results" in p.stderr


def test_corrupt_file_is_reported_and_the_rest_is_used(report, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(report.parent / "store", store)
    [part] = list((store / "accuracy").glob("backend=numpy/backend_version=0.0.1/device=cpu"))
    bad = part / "20260103T000000Z-torn.parquet"
    bad.write_bytes(b"PAR1 torn")
    p = suite("report", "--store", str(store), "--out", str(tmp_path / "o"))
    assert p.returncode == 3, p.stderr  # done, but something was skipped
    assert "warning: skipped" in p.stderr and str(bad) in p.stderr and "unreadable" in p.stderr
    md = (tmp_path / "o" / "report.md").read_text()
    assert "✔" in md
    assert "## Skipped" in md and f"{bad}: unreadable" in md and "1 file(s) or run(s) skipped" in md


def test_versions_section_lists_the_package_versions_among_runs(report):
    """env.json's packages: the fixture's new run records them, its relabelled old run has no env.json at
    all (`not recorded`)."""
    md = (report / "report.md").read_text()
    section = md.split("## Versions\n", 1)[1].split("\n## ", 1)[0]
    assert "### package versions that differ among runs" in section
    assert "ml-dtypes" in section and "not recorded" in section and "20260101T000000Z-old" in section
