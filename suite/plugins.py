"""Implementations from outside the suite: a plug-in file, a module, or an installed package's entry point.

A plug-in declares FRAMEWORK (a backend name), an optional NAME (its `impl` value) and any of the ops
in SIGNATURES, taking and returning that framework's arrays (docs/plugins.md). Everything that can
be checked without computing is checked at load time, so a bad plug-in stops the run before any row
(exit 2); what only shows at run time (an exception, a result of the wrong kind) becomes a row.

A plug-in may also declare ENV, a dict literal of environment variables its library reads at import
(keras' KERAS_BACKEND). It is read from the source without importing it; such a plug-in is checked in a
child process started with that environment, and its rows are computed in workers started with it.
`--plugin zoo` stands for every plug-in of the zoo whose libraries are installed (zoo/, docs/zoo.md).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.ops import IMPLS
from suite.selection import UsageError

GROUP = "softmax_suite.plugins"  # the entry-point group installed packages register under
SIGNATURES: dict[str, tuple[str, ...]] = {
    "softmax": ("x",), "log_softmax": ("x",), "logsumexp": ("x",), "cross_entropy": ("x", "targets"),
    "cross_entropy_mean": ("x", "targets"), "soft_cross_entropy": ("x", "probs"),
}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")  # a table value and a --impls list item: no commas


class PluginUnsupported(NotImplementedError):
    """The plug-in does not define what this row needs: an `unsupported` row."""


class PluginError(RuntimeError):
    """The plug-in raised, or returned something that is not the op's result: an `error` row."""


@dataclass(frozen=True)
class Source:
    """Where a plug-in comes from; picklable, so worker processes can load it again."""

    ref: str  # a .py path, "pkg.module" or "pkg.module:attr"
    default_name: str
    label: str  # how messages name it
    env: tuple[tuple[str, str], ...] = ()  # its ENV: set in every process that imports it

    def foreign(self) -> bool:
        """Whether its ENV differs from this process's environment (then it is imported elsewhere only)."""
        return any(os.environ.get(k) != v for k, v in self.env)


