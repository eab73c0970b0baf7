"""JAX's group programs kept between runs (backends/_jax_programs.py): a hit serves the very executable
that was compiled, bit for bit; anything that changes the program (its steps, T, the argument dtypes or
shapes, the suite's code, an unreadable entry) misses and compiles again."""

from __future__ import annotations

import numpy as np
import pytest

from cases import CASES
from suite.backend_api import discover
from suite.reference import compute_reference
from suite.runner import _identity, _put_inputs, compute_group, loaded, step, step_args

pytestmark = pytest.mark.skipif(not discover()["jax"].installed, reason="jax is not installed")

KEYS = (("softmax", "shifted", "forward"), ("log_softmax", "online", "backward"),
        ("cross_entropy", "fused", "backward"), ("logsumexp", "naive", "forward"))


def _bits(a) -> bytes:
    a = np.ascontiguousarray(np.asarray(a))
    return a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()


@pytest.fixture
def jax_programs(tmp_path, monkeypatch):
    """The jax backend with its program cache in a fresh directory, and the module's counters."""
    from backends import _jax_programs
    from suite import runner

    backend = loaded("jax")
    monkeypatch.setattr(backend, "_programs", tmp_path / "programs")
    monkeypatch.setattr(runner, "_GROUPS", {})  # no program kept in memory by an earlier test
    monkeypatch.setattr(_jax_programs, "STATS", {"hits": 0, "misses": 0, "stored": 0})
    from jax.experimental.compilation_cache import compilation_cache

    jax = backend.jax
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax-cache"))  # JAX's own cache empty too
    compilation_cache.reset_cache()
    yield backend, _jax_programs
    jax.config.update("jax_compilation_cache_dir", before)
    compilation_cache.reset_cache()


def _args(backend, case_name: str, dtype: str, keys=KEYS):
    case = next(c for c in CASES if c.name == case_name)
    inp = _put_inputs(backend, "cpu", dtype, compute_reference(case, dtype), case.targets)
    return [step_args(k[1], k[0], inp) for k in keys]


def _program(backend, keys=KEYS, T: float = 1.0, identity: str | None = None):
    fns = [step(backend, k[1], k[0], k[2], T) for k in keys]
    return backend.compile_group(fns, identity=identity or _identity(keys, T))


def test_hit_serves_the_compiled_program_bit_for_bit(jax_programs):
    backend, mod = jax_programs
    args = _args(backend, "seed003_linspace500", "float32")
    first = _program(backend)(args)
    assert mod.STATS == {"hits": 0, "misses": 1, "stored": 1}
    again = _program(backend)(args)  # a new process would build this same object
    assert mod.STATS["hits"] == 1 and mod.STATS["misses"] == 1
    for key, a, b in zip(KEYS, first, again, strict=True):
        op, impl, pass_ = key
        alone = backend.jax.jit(step(backend, impl, op, pass_))(*args[KEYS.index(key)])
        assert _bits(a) == _bits(b) == _bits(alone), key


def test_changed_steps_temperature_dtype_shape_or_code_miss(jax_programs, monkeypatch):
    backend, mod = jax_programs
    _program(backend)(_args(backend, "seed003_linspace500", "float32"))
    assert mod.STATS["misses"] == 1
    fewer = KEYS[:3]  # another step set
    _program(backend, fewer)(_args(backend, "seed003_linspace500", "float32", fewer))
    assert mod.STATS["misses"] == 2
    _program(backend)(_args(backend, "seed003_linspace500", "float64"))  # another dtype
    assert mod.STATS["misses"] == 3
    _program(backend)(_args(backend, "seed000_batch", "float32"))  # another shape
    assert mod.STATS["misses"] == 4
    temp = (("softmax", "temperature", "forward"),)
    _program(backend, temp, T=0.5)(_args(backend, "seed002_T0.5", "float32", temp))
    _program(backend, temp, T=2.0)(_args(backend, "seed002_T0.5", "float32", temp))  # another T
    assert mod.STATS["misses"] == 6
    monkeypatch.setattr(mod, "_source_digest", lambda: "edited")  # the suite's code changed
    _program(backend)(_args(backend, "seed003_linspace500", "float32"))
    assert mod.STATS == {"hits": 0, "misses": 7, "stored": 7}  # compiled afresh, not taken from JAX's cache


def test_identity_names_steps_temperature_and_chunk(monkeypatch):
    from suite import formulas

    base = _identity(KEYS, 1.0)
    assert base != _identity(KEYS[:3], 1.0) and base != _identity(KEYS, 0.5)
    monkeypatch.setattr(formulas, "ONLINE_CHUNK", 7)
    assert _identity(KEYS, 1.0) != base


