"""Modes: eager and compiled rows side by side, the compiled outputs are what is graded, a compile failure
is an error row with the compiler's first line, a missing C++ compiler skips the mode with its reason,
--modes is checked, old stores without the mode column still read, and the report pairs the modes."""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pandas as pd
import pytest

from cases import CASES
from suite import cli, plugins, runner
from suite.runner import Plan, RunInfo, run

CASE = [c for c in CASES if c.name == "seed000_batch"]  # 3x3, [1000, 1, -1000]: a few compiles of one shape


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def plan(backends, modes, ops=("softmax",), impls=("fused",), **kw) -> Plan:
    return Plan(backends=list(backends), devices=["cpu"], dtypes=["float32"], ops=list(ops), impls=list(impls),
                passes=["forward", "backward"], cases=CASE, modes=modes, **kw)


@pytest.fixture(autouse=True)
def _fresh():
    """Compiled programs and plug-ins are per process; a test that patches `compile` must not see, or leave,
    programs built by another."""
    runner._STEPS.clear()
    runner._COMPILED.clear()
    plugins.clear()
    yield
    runner._STEPS.clear()
    runner._COMPILED.clear()
    plugins.clear()


FRAMEWORKS = [f for f in ("torch", "tensorflow") if installed(f)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_mode_column_and_compiled_rows_graded(framework):
    df, info = run(plan(["numpy", framework], ["eager", "compiled"]), progress=False)
    assert set(zip(df.backend, df["mode"], strict=True)) == {("numpy", "eager"), (framework, "eager"),
                                                              (framework, "compiled")}
    assert "numpy/cpu/compiled: numpy has no graph compiler" in info.skipped
    mine = df[df.backend == framework]
    assert (mine.verdict == "ok").all(), mine[["mode", "pass", "verdict", "message"]]
    assert mine[mine["mode"] == "eager"].compile_s.isna().all()
    compiled = mine[mine["mode"] == "compiled"]
    assert (compiled.compile_s >= 0).all() and len(compiled) == 2
    # the program behind the compiled rows is the framework's compiler's, not the eager function
    fwd = runner._STEPS[(id(runner.loaded(framework)), ("softmax", "fused", "forward"), 1.0, "compiled")]
    if framework == "torch":
        assert hasattr(fwd, "_torchdynamo_orig_callable")
    else:
        assert fwd.experimental_get_tracing_count() >= 1


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_compiled_output_is_what_is_graded(framework, monkeypatch):
    """A 'compiler' that doubles every output: the compiled rows (forward, and backward through it) must
    fail while the eager rows stay ok."""
    backend = runner.loaded(framework)
    real = type(backend).compile

    def doubling(self, fn):
        compiled = real(self, fn)
        return lambda *a: 2 * compiled(*a)

    monkeypatch.setattr(type(backend), "compile", doubling)
    df, _ = run(plan([framework], ["eager", "compiled"]), progress=False)
    assert (df[df["mode"] == "eager"].verdict == "ok").all()
    bad = df[df["mode"] == "compiled"]
    assert set(bad["pass"]) == {"forward", "backward"} and (bad.verdict != "ok").all(), bad


@pytest.mark.skipif(not installed("torch"), reason="torch not installed")
def test_torch_compile_failure_is_an_error_row_with_the_compilers_first_line(monkeypatch):
    backend = runner.loaded("torch")
    torch = backend.torch

    def broken_backend(gm, example_inputs):
        raise RuntimeError("fake Inductor: cannot lower aten.amax\nsecond line of the log")

    monkeypatch.setattr(type(backend), "compile", lambda self, fn: torch.compile(fn, backend=broken_backend,
                                                                                 fullgraph=True, dynamic=False))
    df, _ = run(plan(["torch"], ["eager", "compiled"], impls=("fused", "shifted")), progress=False)
    compiled = df[df["mode"] == "compiled"]
    assert len(compiled) == 4 and (compiled.verdict == "error").all()  # every row tried: the run went on
    assert (compiled.message == "compile failed: RuntimeError: fake Inductor: cannot lower aten.amax").all()
    assert (df[df["mode"] == "eager"].verdict == "ok").all()


@pytest.mark.skipif(not installed("tensorflow"), reason="tensorflow not installed")
def test_xla_compile_failure_is_an_error_row(tmp_path):
    """A real XLA failure: tf.numpy_function cannot be compiled by XLA; eager runs it fine."""
    f = tmp_path / "tf_pyfunc.py"
    f.write_text(textwrap.dedent("""
        import numpy as np
        import tensorflow as tf

        FRAMEWORK = "tensorflow"

        def softmax(x):
            def sm(a):
                e = np.exp(a - a.max(axis=-1, keepdims=True))
                return (e / e.sum(axis=-1, keepdims=True)).astype(a.dtype)
            y = tf.numpy_function(sm, [x], x.dtype)
            return tf.ensure_shape(y, x.shape)
    """))
    found = plugins.load_all([str(f)])
    p = plan(["tensorflow"], ["eager", "compiled"], impls=("fused", "tf_pyfunc"), plugins=[x.source for x in found])
    df, _ = run(p, progress=False)
    fwd = df[(df.impl == "tf_pyfunc") & (df["pass"] == "forward")].set_index("mode")
    assert fwd.loc["eager", "verdict"] == "ok"
    assert fwd.loc["compiled", "verdict"] == "error"
    msg = fwd.loc["compiled", "message"]
    assert msg.startswith("compile failed: ") and "\n" not in msg and "XLA" in msg, msg
    assert (df[df.impl == "fused"].verdict == "ok").all()  # the run went on


@pytest.mark.skipif(not installed("torch"), reason="torch not installed")
def test_missing_cxx_compiler_skips_torch_compiled_with_the_reason(monkeypatch):
    import backends.torch_backend as tb

    monkeypatch.setattr(tb.shutil, "which", lambda name: None)
    df, info = run(plan(["torch"], ["eager", "compiled"]), progress=False)
    assert set(df["mode"]) == {"eager"} and (df.verdict == "ok").all()
    (skip,) = [s for s in info.skipped if s.startswith("torch/cpu/compiled")]
    assert "no C++ compiler for Inductor" in skip and "g++" in skip


def test_a_costly_mode_reason_is_found_only_when_that_mode_is_selected():
    """torch's reason for skipping `compiled` (no C++ compiler) imports Inductor's config, ~1 s in every
    worker: a backend may give it as a function, called only when `compiled` is asked for."""
    calls = []

    class Fake:
        name, default_mode = "fake", "eager"

        def modes(self, device):
            return {"eager": None, "compiled": lambda: calls.append(device) or "no compiler here"}

    info = RunInfo()
    assert runner.usable_modes(Fake(), "cpu", None, info) == ["eager"] and calls == [] and not info.skipped
    assert runner.usable_modes(Fake(), "cpu", ["eager", "compiled"], info) == ["eager"] and calls == ["cpu"]
    assert info.skipped == ["fake/cpu/compiled: no compiler here"]


def test_default_modes_are_each_frameworks_own():
    info = RunInfo()
    np_backend = runner.loaded("numpy")
    assert runner.usable_modes(np_backend, "cpu", None, info) == ["eager"] and not info.skipped
    if installed("jax"):
        jax = runner.loaded("jax")
        assert runner.usable_modes(jax, "cpu", None, info) == ["compiled"]
        assert runner.usable_modes(jax, "cpu", ["eager"], info) == []
        assert any(s.startswith("jax/cpu/eager: not run") for s in info.skipped)


@pytest.mark.parametrize("command", ["run", "bench"])
def test_bad_mode_is_a_one_line_usage_error(tmp_path, capsys, command):
    store = tmp_path / "s"
    assert cli.main([command, "--backends", "numpy", "--modes", "eager,jit", "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'jit'" in err and "valid modes: eager, compiled" in err, err
    assert not store.exists()


def _rows(backend: str, mode: str | None, verdicts: list[str], errors: list[float]) -> pd.DataFrame:
    n = len(verdicts)
    df = pd.DataFrame({"backend": backend, "backend_version": "1.0", "device": "cpu", "dtype": "float32",
                       "op": "softmax", "impl": "fused", "case": [f"c{i}" for i in range(n)], "pass": "forward",
                       "verdict": verdicts, "ulp_err_scaled": errors, "ulp_bound": 8.0, "message": "",
                       "exact_finite": True, "temperature": 1.0, "n_classes": 3.0})
    return df if mode is None else df.assign(mode=mode)


def test_old_store_without_mode_reads_with_the_mode_it_ran_in(tmp_path):
    from suite.store import Store

    st = Store(tmp_path)
    st.write_table("accuracy", pd.concat([_rows("jax", None, ["ok"], [0.5]), _rows("torch", None, ["ok"], [0.5])]),
                   "20250101T000000Z-old")
    df = st.load("accuracy")
    assert dict(zip(df.backend, df["mode"], strict=True)) == {"jax": "compiled", "torch": "eager"}


def test_report_lists_rows_that_differ_between_modes(tmp_path):
    from suite import report
    from suite.store import Store

    st = Store(tmp_path)
    st.write_table("accuracy", _rows("torch", None, ["ok", "ok", "ok", "ok"], [0.5, 3.0, 1.0, 2.0]), "r1-old")
    st.write_table("accuracy", _rows("torch", "compiled", ["ok", "ok", "inaccurate", "ok"], [0.9, 7.0, 40.0, 2.5]),
                   "r2-compiled")
    data = report.load(st, None)
    summ, diff = report.eager_vs_compiled(data.newest(data.accuracy))
    assert set(diff.case) == {"c1", "c2"}  # c1: 3 -> 7 ULP (> x2); c2: verdict; c0 under 1 ULP; c3 x1.25
    assert summ["verdict differs"].sum() == 1 and summ["error grew > x2"].sum() == 2
    paths = report.write(data, tmp_path / "rep", "# test\n")
    md = (tmp_path / "rep" / "report.md").read_text()
    section = md.split("## Eager vs compiled", 1)[1].split("\n## ", 1)[0]
    assert "| c2 " in section and "| c1 " in section and "| c3 " not in section.split("### compiled")[0]
    assert any(p.name.startswith("eager_vs_compiled") for p in paths)
    # the main stability matrix shows torch's own mode (eager) only
    assert np.all(report.native(data.newest(data.accuracy))["mode"] == "eager")
