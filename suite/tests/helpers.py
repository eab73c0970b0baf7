"""`python -m suite ...` in the test process: the same `suite.cli.main` that `python -m suite` runs, with its
arguments, exit status, stdout and stderr, without starting an interpreter and importing the frameworks
again (seconds per call). Tests about the process itself (signals, kill -9, concurrent writers, memory
limits, the console entry) keep real subprocesses."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import suite
from suite import cli

MAIN = str(Path(suite.__file__).with_name("__main__.py"))  # sys.argv[0] under `python -m suite`
COPY_BYTES = 16 * 2**20  # the copy-bandwidth calibration's buffer in tests (256 MiB by default)


def suite_main(*args: str, cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    """Run the command line in this process: a CompletedProcess-like result. argparse's exit (status 2)
    is caught like the interpreter would; sys.argv is what `python -m suite` sees (env.json records it).
    `bench` calibrates its copy bandwidth on a 16 MiB buffer (the same measurement, less to allocate)."""
    import suite.bench
    from suite import plugins

    registered = dict(plugins._REGISTRY)  # a fresh process starts with no plug-ins loaded
    plugins.clear()
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd, old_copy = sys.argv, os.getcwd(), suite.bench.COPY_BYTES
    sys.argv = [MAIN, *args]
    suite.bench.COPY_BYTES = COPY_BYTES
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(list(args))
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, suite.bench.COPY_BYTES = old_argv, old_copy
        os.chdir(old_cwd)
        plugins.clear()
        plugins._REGISTRY.update(registered)
    return subprocess.CompletedProcess([MAIN, *args], rc, out.getvalue(), err.getvalue())


def installed(name: str) -> bool:
    """Whether a module can be imported here (a framework, an optional library), without importing it."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _fresh_plugin_registry():
    """Each test starts and ends with no plug-in registered (import as an autouse fixture)."""
    from suite import plugins

    plugins.clear()
    yield
    plugins.clear()


def one_line_error(p: subprocess.CompletedProcess, status: int, *mentions: str) -> str:
    """Exit `status` with exactly one line on stderr, no traceback, mentioning each of `mentions`."""
    assert p.returncode == status, (p.returncode, p.stdout[-2000:], p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip() and not x.startswith(("warning:", "note:"))]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    for m in mentions:
        assert m in lines[0], (m, lines[0])
    return lines[0]