@dataclass
class Plugin:
    name: str
    framework: str
    source: Source
    ops: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def describe(self) -> dict:
        """For env.json: enough to tell which code produced the rows."""
        out = {"name": self.name, "framework": self.framework, "source": self.source.label,
               "ops": sorted(self.ops)}
        path = Path(self.source.ref)
        if path.suffix == ".py" and path.is_file():
            out["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out


_REGISTRY: dict[str, Plugin] = {}


def get(impl: str) -> Plugin | None:
    return _REGISTRY.get(impl)


def names() -> list[str]:
    return list(_REGISTRY)


def runs_on(impl: str, backend: str) -> bool:
    """Built-ins run everywhere; a plug-in only on its own framework's backend (no rows elsewhere)."""
    p = _REGISTRY.get(impl)
    return p is None or p.framework == backend


def clear() -> None:
    _REGISTRY.clear()


def _is_file(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref or "\\" in ref


def source_of(ref: str) -> Source:
    """A --plugin value: a file (named by its stem) or a module (named by its last component)."""
    if _is_file(ref):
        src = Source(ref=ref, default_name=Path(ref).stem, label=ref)
    else:
        src = Source(ref=ref, default_name=ref.split(":")[-1].split(".")[-1], label=f"module {ref}")
    return _with_env(src)


def source_path(src: Source) -> Path | None:
    """The file a plug-in's code is in, found without running it (a module's parent packages are imported);
    None when it cannot be found (its import then fails and says why)."""
    if _is_file(src.ref):
        return Path(src.ref)
    try:
        spec = importlib.util.find_spec(src.ref.partition(":")[0])
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def module_level(path: Path, name: str) -> ast.expr | None:
    """The value assigned to `name` at the module level of a Python file (the last assignment), unevaluated."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None  # the import reports it
    found = None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) and node.value is not None else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            found = node.value
    return found


def _with_env(src: Source) -> Source:
    """`src` with the ENV its file declares: a dict literal of strings, read without importing it."""
    path = source_path(src)
    node = module_level(path, "ENV") if path is not None and path.is_file() else None
    if node is None:
        return src
    try:
        env = ast.literal_eval(node)
    except ValueError:
        env = None
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise UsageError(f"plug-in {src.label}: ENV must be a literal dict of strings (environment variables "
                         f"set before its import), e.g. ENV = {{\"KERAS_BACKEND\": \"jax\"}}")
    return Source(src.ref, src.default_name, src.label, tuple(sorted(env.items())))


def entry_point_sources() -> list[Source]:
    """Every plug-in installed packages register in the entry-point group `softmax_suite.plugins`, each
    labelled with the package (distribution) that registers it."""
    eps = importlib.metadata.entry_points(group=GROUP)
    out = []
    for ep in eps:
        dist = getattr(ep, "dist", None)
        pkg = f"package {dist.name} {dist.version}" if dist is not None else "package unknown"
        src = Source(ref=ep.value, default_name=ep.name, label=f"entry point {ep.name} = {ep.value} "
                     f"({pkg}, group {GROUP})")
        try:
            src = _with_env(src)
        except UsageError:
            pass  # its load says so (a broken entry point is a warning, not a stop)
        out.append(src)
    return out


def _import(src: Source) -> Any:
    where = src.label
    try:
        if _is_file(src.ref):
            path = Path(src.ref)
            if not path.is_file():
                raise UsageError(f"plug-in {where}: no such file")
            stem = re.sub(r"\W", "_", path.stem)
            modname = f"softmax_suite_plugin_{stem}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
            spec = importlib.util.spec_from_file_location(modname, path)
            if spec is None or spec.loader is None:
                raise UsageError(f"plug-in {where}: cannot be loaded as a Python module")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            spec.loader.exec_module(mod)
            return mod
        module, _, attr = src.ref.partition(":")
        obj = importlib.import_module(module)
        return functools.reduce(getattr, attr.split("."), obj) if attr else obj
    except UsageError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - anything the plug-in's import does is its problem
        text = str(exc).strip().splitlines()
        raise UsageError(f"plug-in {where}: import failed: {type(exc).__name__}: {text[0] if text else ''}") from None


def load(src: Source) -> Plugin:
    """Import and check one plug-in; a UsageError (one line naming it) for anything wrong. One whose ENV
    differs from this process's is checked in a child process started with it (check_elsewhere)."""
    from suite.backend_api import discover

    if src.foreign():
        return check_elsewhere([src])[src]
    mod = _import(src)
    where = f"plug-in {src.label}"
    known = discover()
    fw = getattr(mod, "FRAMEWORK", None)
    if fw is None:
        raise UsageError(f"{where}: no FRAMEWORK; set FRAMEWORK to one of {', '.join(known)}")
    if fw not in known:
        raise UsageError(f"{where}: unknown FRAMEWORK {fw!r}; valid: {', '.join(known)}")
    if not known[fw].installed:
        raise UsageError(f"{where}: FRAMEWORK {fw!r} is not installed ({known[fw].install_hint})")
    name = getattr(mod, "NAME", src.default_name)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"{where}: NAME {name!r} must be a string of letters, digits and _ . + - "
                         "(it is the impl value in every table)")
    if name in IMPLS:
        raise UsageError(f"{where}: NAME {name!r} clashes with the built-in implementation {name!r}; "
                         f"set NAME to something else (built-ins: {', '.join(IMPLS)})")
    ops: dict[str, Callable[..., Any]] = {}
    for op, params in SIGNATURES.items():
        fn = getattr(mod, op, None)
        if fn is None:
            continue
        call = f"{op}({', '.join(params)})"
        if not callable(fn):
            raise UsageError(f"{where}: {op} is a {type(fn).__name__}, not a function callable as {call}")
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: trust it
            sig = None
        if sig is not None:
            try:
                sig.bind(*params)
            except TypeError:
                raise UsageError(f"{where}: {op}{sig} cannot be called as {call}") from None
        ops[op] = fn
    if not ops:
        raise UsageError(f"{where}: defines none of {', '.join(SIGNATURES)}")
    return Plugin(name=name, framework=fw, source=src, ops=ops)


CHECK_MARK = "softmax-suite plug-in check: "  # the child's answer line (the library may print too)


def _not_here(plugin: str, op: str, env: dict[str, str]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        raise RuntimeError(f"plug-in {plugin!r} {op} runs only in a process started with its ENV {env} "
                           "(run workers do); set those variables to call it in this process")
    return call


def check_elsewhere(sources: list[Source]) -> dict[Source, Plugin]:
    """Check plug-ins whose ENV differs from this process's, each in a child process started with its ENV
    (all at once: each imports its library), so this process never imports them: keras, for one, picks its
    backend once per process. The Plugins returned hold what was checked; their ops are not callable here."""
    def child(src: Source) -> subprocess.CompletedProcess:
        env = {**os.environ, **dict(src.env)}
        code = "from suite.plugins import _check_child; _check_child()"
        return subprocess.run([sys.executable, "-c", code], input=json.dumps([src.ref, src.default_name, src.label,
                              src.env]), capture_output=True, text=True, env=env, check=False)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, len(sources))) as pool:
        done = list(pool.map(child, sources))
    out = {}
    for src, proc in zip(sources, done, strict=True):
        answer = [line[len(CHECK_MARK):] for line in proc.stdout.splitlines() if line.startswith(CHECK_MARK)]
        if not answer:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UsageError(f"plug-in {src.label}: its check (a child process with ENV {dict(src.env)}) "
                             f"exited with status {proc.returncode}: {tail[:300]}")
        got = json.loads(answer[-1])
        if "error" in got:
            raise UsageError(got["error"])
        env = dict(src.env)
        out[src] = Plugin(name=got["name"], framework=got["framework"], source=src,
                          ops={op: _not_here(got["name"], op, env) for op in got["ops"]})
    return out


