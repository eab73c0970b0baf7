"""The zoo (zoo/, docs/zoo.md): every zoo plug-in whose libraries are installed graded on the seed cases in
worker processes (skipped, with what it lacks, otherwise); plug-ins' ENV read without importing them and set
in their own workers only; a plug-in's exception is `unsupported` when any library's wording says the dtype
is refused, and an `error` otherwise."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite import plugins
from suite.backend_api import BaseBackend, dtype_refused
from suite.runner import Plan, run
from suite.selection import select_cases
from suite.tests.helpers import _fresh_plugin_registry, one_line_error, suite_main
from suite.workers import HIDE_GPU_ENV, make_tasks, worker_env

_fresh_registry = pytest.fixture(autouse=True)(_fresh_plugin_registry)

ZOO = plugins.zoo_files()
DTYPES = ("float16", "float32")
WELL_BEHAVED = ("seed003_linspace1", "seed004_vec")  # every library gets these right in float32


def write(d: Path, name: str, body: str) -> Path:
    path = d / name
    path.write_text(textwrap.dedent(body))
    return path


def _plan(found: list, cases, dtypes=("float32",), backends=None) -> Plan:
    from cases import CASES

    picked = select_cases(list(cases)) if cases == ("seed",) else [c for c in CASES if c.name in cases]
    return Plan(backends=backends or sorted({p.framework for p in found}), devices=["cpu"], dtypes=list(dtypes),
                ops=list(plugins.SIGNATURES), impls=[p.name for p in found], passes=["forward", "backward"],
                cases=picked, plugins=[p.source for p in found])


@pytest.fixture(scope="module")
def zoo_rows() -> pd.DataFrame:
    """One run of every installed zoo plug-in (not Liger: it needs a GPU) on the seed cases in float16 and
    float32 (the published run has all four dtypes), in workers (an ENV plug-in cannot run in this process)."""
    usable = [str(p) for p in ZOO if p.stem != "liger" and not plugins.missing_libraries(p)]
    if not usable:
        pytest.skip("no zoo library installed (pip install -e '.[zoo]' -c constraints/lock-cpu.txt)")
    plugins.clear()
    try:
        found = plugins.load_all(usable, entry_points=False)
        df, _ = run(_plan(found, ("seed",), DTYPES), progress=False, jobs=2)
    finally:
        plugins.clear()
    return df


@pytest.mark.parametrize("path", [p for p in ZOO if p.stem != "liger"], ids=lambda p: p.stem)
def test_zoo_plugin_on_the_seed_cases(path, zoo_rows):
    lacking = plugins.missing_libraries(path)
    if lacking:
        pytest.skip(f"{path.stem}: {', '.join(lacking)} not installed")
    mine = zoo_rows[zoo_rows.impl == path.stem]
    defined = mine[~mine.message.fillna("").str.contains("defines no")]
    ops = sorted(defined.op.unique())
    assert ops, f"{path.stem}: no op computed ({mine.message.unique()[:3]})"
    assert len(defined) == len(ops) * 2 * len(DTYPES) * len(select_cases(["seed"])), "a row missing"
    wide = defined[defined.dtype == "float32"]
    assert not (wide.verdict == "error").any(), wide[wide.verdict == "error"].message.unique()
    easy = defined[(defined.dtype == "float32") & defined.case.isin(WELL_BEHAVED)]
    assert (easy.verdict == "ok").all(), easy[easy.verdict != "ok"][["op", "pass", "case", "message"]]


def test_sklearn_float16_is_unsupported_not_an_error(zoo_rows):
    """HalfMultinomialLoss's Cython kernels exist for float32/float64: float16 gets Cython's fused-type
    dispatch error, 'Function call with ambiguous argument types', which says the dtype is refused."""
    rows = zoo_rows[(zoo_rows.impl == "sklearn_multinomial_numpy") & (zoo_rows.op == "cross_entropy")
                    & (zoo_rows["pass"] == "forward")]  # backward: the suite's VJP with its softmax (float16 ok)
    if rows.empty:
        pytest.skip("scikit-learn not installed")
    half = rows[rows.dtype == "float16"]
    assert (half.verdict == "unsupported").all() and half.message.str.contains("ambiguous argument types").all()


def test_zoo_expands_to_the_installed_plugins(tmp_path, monkeypatch):
    notes: list[str] = []
    got = plugins._expand(["zoo", "x.py"], notes)
    assert got[-1] == "x.py"
    named = {Path(p).stem for p in got[:-1]} | {n.split()[2] for n in notes}
    assert named == {p.stem for p in ZOO}  # each zoo plug-in is loaded or said to be skipped
    lacking = write(tmp_path, "needs_more.py", """
        import numpy as np
        import not_a_library_anyone_installed.sub
        FRAMEWORK = "numpy"
        def softmax(x):
            return x
    """)
    assert plugins.missing_libraries(lacking) == ["not_a_library_anyone_installed"]
    monkeypatch.setattr(plugins, "zoo_files", lambda: [lacking])
    notes = []
    assert plugins._expand(["zoo"], notes) == []
    assert "needs_more skipped: not_a_library_anyone_installed not installed" in notes[0]


# ---- ENV: read without import, set in the plug-in's own workers only

PROBE = """
    import os
    import numpy as np
    FRAMEWORK = "numpy"
    NAME = "probe_{v}"
    ENV = {{"SUITE_ZOO_PROBE": "{v}"}}
    with open({log!r}, "a") as f:  # who imported me, seeing what
        f.write(f"{{os.getpid()}} {{os.environ.get('SUITE_ZOO_PROBE')}} {{os.environ.get('CUDA_VISIBLE_DEVICES')}}\\n")

    def softmax(x):
        if os.environ.get("SUITE_ZOO_PROBE") != "{v}":
            raise RuntimeError("called without my ENV")
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
"""


def test_env_plugins_run_in_workers_of_their_own(tmp_path, monkeypatch):
    monkeypatch.delenv("SUITE_ZOO_PROBE", raising=False)
    log = tmp_path / "imports.log"
    files = [str(write(tmp_path, f"probe_{v}.py", PROBE.format(v=v, log=str(log)))) for v in "ab"]
    found = plugins.load_all(files, entry_points=False)
    assert [dict(p.source.env) for p in found] == [{"SUITE_ZOO_PROBE": "a"}, {"SUITE_ZOO_PROBE": "b"}]
    checked = log.read_text().split()
    assert str(os.getpid()) not in checked[::3], "the checking process imported a plug-in with another ENV"
    tasks = make_tasks(_plan(found, WELL_BEHAVED, ("float32", "float64")), gpu=False)
    assert {t.group: t.env for t in tasks} == {f: {"SUITE_ZOO_PROBE": v} for f, v in zip(files, "ab", strict=True)}
    df, _ = run(_plan(found, WELL_BEHAVED, ("float32", "float64")), progress=False, jobs=1)
    soft = df[(df.op == "softmax")]
    assert len(soft) == 2 * 2 * 2 * 2 and (soft.verdict == "ok").all(), soft.message.unique()
    seen: dict[str, set] = {}
    for line in log.read_text().splitlines():
        pid, value, _ = line.split(" ")
        seen.setdefault(pid, set()).add(value)
    assert str(os.getpid()) not in seen
    assert all(len(v) == 1 for v in seen.values()), f"one process imported both: {seen}"  # jobs=1: one slot
    assert {v for s in seen.values() for v in s} == {"a", "b"}


def test_env_of_the_process_itself_imports_here(tmp_path, monkeypatch):
    """A plug-in whose ENV this process already has is checked here, as any other."""
    log = tmp_path / "imports.log"
    f = write(tmp_path, "probe_a.py", PROBE.format(v="a", log=str(log)))
    monkeypatch.setenv("SUITE_ZOO_PROBE", "a")
    (p,) = plugins.load_all([str(f)], entry_points=False)
    assert log.read_text().split()[0] == str(os.getpid())
    assert p.ops["softmax"](np.zeros((1, 2))).tolist() == [[0.5, 0.5]]


def test_the_gpu_stays_hidden_whatever_env_says():
    env = worker_env(gpu=False, plugin_env={"CUDA_VISIBLE_DEVICES": "0", "KERAS_BACKEND": "jax"})
    assert env["KERAS_BACKEND"] == "jax" and env["CUDA_VISIBLE_DEVICES"] == HIDE_GPU_ENV["CUDA_VISIBLE_DEVICES"]


@pytest.mark.parametrize("env", ['{"A": 1}', "dict(A='1')", '["A"]'])
def test_a_malformed_env_is_a_one_line_usage_error(tmp_path, env):
    f = write(tmp_path, "bad_env.py", f'FRAMEWORK = "numpy"\nENV = {env}\ndef softmax(x):\n    return x\n')
    p = suite_main("run", "--plugin", str(f), "--backends", "numpy", "--cases", "seed004_vec", "--store",
                   str(tmp_path / "store"), "--no-entry-points")
    one_line_error(p, 2, "bad_env.py", "ENV must be a literal dict of strings")
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.parquet"))


def test_an_env_plugin_that_fails_its_check_is_a_one_line_usage_error(tmp_path):
    f = write(tmp_path, "env_nofw.py", 'ENV = {"SUITE_ZOO_PROBE": "z"}\ndef softmax(x):\n    return x\n')
    p = suite_main("run", "--plugin", str(f), "--backends", "numpy", "--store", str(tmp_path / "s"),
                   "--no-entry-points")
    one_line_error(p, 2, "env_nofw.py", "no FRAMEWORK")


# ---- a plug-in's exception: unsupported when it says the dtype is refused, whoever raised it

REFUSALS = {  # what libraries say when they have no code for a dtype
    "scikit-learn (Cython fused types)": TypeError("Function call with ambiguous argument types"),
    "Cython, no match": TypeError("No matching signature found"),
    "torch": RuntimeError('"log_softmax_lastdim_kernel_impl" not implemented for \'Half\''),
    "TensorFlow attr": ValueError("Value for attr 'T' of bfloat16 is not in the list of allowed values: float, double"),
    "TensorFlow kernel": RuntimeError("Could not find device for node: {{node Softmax}} = Softmax[T=DT_HALF]"),
    "numpy ufunc": TypeError("ufunc 'logaddexp' not supported for the input types, and the inputs could not be "
                             "safely coerced to any supported types"),
    "numba": TypeError("No implementation of function Function(<built-in function exp>) found for signature:\n"
                       " >>> exp(float16)"),
    "scipy on ml_dtypes": TypeError("dtype argument must be a NumPy dtype"),
    "triton": ValueError("Unsupported dtype bf16 for tl.exp"),
    "a library's own words": NotImplementedError("float64 is not supported by this kernel"),
}
REAL_ERRORS = {  # bugs, even when they mention a type or say 'unsupported'
    "bad call": TypeError("softmax() got an unexpected keyword argument 'dim'"),
    "None arithmetic": TypeError("unsupported operand type(s) for +: 'NoneType' and 'int'"),
    "bad option": ValueError("Unsupported reduction: 'avg'"),
    "mixed dtypes": RuntimeError("expected scalar type Float but found Double"),
    "cast": TypeError("Cannot cast ufunc 'subtract' output from dtype('float64') to dtype('int64') with casting "
                      "rule 'same_kind'"),
    "index": IndexError("index 7 is out of bounds for axis 1 with size 5"),
    "stub": NotImplementedError("TODO"),
    "NaN input": ValueError("Input contains NaN."),
}


def _raised(exc: Exception) -> plugins.PluginError:
    try:
        try:
            raise exc
        except Exception as inner:
            raise plugins.PluginError(f"plug-in 'p' softmax raised {type(inner).__name__}: {inner}") from inner
    except plugins.PluginError as outer:
        return outer


@pytest.mark.parametrize("who", list(REFUSALS))
def test_a_dtype_refusal_is_unsupported(who):
    assert BaseBackend().classify(_raised(REFUSALS[who])) == "unsupported"
    assert dtype_refused(REFUSALS[who])


@pytest.mark.parametrize("who", list(REAL_ERRORS))
def test_a_real_error_stays_an_error(who):
    assert BaseBackend().classify(_raised(REAL_ERRORS[who])) == "error"


def test_the_frameworks_own_refusals_are_unchanged():
    """Outside plug-ins (the built-ins calling a framework), the frameworks' rules hold as before."""
    assert BaseBackend().classify(TypeError("anything")) == "unsupported"
    assert BaseBackend().classify(RuntimeError("Function call with ambiguous argument types")) == "unsupported"
    assert BaseBackend().classify(RuntimeError("index 7 is out of bounds")) == "error"


def test_refusals_through_a_run(tmp_path):
    """End to end: a plug-in raising scikit-learn's float16 refusal in one op, a bug in another."""
    f = write(tmp_path, "raises.py", """
        import numpy as np
        FRAMEWORK = "numpy"
        def softmax(x):
            if x.dtype == np.float16:
                raise TypeError("Function call with ambiguous argument types")
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        def logsumexp(x):
            raise ValueError("Unsupported reduction: 'avg'")
    """)
    found = plugins.load_all([str(f)], entry_points=False)
    df, _ = run(_plan(found, ("seed004_vec",), ("float16", "float32")), progress=False)
    fwd = df[df["pass"] == "forward"].set_index(["op", "dtype"])
    assert fwd.loc[("softmax", "float16")].verdict == "unsupported"
    assert fwd.loc[("softmax", "float32")].verdict == "ok"
    assert (fwd.loc["logsumexp"].verdict == "error").all()
