"""nox sessions: one per framework (its own venv: that framework + the suite's core), tests, lint."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
FRAMEWORKS = {"numpy": [], "torch": ["torch==2.13.0"], "tensorflow": ["tensorflow-cpu"], "jax": ["jax"]}


@nox.session
def tests(session: nox.Session) -> None:
    """What .ci/run runs: the README's test command."""
    session.install("-e", ".[all,test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
@nox.parametrize("framework", list(FRAMEWORKS))
def accuracy(session: nox.Session, framework: str) -> None:
    """The accuracy matrix for one framework, in a venv holding only it and the core."""
    session.install("-e", ".", *FRAMEWORKS[framework])
    session.run("python", "-m", "suite", "run", "--backends", framework,
                "--out", f"results/latest/{framework}", *session.posargs)