def _check_child() -> None:
    """In the child of check_elsewhere: load the plug-in on stdin here (this environment is its ENV)."""
    ref, default_name, label, env = json.loads(sys.stdin.read())
    try:
        p = load(Source(ref, default_name, label, tuple(tuple(kv) for kv in env)))
        answer = {"name": p.name, "framework": p.framework, "ops": sorted(p.ops)}
    except UsageError as exc:
        answer = {"error": str(exc)}
    print(CHECK_MARK + json.dumps(answer), flush=True)


def register(plugins: list[Plugin]) -> None:
    """Add plug-ins to the registry; one NAME per plug-in, across every source."""
    for p in plugins:
        other = _REGISTRY.get(p.name)
        if other is not None and other.source != p.source:
            raise UsageError(f"plug-in {p.source.label}: NAME {p.name!r} is already the name of plug-in "
                             f"{other.source.label}; set NAME in one of them")
        _REGISTRY[p.name] = p


def load_all(refs: list[str] | None, entry_points: bool = True, wanted: list[str] | None = None,
             warnings: list[str] | None = None) -> list[Plugin]:
    """--plugin values (files or modules) and, by default, the installed entry points; registered.

    A --plugin that fails stops the run (a UsageError). A broken entry point does only if its name is in
    `wanted` (--impls asked for it); otherwise it is left out with one line in `warnings` naming its package
    (printed to stderr when `warnings` is None), so one bad installed package cannot stop every run."""
    notes: list[str] = []
    sources = list(dict.fromkeys(source_of(r) for r in _expand(refs or [], notes)))
    elsewhere = check_elsewhere([s for s in sources if s.foreign()])  # at once: each starts its library
    found = [elsewhere[s] if s in elsewhere else load(s) for s in sources]
    register(found)
    if not entry_points:
        _warn(notes, warnings)
        return found
    try:
        eps = [s for s in entry_point_sources() if s not in sources]
    except Exception as exc:  # noqa: BLE001 - broken package metadata
        eps = []
        notes.append(f"the installed entry points ({GROUP}) cannot be listed ({type(exc).__name__}: "
                     f"{' '.join(str(exc).split())[:160]}); none is loaded")
    for src in eps:
        try:
            plugin = load(src)
            register([plugin])
        except UsageError as exc:
            if wanted and src.default_name in wanted:
                raise
            notes.append(f"{' '.join(str(exc).split())[:300]}; left out (the run goes on without it; "
                         "--no-entry-points skips every entry point)")
            continue
        found.append(plugin)
    _warn(notes, warnings)
    return found


def _warn(notes: list[str], warnings: list[str] | None) -> None:
    if warnings is None:
        for n in notes:
            print(f"warning: {n}", file=sys.stderr)
    else:
        warnings += notes


OWN_PACKAGES = ("__future__", "suite", "backends", "cases", "zoo")  # never a library a plug-in lacks
ZOO = "zoo"  # the --plugin value that stands for every zoo plug-in whose libraries are installed


def zoo_files() -> list[Path]:
    """The zoo's plug-in files (zoo/*.py) and the Liger plug-in (examples/plugins/liger.py) where it exists."""
    root = Path(__file__).resolve().parent.parent
    liger = root / "examples" / "plugins" / "liger.py"
    return sorted(p for p in (root / "zoo").glob("*.py") if not p.name.startswith("_")) + (
        [liger] if liger.is_file() else [])


