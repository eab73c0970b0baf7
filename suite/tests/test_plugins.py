"""Plug-ins and the `online` implementation: every example plug-in graded end to end, the wrong one
flagged where the seeds fail, every unusable plug-in an exit-2 one-liner before any compute, run-time
misbehaviour as `error` rows, entry points, and `online` as accurate as two-pass `shifted`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite import cli, plugins
from suite.formulas import fold_chunks
from suite.runner import Plan, run
from suite.tests.helpers import _fresh_plugin_registry, installed, suite_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "plugins"
STABLE_EXAMPLES = {"numpy_stable.py": "numpy", "torch_stable.py": "torch", "tensorflow_stable.py": "tensorflow",
                   "jax_stable.py": "jax"}


_fresh_registry = pytest.fixture(autouse=True)(_fresh_plugin_registry)


def suite_cli(*args: str) -> subprocess.CompletedProcess:
    """The real `python -m suite`, in a fresh interpreter (the examples run through its `main` in this
    process, with --jobs 1: workers loading a plug-in are tested on their own below)."""
    return subprocess.run([sys.executable, "-m", "suite", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def write(d: Path, name: str, body: str) -> Path:
    f = d / name
    f.write_text(textwrap.dedent(body))
    return f


# --- the examples, end to end --------------------------------------------------------------------

@pytest.mark.parametrize(("file", "framework"), sorted(STABLE_EXAMPLES.items()))
def test_example_plugin_runs_and_is_ok(tmp_path, file, framework):
    if not installed(framework):
        pytest.skip(f"{framework} not installed")
    store = tmp_path / "store"
    p = suite_main("run", "--plugin", str(EXAMPLES / file), "--cases", "seed", "--dtypes", "float32",
                   "--backends", f"numpy,{framework}", "--impls", f"shifted,{Path(file).stem}",
                   "--store", str(store), "--jobs", "1", "--no-progress")
    assert p.returncode == 0, p.stderr
    df = pd.read_parquet(store / "accuracy")
    mine = df[df.impl == Path(file).stem]
    assert set(mine.backend) == {framework}  # a plug-in runs on its own framework only
    assert len(mine) == 18 * 6 * 2  # seed cases x ops x passes
    assert not mine.verdict.isin(["error", "unsupported", "nonfinite"]).any(), mine.message.unique()
    shifted = df[(df.impl == "shifted") & (df.backend == framework)]
    assert (mine.verdict == "ok").sum() >= (shifted.verdict == "ok").sum() - 2
    env = next((store / "runs").glob("*/accuracy.json")).read_text()
    assert Path(file).stem in env and "sha256" in env


def test_wrong_example_is_flagged_where_the_seeds_fail(tmp_path):
    store = tmp_path / "store"
    p = suite_main("run", "--plugin", str(EXAMPLES / "numpy_naive.py"), "--cases", "seed", "--dtypes", "float32",
                   "--backends", "numpy", "--impls", "naive,seed_naive", "--store", str(store), "--no-progress")
    assert p.returncode == 0, p.stderr
    df = pd.read_parquet(store / "accuracy").set_index(["op", "case", "pass"])
    mine, naive = df[df.impl == "seed_naive"], df[df.impl == "naive"]
    # seed 000: [1000, 1, -1000] overflows exp in float32; seed 003's linspace(-1, 500) too
    for case in ("seed000_batch", "seed003_linspace500", "seed004_big"):
        assert mine.loc[("softmax", case, "forward"), "verdict"] == "nonfinite", case
        assert mine.loc[("cross_entropy", case, "forward"), "verdict"] == "nonfinite", case
    defined = mine[mine.verdict != "unsupported"]
    assert (defined.verdict == naive.loc[defined.index].verdict).all()  # the same formula, the same verdicts
    missing = mine[mine.verdict == "unsupported"]
    assert set(missing.index.get_level_values("op")) == {"logsumexp", "cross_entropy_mean", "soft_cross_entropy"}
    assert missing.message.str.contains("plug-in 'seed_naive'").all()


# --- unusable plug-ins: exit 2, one line, nothing written ----------------------------------------

BAD = {
    "import error": ("import no_such_module_xyz\nFRAMEWORK = 'numpy'\n", "ModuleNotFoundError"),
    "syntax error": ("def softmax(x:\n", "SyntaxError"),
    "no FRAMEWORK": ("def softmax(x):\n    return x\n", "no FRAMEWORK"),
    "unknown FRAMEWORK": ("FRAMEWORK = 'mxnet'\ndef softmax(x):\n    return x\n", "unknown FRAMEWORK 'mxnet'"),
    "built-in NAME": ("FRAMEWORK = 'numpy'\nNAME = 'shifted'\ndef softmax(x):\n    return x\n", "clashes"),
    "bad NAME": ("FRAMEWORK = 'numpy'\nNAME = 'a,b'\ndef softmax(x):\n    return x\n", "NAME 'a,b'"),
    "wrong signature": ("FRAMEWORK = 'numpy'\ndef cross_entropy(x):\n    return x\n",
                        "cross_entropy(x) cannot be called as cross_entropy(x, targets)"),
    "extra argument": ("FRAMEWORK = 'numpy'\ndef softmax(x, axis):\n    return x\n", "softmax(x, axis)"),
    "not callable": ("FRAMEWORK = 'numpy'\nsoftmax = 3\n", "softmax is a int"),
    "no ops": ("FRAMEWORK = 'numpy'\n", "defines none of"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_unusable_plugin_is_a_one_line_usage_error(tmp_path, capsys, kind):
    body, mention = BAD[kind]
    f = write(tmp_path, "bad_plugin.py", body)
    store = tmp_path / "store"
    code = cli.main(["run", "--plugin", str(f), "--backends", "numpy", "--cases", "seed004_vec",
                     "--store", str(store), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert str(f) in err and mention in err, err
    assert not store.exists()


def test_unusable_plugin_from_the_command_line(tmp_path):
    """The real CLI: no traceback, exit 2, one line, for a missing file and an unimportable module."""
    for ref in (str(tmp_path / "nowhere.py"), "no_such_plugin_module_xyz"):
        p = suite_cli("run", "--plugin", ref, "--backends", "numpy", "--store", str(tmp_path / "s"))
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and ref in p.stderr, p.stderr
        assert not (tmp_path / "s").exists()


def test_two_plugins_with_one_name(tmp_path, capsys):
    a = write(tmp_path, "a.py", "FRAMEWORK = 'numpy'\nNAME = 'mine'\ndef softmax(x):\n    return x\n")
    b = write(tmp_path, "b.py", "FRAMEWORK = 'numpy'\nNAME = 'mine'\ndef softmax(x):\n    return x\n")
    assert cli.main(["run", "--plugin", str(a), "--plugin", str(b), "--backends", "numpy",
                     "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "'mine'" in err and str(a) in err and str(b) in err


def test_framework_not_installed(tmp_path, monkeypatch):
    from suite import backend_api

    real = backend_api.discover()
    fake = {**real, "numpy": backend_api.BackendInfo("numpy", "no_such_framework_xyz", "backends.numpy_backend",
                                                     "pip install no_such_framework_xyz")}
    monkeypatch.setattr(backend_api, "discover", lambda: fake)
    f = write(tmp_path, "p.py", "FRAMEWORK = 'numpy'\ndef softmax(x):\n    return x\n")
    with pytest.raises(plugins.UsageError, match="not installed.*pip install no_such_framework_xyz"):
        plugins.load(plugins.source_of(str(f)))


def test_plugin_named_in_impls_needs_its_backend(tmp_path, capsys):
    f = write(tmp_path, "tp.py", "FRAMEWORK = 'torch'\ndef softmax(x):\n    return x\n")
    if not installed("torch"):
        pytest.skip("torch not installed")
    assert cli.main(["run", "--plugin", str(f), "--backends", "numpy", "--impls", "tp",
                     "--store", str(tmp_path / "s")]) == 2
    assert "runs on torch" in capsys.readouterr().err


# --- run-time misbehaviour: error rows, the run goes on ------------------------------------------

MISBEHAVING = """
    import numpy as np
    FRAMEWORK = "numpy"
    NAME = "bad"

    def softmax(x):
        e = np.exp(x - np.max(x, axis=-1, keepdims=True))
        return e / np.sum(e, axis=-1, keepdims=True)

    def log_softmax(x):
        raise ValueError("my kernel is broken")

    def logsumexp(x):
        return np.zeros(x.shape, x.dtype)              # classes kept: wrong shape

    def cross_entropy(x, targets):
        return np.zeros(x.shape[:-1], np.float64)      # float64 for float32

    def cross_entropy_mean(x, targets):
        return [0.0]                                   # a Python list

    def soft_cross_entropy(x, probs):
        return {}
