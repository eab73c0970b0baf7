"""Findings (suite/findings.py): the grouping on synthetic rows; the reproducers of a report built from a small
store, each run as pasted; the size of report.md on the published store; the end-of-run summary."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from suite import findings as F
from suite.tests.helpers import suite_main

ROOT = Path(__file__).resolve().parents[2]


def _row(backend="torch", impl="fused", op="softmax", pass_="forward", dtype="float32", case="normal_scale_1",
         verdict="inaccurate", message="100 scaled ULPs > bound 20", ulp=100.0, **kw) -> dict:
    return {"backend": backend, "backend_version": "9.9", "device": "cpu", "mode": "eager", "impl": impl, "op": op,
            "pass": pass_, "dtype": dtype, "case": case, "verdict": verdict, "message": message,
            "ulp_err_scaled": ulp, "ulp_bound": 20.0, "n_nonfinite": 0.0, "n_wrong_special": 0.0, "n_classes": 100,
            "exact_finite": verdict != "wrong_special", "tags": "random", **kw}


def test_kind_tells_defects_from_conventions():
    assert F.kind("ok", "") is None and F.kind("unsupported", "not implemented for 'Half'") is None
    assert F.kind("nonfinite", "1 NaN where the exact value is finite") == "defect"
    assert F.kind("inaccurate", "40 scaled ULPs > bound 16") == "defect"
    # another value where the exact answer is NaN (an undefined point) is a convention ...
    assert F.kind("wrong_special", "2 differ from the exact special value (NaN/inf): finite for NaN (2)") == \
        "convention"
    # ... but NaN where the exact answer is +inf is wrong
    assert F.kind("wrong_special", "1 differ from the exact special value (NaN/inf): NaN for +inf (1)") == "defect"
    assert F.kind("wrong_special", "3 differ ...: -inf for NaN (2), NaN for -inf (1)") == "defect"


def test_a_plugins_ops_share_an_entry_and_float32_accuracy_in_float64_is_named():
    """A plug-in's ops that fail alike are one entry naming them; a float64 result with float32-sized errors
    is the float32-accuracy mechanism, and one that is 2x wrong is not."""
    ce = [_row(backend="jax", impl="my_loss", op=op, dtype="float64", case=c, max_rel_err=3e-8)
          for op in ("cross_entropy", "cross_entropy_mean") for c in ("normal_scale_1", "normal_scale_10")]
    twice = _row(backend="jax", impl="my_loss", op="softmax", dtype="float64", case="normal_scale_1", max_rel_err=1.0)
    found = F.derive(pd.DataFrame([*ce, twice]), reproducers=False)
    titles = sorted(f.title for f in found)
    assert titles == ["plug-in my_loss [cross_entropy, cross_entropy_mean]: float64 results with float32 accuracy",
                      "plug-in my_loss [softmax] forward: past the error bound in float64 (random cases)"], titles
    [f32] = [f for f in found if "float32 accuracy" in f.title]
    assert len(f32.rows) == 4 and "float32 rounding" in f32.mechanism
    [other] = [f for f in found if f is not f32]
    assert other.mechanism == F.UNKNOWN


def test_grouping_on_synthetic_rows():
    rows = pd.DataFrame([
        # one mechanism (torch.logsumexp backward) over three dtypes and two cases: one entry
        *[_row(op="logsumexp", pass_="backward", dtype=d, case=c, ulp=u)
          for d, c, u in (("float16", "large_offset_1e6", 50.0), ("float32", "large_offset_1e6", 4e5),
                          ("float64", "constant_large", 3e3))],
        # no known mechanism: split by dtype class (16-bit apart from 32/64-bit), merged within one
        _row(dtype="float32", case="normal_scale_1"), _row(dtype="float64", case="normal_scale_10"),
        _row(dtype="bfloat16", case="normal_scale_1"),
        # the suite's hand-written formulas are not findings
        _row(impl="naive", verdict="nonfinite", message="3 NaN where the exact value is finite"),
        _row(impl="shifted", op="cross_entropy"),
        # a plug-in is
        _row(backend="numpy", impl="my_softmax", verdict="error", message="ValueError: boom"),
        # a convention, apart
        _row(backend="tensorflow", op="softmax", dtype="float32", case="posinf_entry", verdict="wrong_special",
             message="2 differ from the exact special value (NaN/inf): finite for NaN (2)"),
        _row(verdict="ok", message=""),
    ])
    found = F.derive(rows, reproducers=False)
    defects = {f.title: f for f in found if f.kind == "defect"}
    assert [f.kind for f in found] == ["defect"] * 4 + ["convention"]
    lse = defects["torch.logsumexp backward loses accuracy at large logits"]
    assert lse.facts["dtypes"] == "float16/float32/float64" and lse.rows.case.nunique() == 2
    assert "4e+05 graded ULPs (bound 20), large_offset_1e6 float32" in lse.facts["worst"] and "u·|lse|" in lse.mechanism
    wide = [f for t, f in defects.items() if t.startswith("torch.softmax forward")]
    assert sorted(f.facts["dtypes"] for f in wide) == ["bfloat16", "float32/float64"]
    assert all(f.mechanism == F.UNKNOWN for f in wide)
    assert all("random cases" in f.title for f in wide)  # the cases' common tag
    [plugin] = [f for f in defects.values() if f.rows.impl.iloc[0] == "my_softmax"]
    assert plugin.title == "plug-in my_softmax [softmax]: raises (ValueError: boom)"
    assert not any(f.rows.impl.isin(["naive", "shifted"]).any() for f in found)
    [conv] = [f for f in found if f.kind == "convention"]
    assert conv.title == "tf.nn.softmax forward: finite where the convention says NaN"
    md = F.render_md(found)
    assert md.startswith("## Findings") and "### Conventions (not defects)" in md
    assert max(map(len, md.splitlines())) <= 160


def test_a_rows_group_does_not_depend_on_the_selection():
    """The same row gets the same title whether it is alone or among others."""
    one = _row(op="logsumexp", pass_="backward", dtype="float64", case="constant_large")
    alone = F.derive(pd.DataFrame([one]), reproducers=False)[0].title
    among = F.derive(pd.DataFrame([one, _row(), _row(backend="jax", op="log_softmax")]), reproducers=False)
    assert alone in [f.title for f in among]


def test_reasons_group_unsupported_and_error_rows():
    rows = pd.DataFrame([
        *[_row(dtype="float16", op="logsumexp", case=f"c{i}", verdict="unsupported",
               message='"logsumexp" not implemented for \'Half\'') for i in range(3)],
        _row(dtype="bfloat16", op="softmax", verdict="unsupported", message="bfloat16 is not supported\nmore"),
        _row(backend="jax", verdict="error", message="RuntimeError: boom"),
    ])
    assert F.reasons(rows, "unsupported") == ("unsupported 4: torch float16 logsumexp '\"logsumexp\" not implemented "
                                              "for 'Half'' (3); torch bfloat16 softmax 'bfloat16 is not supported' (1)")
    assert F.reasons(rows, "error") == "error 1: jax float32 softmax 'RuntimeError: boom' (1)"
    lines = F.summary_lines(rows)
    assert lines[0].startswith("findings: 1 defect(s)") and "raises" in lines[1]
    assert lines[-2].startswith("unsupported 4:") and lines[-1].startswith("error 1:")


def test_summary_lines_are_at_most_ten():
    rows = pd.DataFrame([_row(backend=b, pass_=p, dtype=d, verdict=v, message="1 NaN where the exact value is finite")
                         for b in ("torch", "jax", "tensorflow") for p in ("forward", "backward")
                         for d in ("float16", "float32") for v in ("nonfinite", "inaccurate")])
    lines = F.summary_lines(rows)
    assert len(lines) <= F.SUMMARY_LINES and "more (python -m suite report)" in lines[-1]


PLUGIN = '''
FRAMEWORK = "numpy"
NAME = "h5_raises"


def softmax(x):
    raise RuntimeError("boom from the plug-in")
'''


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A run of numpy's and torch's own ops (and a plug-in that raises) on cases where some fail, and its
    report: (run's stdout, report folder)."""
    d = tmp_path_factory.mktemp("findings")
    (d / "h5_raises.py").write_text(PLUGIN)
    backends = "numpy,torch" if importlib.util.find_spec("torch") else "numpy"
    p = suite_main("run", "--backends", backends, "--impls", "fused,h5_raises", "--plugin", str(d / "h5_raises.py"),
                   "--dtypes", "float16,float32", "--ops", "softmax,logsumexp,soft_cross_entropy,cross_entropy_mean",
                   "--cases", "mask_partial,normal_scale_10000,large_offset_1e6,posinf_entry", "--jobs", "1",
                   "--store", str(d / "store"), "--no-progress")
    assert p.returncode == 0, p.stderr
    r = suite_main("report", "--store", str(d / "store"), "--out", str(d / "out"))
    assert r.returncode == 0, r.stderr
    return p.stdout, d / "out"