def missing_libraries(path: Path) -> list[str]:
    """What a plug-in file needs and this environment lacks, found without importing it: the top-level
    packages it imports and the backend of its FRAMEWORK."""
    from suite.backend_api import discover

    tree = ast.parse(path.read_bytes(), filename=str(path))
    wanted = imported(tree)
    fw = module_level(path, "FRAMEWORK")
    backend = discover().get(fw.value) if isinstance(fw, ast.Constant) and isinstance(fw.value, str) else None
    if backend is not None:
        wanted.append(backend.requires)
    return [m for m in dict.fromkeys(wanted) if importlib.util.find_spec(m) is None]


def imported(tree: ast.Module) -> list[str]:
    """The top-level packages a module imports at its top level, standard library and this project's own
    packages (zoo/_keras.py, shared by the keras plug-ins) left out."""
    names = [a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    names += [n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module and not n.level]
    return [m for m in dict.fromkeys(names) if m not in sys.stdlib_module_names and m not in OWN_PACKAGES]


def _expand(refs: list[str], notes: list[str]) -> list[str]:
    """--plugin values with `zoo` replaced by the zoo plug-ins whose libraries are installed; the others
    are named in `notes` with what they lack."""
    out = []
    for ref in refs:
        if ref != ZOO:
            out.append(ref)
            continue
        for path in zoo_files():
            lacking = missing_libraries(path)
            if lacking:
                extra = "gpu-kernels" if path.parent.name == "plugins" else "zoo"  # Liger: examples/plugins
                notes.append(f"zoo plug-in {path.stem} skipped: {', '.join(lacking)} not installed "
                             f'(pip install -e ".[{extra}]" -c constraints/lock-cpu.txt)')
            else:
                out.append(_shown(path))
    return out


def _shown(path: Path) -> str:
    """A zoo path as a user would type it: relative to the working directory when it is below it (rows'
    messages and env.json name plug-ins by it)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def ensure(sources: list[Source]) -> None:
    """In a worker process: load again the plug-ins the main process checked."""
    missing = [s for s in sources if not any(p.source == s for p in _REGISTRY.values())]
    register([load(s) for s in missing])


def _expected_shape(op: str, shape: tuple) -> tuple:
    if op in ("softmax", "log_softmax"):
        return shape
    return () if op == "cross_entropy_mean" else shape[:-1]


def _kind(out: Any) -> str:
    t = type(out)
    return f"a Python {t.__name__}" if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def call(plugin: Plugin, backend: Any, op: str, x: Any, targets: Any, probs: Any) -> Any:
    """The plug-in's op on x, its result checked: the backend's array type, the op's shape, x's dtype."""
    fn = plugin.ops.get(op)
    who = f"plug-in {plugin.name!r}"
    if fn is None:
        raise PluginUnsupported(f"{who} ({plugin.source.label}) defines no {op}")
    args = (x,) if op in ("softmax", "log_softmax", "logsumexp") else (
        x, probs if op == "soft_cross_entropy" else targets)
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the plug-in's own failure is an error row
        text = str(exc).strip().splitlines()
        raise PluginError(f"{who} {op} raised {type(exc).__name__}: {text[0] if text else ''}") from exc
    if not backend.is_array(out):
        raise PluginError(f"{who} {op} returned {_kind(out)}, not a {backend.name} array")
    want, got = _expected_shape(op, tuple(x.shape)), tuple(out.shape)
    if got != want:
        raise PluginError(f"{who} {op} returned shape {got}, expected {want} for x of shape {tuple(x.shape)}")
    if backend.out_dtype(out) != backend.out_dtype(x):
        raise PluginError(f"{who} {op} returned {backend.out_dtype(out)} for {backend.out_dtype(x)} x")
    return out


def softmax_for_vjp(plugin: Plugin, op: str) -> None:
    """numpy has no autodiff: its backward is the analytic VJP with the plug-in's own softmax."""
    if op not in plugin.ops:
        raise PluginUnsupported(f"plug-in {plugin.name!r} ({plugin.source.label}) defines no {op}")
    if "softmax" not in plugin.ops:
        raise PluginUnsupported(f"plug-in {plugin.name!r} ({plugin.source.label}) defines no softmax, which "
                                "numpy's backward (the analytic VJP with the plug-in's own softmax) needs")
