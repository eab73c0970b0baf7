"""JAX's compiled group programs kept on disk between runs, so that a warm run skips tracing and lowering.

JAX's persistent compilation cache only skips XLA's compile: its key is a hash of the lowered program,
so every run traces and lowers every program again (about 60 % of a warm run's JAX time). Here the key
is known before tracing: the program's identity (which functions, named by the runner), the signature of
its arguments (tree, shapes, dtypes, weak types, placement), and everything else that shapes the program:
the suite's own source (every .py of suite/ and backends/: any edit misses), jax and jaxlib versions, the
jax config that changes tracing, XLA_FLAGS, the platform and the CPU. A hit loads the very executable a
miss compiled (jax.experimental.serialize_executable), so its outputs are bit for bit those of
jax.jit(group) (suite/tests/test_jax_programs.py). Any unreadable or foreign entry is a miss; a miss
compiles without JAX's persistent cache (whose executables cannot be kept: CachedProgram._compile), so
the first run after an edit of the suite's code compiles its programs again and the next one is warm.

Entries are pickles of executables, as in JAX's own cache: load them only from your own cache directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import zlib
from functools import cache
from pathlib import Path
from typing import Any

FORMAT = b"softmax-suite jax program v1\n"
MAX_BYTES = 1 << 30  # the folder is trimmed to this, least recently used first (each code edit adds a set)
STATS = {"hits": 0, "misses": 0, "stored": 0}  # this process's counts (tests and diagnostics)


@cache
def _source_digest() -> str:
    """Hash of every .py of suite/ and backends/ (tests excluded): the code that builds the programs."""
    import backends
    import suite

    h = hashlib.sha256()
    for pkg in (suite, backends):
        root = Path(pkg.__file__).parent
        for path in sorted(root.glob("*.py")):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@cache
def _cpu() -> str:
    """The CPU as XLA targets it (model and feature flags), so a cache on a shared disk is not used
    by a machine with other instructions."""
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def environment(jax) -> str:
    """Everything outside the program's identity and arguments that changes what jax.jit compiles."""
    import jaxlib

    cfg = jax.config
    settings = {name: getattr(cfg, name, None) for name in (
        "jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion",
        "jax_numpy_dtype_promotion", "jax_default_prng_impl", "jax_debug_nans", "jax_debug_infs",
        "jax_disable_jit")}
    device = jax.devices()[0]
    return "\n".join([
        f"jax {jax.__version__} jaxlib {jaxlib.__version__}", f"config {sorted(settings.items())!r}",
        f"XLA_FLAGS {os.environ.get('XLA_FLAGS', '')}",
        f"platform {device.platform} {device.device_kind} {device.client.platform_version}",
        f"machine {platform.machine()} {platform.system()}", f"cpu {_cpu()}", f"source {_source_digest()}",
    ])


def signature(jax, args: Any) -> tuple[Any, str]:
    """The arguments' pytree (as jax.stages.Compiled is called: ((args,), {})) and its text form."""
    leaves, tree = jax.tree_util.tree_flatten(((args,), {}))
    parts = [str(tree)]
    for leaf in leaves:
        parts.append(f"{tuple(leaf.shape)}:{leaf.dtype}:{getattr(leaf, 'weak_type', False)}:"
                     f"{getattr(leaf, 'sharding', type(leaf).__name__)}")
    return tree, "\n".join(parts)