def test_run_summary_names_findings_and_reasons(small):
    out, _ = small
    text = out.split("findings:", 1)[1].split("verdicts per backend", 1)[0]
    head = "findings:" + text
    assert "NaN from 0 · (−inf) on zero-probability classes" in head  # the soft CE of masked classes
    assert "plug-in h5_raises" in head and "raises" in head
    assert re.search(r"^error 16: numpy float16, float32 softmax 'PluginError: plug-in 'h5_raises' softmax raised "
                     "RuntimeError", head, re.M), head
    # one entry, not one per dtype
    assert re.search(r"^  plug-in h5_raises \[softmax\]: raises \(PluginError", head, re.M), head
    assert len([ln for ln in head.splitlines() if ln.strip()]) <= F.SUMMARY_LINES + 2  # + the reasons


def _framework(snippet: str) -> str:
    for name in ("torch", "tensorflow", "jax", "scipy"):
        if re.search(rf"^import {name}\b", snippet, re.M):
            return name
    return "numpy"


def test_every_reproducer_runs_as_pasted(small):
    """Each ```python block of the Findings: run alone in a fresh interpreter, from an empty folder; it must
    exit 0 and print the framework's value next to a different exact one (it reproduces the defect)."""
    _, out = small
    md = (out / "report.md").read_text()
    section = md.split("## Findings", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(snippets) >= 2, section[:2000]
    runnable = [s for s in snippets if importlib.util.find_spec(_framework(s))]
    assert runnable

    def go(s: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", s], capture_output=True, text=True, timeout=600, cwd=out)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(go, runnable))
    for s, p in zip(runnable, results, strict=True):
        assert p.returncode == 0, f"{s}\n{p.stderr[-2000:]}"
        first = re.search(r"^\[\d+\] \w+: (\S+)\s+exact: (\S+)$", p.stdout, re.M)
        assert first, f"{s}\n{p.stdout}"
        got, exact = (float(v) for v in first.groups())
        assert not (got == exact or (got != got and exact != exact)), f"does not reproduce:\n{s}\n{p.stdout}"


def test_published_report_is_short_and_starts_with_findings(tmp_path):
    """The published store's report.md: Findings first, at most 80 KB, findings lines that fit a 1,400 px
    window, the dense tables on the second page (about 30-60 s: the whole report is built)."""
    if not (ROOT / "results" / "accuracy").is_dir():
        pytest.skip("no published store in this checkout")
    p = suite_main("report", "--store", str(ROOT / "results"), "--out", str(tmp_path / "rep"))
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert len(md.encode()) <= 80_000, len(md.encode())
    assert md.split("\n## ", 1)[1].startswith("Findings")
    section = md.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert max(map(len, section.splitlines())) <= 160
    assert "```python" in section and "### Conventions (not defects)" in section
    assert "report-matrices.md#stability-matrix-cpu-forward" in md
    assert "## Stability matrix: cpu forward" in (tmp_path / "rep" / "report-matrices.md").read_text()
    assert "<details><summary>" in (tmp_path / "rep" / "report.html").read_text()