def test_unreadable_entry_is_a_miss(jax_programs):
    backend, mod = jax_programs
    args = _args(backend, "seed000_batch", "float16")
    first = _program(backend)(args)
    (entry,) = list(backend._programs.glob("*.xla"))
    entry.write_bytes(entry.read_bytes()[:200])  # truncated
    again = _program(backend)(args)
    assert mod.STATS["hits"] == 0 and mod.STATS["misses"] == 2
    assert [_bits(a) for a in first] == [_bits(b) for b in again]


def test_folder_is_trimmed_least_recently_used_first(jax_programs, monkeypatch):
    import os

    backend, mod = jax_programs
    _program(backend)(_args(backend, "seed000_batch", "float16"))
    (old,) = list(backend._programs.glob("*.xla"))
    os.utime(old, (1, 1))  # long unused
    _program(backend)(_args(backend, "seed000_batch", "float32"))
    (new,) = [p for p in backend._programs.glob("*.xla") if p != old]
    mod.trim(backend._programs, limit=new.stat().st_size)  # room for one of the two
    assert list(backend._programs.glob("*.xla")) == [new]
    monkeypatch.setattr(mod, "MAX_BYTES", 0)  # every store trims to the limit
    _program(backend)(_args(backend, "seed000_batch", "float64"))
    assert list(backend._programs.glob("*.xla")) == [] and mod.STATS["stored"] == 3


def test_case_with_temperature_reuses_its_shapes_program(jax_programs):
    """seed002_T10 has seed002_T1's shape: only its own `temperature` program is new."""
    backend, mod = jax_programs
    from suite.ops import IMPLS, OPS, PASSES

    keys = [(op, impl, p) for op in OPS for impl in IMPLS for p in PASSES]
    for name in ("seed002_T1", "seed002_T10"):
        case = next(c for c in CASES if c.name == name)
        inp = _put_inputs(backend, "cpu", "bfloat16", compute_reference(case, "bfloat16"), case.targets)
        out = compute_group(backend, keys, inp)
        key = ("softmax", "temperature", "forward")
        alone = backend.jax.jit(step(backend, "temperature", "softmax", "forward", case.temperature))(
            *step_args("temperature", "softmax", inp))
        assert _bits(out[key]) == _bits(alone), name
    assert mod.STATS == {"hits": 0, "misses": 2, "stored": 2}  # the main program once, T = 10's once


_CHILD = """
import hashlib, json, sys
import numpy as np
from backends import _jax_programs
from suite.runner import loaded, step
sys.path.insert(0, {tests!r})
from test_jax_programs import KEYS, _args, _program
backend = loaded("jax", 1)
backend.jax.jit(lambda x: x + 1)(1.0)  # a compile before the program's, as in a run
args = _args(backend, "seed000_batch", "float32")
outs = _program(backend)(args)
h = hashlib.sha256(b"".join(np.ascontiguousarray(np.asarray(o)).tobytes() for o in outs)).hexdigest()
print(json.dumps({{"hash": h, **_jax_programs.STATS}}))
"""


def test_programs_are_served_to_the_next_process(tmp_path, root):
    """Across processes: a stored program is served to the next process, to the same bits. After an
    edit of the suite's code (here: its entries deleted), the program is compiled afresh, not taken from
    JAX's persistent cache (an executable JAX had deserialized fails in the next process: "Function
    wrapped_exponential not found"), and stored: the run after it is warm again."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    env = {**os.environ, "SUITE_JAX_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(root)}
    code = _CHILD.format(tests=str(root / "suite" / "tests"))
    programs = tmp_path / "cache" / "programs"

    def child() -> dict:
        p = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                           check=False, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout.strip().splitlines()[-1])

    first, second = child(), child()
    assert (first["misses"], first["stored"], second["hits"], second["misses"]) == (1, 1, 1, 0)
    shutil.rmtree(programs)
    edited, again = child(), child()
    assert (edited["misses"], edited["stored"], again["hits"], again["misses"]) == (1, 1, 1, 0)
    assert len({c["hash"] for c in (first, second, edited, again)}) == 1


def test_one_thread_flags_hold_after_another_framework_imported_jax(root):
    """TensorFlow imports jax (tf.lite), without starting JAX's XLA client: a worker that ran TensorFlow
    first must still run JAX with one thread (XLA reads XLA_FLAGS when the client starts), or its rows,
    and the kept programs' keys, would differ from those of a worker that ran JAX first."""
    import os
    import subprocess
    import sys

    code = ("import os, sys, jax\n"  # jax imported, its client not started: as after `import tensorflow`
            "from backends.jax_backend import Backend\n"
            "Backend(threads=1); Backend(threads=1)\n"
            "print(os.environ.get('XLA_FLAGS', ''))\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    p = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(root)}, cwd=root,
                       capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