"""


def _plugin_rows(path: Path, backend: str = "numpy", cases=("seed004_vec",), dtypes=("float32",),
                 impls=None) -> pd.DataFrame:
    from cases import CASES

    found = plugins.load_all([str(path)], entry_points=False)
    plan = Plan(backends=[backend], devices=["cpu"], dtypes=list(dtypes), ops=list(plugins.SIGNATURES),
                impls=impls or [p.name for p in found], passes=["forward", "backward"],
                cases=[c for c in CASES if c.name in cases], plugins=[p.source for p in found])
    df, _ = run(plan, progress=False)
    return df.set_index(["op", "pass"])


def test_misbehaving_plugin_gives_error_rows(tmp_path):
    df = _plugin_rows(write(tmp_path, "bad.py", MISBEHAVING))
    fwd = df.xs("forward", level="pass")
    assert df.loc[("softmax", "backward")].verdict == "ok"
    expected = {"softmax": "", "log_softmax": "raised ValueError: my kernel is broken",
                "logsumexp": "returned shape (5,), expected ()", "cross_entropy": "returned float64 for float32 x",
                "cross_entropy_mean": "returned a Python list", "soft_cross_entropy": "returned a Python dict"}
    for op, says in expected.items():
        assert fwd.loc[op].verdict == ("ok" if not says else "error"), (op, fwd.loc[op].message)
        assert says in fwd.loc[op].message, (op, fwd.loc[op].message)


@pytest.mark.parametrize("framework", ["torch", "tensorflow", "jax"])
def test_another_frameworks_array_is_an_error_row(tmp_path, framework):
    if not installed(framework):
        pytest.skip(f"{framework} not installed")
    f = write(tmp_path, f"np_in_{framework}.py", f"""
        import numpy as np
        FRAMEWORK = "{framework}"
        def softmax(x):
            return np.ones(tuple(x.shape), np.float32)
    """)
    df = _plugin_rows(f, backend=framework)
    row = df.loc[("softmax", "forward")]
    assert row.verdict == "error" and f"numpy.ndarray, not a {framework} array" in row.message, row.message
    assert df.loc[("logsumexp", "forward")].verdict == "unsupported"
    assert "defines no logsumexp" in df.loc[("logsumexp", "forward")].message


def test_numpy_backward_needs_the_plugins_softmax(tmp_path):
    f = write(tmp_path, "lse_only.py", """
        import numpy as np
        FRAMEWORK = "numpy"
        def logsumexp(x):
            m = np.max(x, axis=-1, keepdims=True)
            return (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))[..., 0]
    """)
    df = _plugin_rows(f)
    assert df.loc[("logsumexp", "forward")].verdict == "ok"
    row = df.loc[("logsumexp", "backward")]
    assert row.verdict == "unsupported" and "defines no softmax" in row.message


def test_plugin_rows_only_on_its_framework(tmp_path):
    if not installed("torch"):
        pytest.skip("torch not installed")
    from cases import CASES

    found = plugins.load_all([str(EXAMPLES / "numpy_stable.py")], entry_points=False)
    plan = Plan(backends=["numpy", "torch"], devices=["cpu"], dtypes=["float32"], ops=["softmax"],
                impls=["shifted", "numpy_stable"], passes=["forward"],
                cases=[c for c in CASES if c.name == "seed004_vec"], plugins=[p.source for p in found])
    df, _ = run(plan, progress=False)
    assert set(df[df.impl == "numpy_stable"].backend) == {"numpy"}
    assert set(df[df.impl == "shifted"].backend) == {"numpy", "torch"}


def test_plugins_in_worker_processes(tmp_path):
    """--jobs > 1: workers are spawned and load the plug-in again from its source."""
    from cases import CASES

    found = plugins.load_all([str(EXAMPLES / "numpy_stable.py")], entry_points=False)
    plan = Plan(backends=["numpy"], devices=["cpu"], dtypes=["float32", "float64"], ops=["softmax"],
                impls=["numpy_stable"], passes=["forward"], cases=[c for c in CASES if c.name == "seed004_vec"],
                plugins=[p.source for p in found])
    df, _ = run(plan, progress=False, jobs=2)
    assert list(df.verdict) == ["ok", "ok"]


# --- entry points -------------------------------------------------------------------------------

def test_entry_point_plugin_joins_the_default_selection(tmp_path, monkeypatch):
    write(tmp_path, "my_softmax_pkg.py", """
        import numpy as np
        FRAMEWORK = "numpy"
        def softmax(x):
            e = np.exp(x - np.max(x, axis=-1, keepdims=True))
            return e / np.sum(e, axis=-1, keepdims=True)
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="pkg_softmax", value="my_softmax_pkg", group=plugins.GROUP)
    seen = []

    def fake(**kw):
        seen.append(kw)
        return [ep] if kw.get("group") == plugins.GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    args = cli._parser().parse_args(["run", "--backends", "numpy", "--dtypes", "float32", "--ops", "softmax",
                                     "--cases", "seed004_vec"])
    plan = cli._plan(args)
    assert seen and "pkg_softmax" in plan.impls and "shifted" in plan.impls
    df, _ = run(plan, progress=False)
    row = df[df.impl == "pkg_softmax"].set_index("pass")
    assert row.verdict.tolist() == ["ok", "ok"]