class CachedProgram:
    """jax.jit(group) called on lists of argument tuples; each signature compiled or loaded once."""

    def __init__(self, jax, jitted, identity: str, n_outputs: int, directory: Path) -> None:
        self.jax, self.jitted, self.identity = jax, jitted, identity
        self.n_outputs, self.directory = n_outputs, directory
        self._compiled: dict[str, Any] = {}

    def __call__(self, args: list[tuple]) -> list[Any]:
        tree, sig = signature(self.jax, args)
        if sig in self._compiled:
            return self._compiled[sig](args)
        key = self.key(sig)
        loaded = self._load(key, tree)
        if loaded is not None:
            try:  # errors of a loaded executable surface only when its results are read: read them now
                return self._keep(sig, loaded, self.jax.block_until_ready(loaded(args)))
            except Exception:  # noqa: BLE001 - an entry this jaxlib cannot run: compile it afresh
                STATS["hits"] -= 1
        STATS["misses"] += 1
        compiled = self._compile(args, key)
        return self._keep(sig, compiled, compiled(args))

    def _keep(self, sig: str, compiled: Any, outs: list[Any]) -> list[Any]:
        self._compiled[sig] = compiled
        return outs

    def key(self, sig: str) -> bytes:
        return f"identity {self.identity}\nargs {sig}\n{environment(self.jax)}\n".encode()

    def path(self, key: bytes) -> Path:
        return self.directory / f"{hashlib.sha256(key).hexdigest()}.xla"

    def _load(self, key: bytes, tree: Any) -> Any:
        from jax.experimental import serialize_executable as se

        try:
            data = self.path(key).read_bytes()
            head = FORMAT + len(key).to_bytes(8, "little") + key
            if not data.startswith(head):  # the full key is stored too: a hash collision is a miss
                return None
            out_tree = self.jax.tree_util.tree_structure([0] * self.n_outputs)
            compiled = se.deserialize_and_load(zlib.decompress(data[len(head):]), tree, out_tree)
        except Exception:  # noqa: BLE001 - absent, truncated, from another jaxlib: compile instead
            return None
        STATS["hits"] += 1
        with contextlib.suppress(OSError):
            os.utime(self.path(key))  # recently used: trimmed last
        return compiled

    def _compile(self, args: list[tuple], key: bytes) -> Any:
        """Compiled afresh and stored here. JAX's persistent cache is off for this compile: an
        executable JAX deserialized from its cache runs, but serializes without its math functions
        ("Function wrapped_exponential not found" when run in the next process; jax 0.10.2), so such
        a program could never be kept, and every run after an edit of the suite's code would pay
        for loading all of JAX's entries again instead of being warm from the second run on."""
        from jax.experimental import serialize_executable as se

        served = _jax_cache_hits()
        with _without_jax_cache(self.jax):
            compiled = self.jitted.trace(args).lower().compile()
        if _jax_cache_hits() != served:  # a JAX that ignored the switch: run it, never keep it
            return compiled
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            blob, _, _ = se.serialize(compiled)
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(FORMAT + len(key).to_bytes(8, "little") + key + zlib.compress(blob, 1))
            os.replace(tmp, path)  # whole or not at all, whichever worker writes it
            STATS["stored"] += 1
            trim(self.directory)
        except Exception:  # noqa: BLE001 - a read-only or full disk costs the next run time, not this one
            tmp.unlink(missing_ok=True)
        return compiled


@contextlib.contextmanager
def _without_jax_cache(jax) -> Any:
    """JAX's persistent compilation cache switched off, and back on after (JAX decides once per process
    whether to use it unless the cache is reset: jax.experimental.compilation_cache's reset_cache)."""
    from jax.experimental.compilation_cache import compilation_cache

    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
        compilation_cache.reset_cache()


_JAX_CACHE_HITS = [0]


@cache
def _listen(jax_monitoring) -> None:
    def on_event(event: str, **_: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            _JAX_CACHE_HITS[0] += 1

    jax_monitoring.register_event_listener(on_event)


def _jax_cache_hits() -> int:
    """How many compiles JAX's persistent cache has served in this process (jax.monitoring's event)."""
    import jax.monitoring

    _listen(jax.monitoring)
    return _JAX_CACHE_HITS[0]


def trim(directory: Path, limit: int | None = None) -> None:
    """Delete the least recently used entries until the folder holds at most `limit` bytes."""
    limit = MAX_BYTES if limit is None else limit
    entries = []
    for entry in os.scandir(directory):
        if entry.name.endswith(".xla"):
            with contextlib.suppress(OSError):
                st = entry.stat()
                entries.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)
            total -= size