# --- online ---------------------------------------------------------------------------------------

def _small_cases():
    from cases import CASES

    return [c for c in CASES if c.n_classes <= 100]


@pytest.mark.parametrize("chunk", [1024, 3])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_online_is_as_good_as_shifted(monkeypatch, backend, chunk):
    """On every small catalog case in float32/float64, `online` is ok wherever `shifted` is; with
    3-class chunks every case runs the rescaling path of a wide row."""
    if not installed(backend):
        pytest.skip(f"{backend} not installed")
    import suite.formulas

    monkeypatch.setattr(suite.formulas, "ONLINE_CHUNK", chunk)
    plan = Plan(backends=[backend], devices=["cpu"], dtypes=["float32", "float64"], ops=list(plugins.SIGNATURES),
                impls=["shifted", "online"], passes=["forward", "backward"], cases=_small_cases())
    df, _ = run(plan, progress=False)
    key = ["dtype", "op", "case", "pass"]
    on = df[df.impl == "online"].set_index(key).verdict
    sh = df[df.impl == "shifted"].set_index(key).verdict
    assert len(on) == len(sh) > 1000
    worse = on[(sh == "ok") & (on != "ok")]
    assert worse.empty, worse.head(20)
    assert (on == "ok").sum() >= 0.95 * len(on)
    assert (df[df.impl == "online"].message.str.contains(f"chunk {chunk}")).all()  # the recorded parameter


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_online_chunks_in_every_backend(backend):
    """Multi-chunk online (JAX: lax.scan with -inf padding, under jax.jit) agrees with two-pass
    shifted to a few ULPs, forward and backward, with a masked leading chunk."""
    if not installed(backend):
        pytest.skip(f"{backend} not installed")
    from suite.runner import loaded, step

    b = loaded(backend)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2500)) * 20
    x[1, :1500] = -np.inf
    g = rng.standard_normal(x.shape)
    args = (b.put(x, "float64", "cpu"), None, None, b.put(g, "float64", "cpu"))
    for pass_ in ("forward", "backward"):
        on = b.to_numpy(b.compile(step(b, "online", "log_softmax", pass_))(*args))
        sh = b.to_numpy(b.compile(step(b, "shifted", "log_softmax", pass_))(*args))
        np.testing.assert_allclose(on, sh, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_online_split_chunks_are_the_sliced_chunks(monkeypatch, backend, dtype):
    """The eager frameworks cut `online`'s chunks with their split op (one gradient concat instead of one
    zero-padded gradient per slice): forward and backward outputs are bit for bit those of slicing, except
    the sign of a zero gradient (adding slicing's +0 padding turned -0 into +0), which no metric sees."""
    if not installed(backend):
        pytest.skip(f"{backend} not installed")
    from suite.runner import loaded, step

    b = loaded(backend)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2600)) * 8
    x[1, :1100] = -np.inf  # a masked leading chunk
    args = (b.put(x, dtype, "cpu"), b.put_targets(np.array([5, 2000]), "cpu"), None,
            b.put(rng.standard_normal(x.shape), dtype, "cpu"))

    def outputs():
        return [np.asarray(b.to_numpy(step(b, "online", op, p)(*args[:3], args[3] if op != "cross_entropy" else
                                                                   b.put(np.ones(2), dtype, "cpu"))))
                for op in ("softmax", "cross_entropy") for p in ("forward", "backward")]

    split = outputs()
    monkeypatch.setattr(b.xp, "fold_chunks", fold_chunks)  # plain slicing
    sliced = outputs()
    for a, c in zip(split, sliced, strict=True):
        assert np.isfinite(a).any() and np.array_equal(a, c, equal_nan=True)
        differ = a.view(np.uint64) != c.view(np.uint64)  # float64 copies of the dtype's values
        assert (a[differ] == 0).all()


def test_plugin_rows_reach_the_report(tmp_path):
    """The stability matrix lists plug-in impls after the built-ins (rows op x impl)."""
    from suite import report

    df = _plugin_rows(EXAMPLES / "numpy_stable.py", impls=["shifted", "numpy_stable"]).reset_index()
    df["run_id"] = "r"
    table = report.stability(df)["cpu forward"]
    assert "softmax · numpy_stable" in table.index and "softmax · shifted" in table.index
    assert list(table.index).index("softmax · shifted") < list(table.index).index("softmax · numpy_stable")
