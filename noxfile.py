"""nox sessions: one per framework and version, each in its own virtual environment holding only that
framework and the suite's core; plus `tests` (what .ci/run runs), `lint`, `compare`, `report` and `latest`
(the newest releases of everything, graded against the locked run).

    nox -s "jax(version='0.10.2')"                  one framework at one version
    SUITE_JAX_VERSIONS=0.9.2,0.10.2 nox -s jax       a list (also SUITE_TENSORFLOW_/TORCH_/NUMPY_VERSIONS)
    nox -s "jax(version='0.9.2')" -- --cases seed    posargs go to `python -m suite run`
    SUITE_SHARD=2/4 SUITE_RUN_ID=ci-123 nox -s jax   one slice of a sharded run (same id on every slice)
    SUITE_SIZES=64x131072 SUITE_MIN_TIME=0.5 ...     the timing sweep (SUITE_SIZES=none: no timing)
    nox -s latest                                    newest releases, no lock: run, then compare with the lock's run
    nox -s ab -- --a PY_A --b PY_B --backends jax    the replicated, interleaved timing protocol (docs/comparing.md)
    nox -s gpu                                       on a machine with an NVIDIA GPU: the GPU matrix (torch, jax),
                                                     Liger-Kernel's plug-in and the GPU timing sweep (docs/gpu.md)

Each framework session runs the accuracy matrix and the timing sweep and writes both into the store
under one run id: the git-ignored local store results/local/ by default, the published store with
SUITE_STORE=results. `nox -s report` rebuilds the published report from the published store.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

# The tested set: every package pinned, made by pip-compile (the command is in the file).
LOCK = "constraints/lock-cpu.txt"
# The published run made in the locked environment, which `nox -s latest` compares against.
LOCKED_RUN = "20261124-cpu-latest"
# Versions the runs in results/ were made with; torch stays on the local CPU build (any other
# version pulls several GB of CUDA packages).
DEFAULT_VERSIONS = {"numpy": "2.4.6", "torch": "2.13.0", "tensorflow": "2.20.0,2.21.0", "jax": "0.9.2,0.10.2"}
# A short sweep (vocab 16 .. 262,147, inputs up to 32 MiB) that keeps a session near 5 minutes here;
# `python -m suite bench` alone sweeps up to 256 MiB.
DEFAULT_SIZES = "64x16,8x1000,16x4096,256x32768,83x50257,64x131072,16x262147"


def _packages(framework: str, version: str) -> list[str]:
    return {"numpy": [f"numpy=={version}"], "torch": [f"torch=={version}"],
            "tensorflow": [f"tensorflow-cpu=={version}"], "jax": [f"jax=={version}", f"jaxlib=={version}"]}[framework]


def _versions(framework: str) -> list[str]:
    text = os.environ.get(f"SUITE_{framework.upper()}_VERSIONS", DEFAULT_VERSIONS[framework])
    return [v.strip() for v in text.split(",") if v.strip()]


def _framework_session(framework: str):
    @nox.session(name=framework)
    @nox.parametrize("version", _versions(framework))
    def session(session: nox.Session, version: str) -> None:
        session.install("-e", ".", *_packages(framework, version))
        run_id = os.environ.get("SUITE_RUN_ID") or (
            f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{framework}-{version}-{secrets.token_hex(2)}")
        common = ["--backends", framework, "--store", os.environ.get("SUITE_STORE", "results/local"),
                  "--run-id", run_id, "--no-progress"]
        if os.environ.get("SUITE_SHARD"):
            common += ["--shard", os.environ["SUITE_SHARD"]]
        session.run("python", "-m", "suite", "run", *common, *session.posargs)
        sizes = os.environ.get("SUITE_SIZES", DEFAULT_SIZES)
        if sizes.lower() != "none":
            session.run("python", "-m", "suite", "bench", *common, "--sizes", sizes,
                        "--min-time", os.environ.get("SUITE_MIN_TIME", "0.2"))

    session.__doc__ = f"{framework}: accuracy matrix and timing sweep into the store, in a venv of its own"
    return session


numpy = _framework_session("numpy")
torch = _framework_session("torch")
tensorflow = _framework_session("tensorflow")
jax = _framework_session("jax")


@nox.session
def tests(session: nox.Session) -> None:
    """What .ci/run runs: the README's test command (the locked set)."""
    session.install("-e", ".[all,test,gpu-kernels]", "-c", LOCK)
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


def _suite(session: nox.Session, command: str, *default: str) -> None:
    """`python -m suite <command> <posargs or default>` in a venv with the suite's core only."""
    session.install("-e", ".")
    session.run("python", "-m", "suite", command, *(session.posargs or default))


@nox.session
def compare(session: nox.Session) -> None:
    """nox -s compare -- jax==0.9.2 jax==0.10.2 --store results (exit 1 on a regression, 3 if files were
    skipped; the default store is results/local)."""
    _suite(session, "compare")


@nox.session
def ab(session: nox.Session) -> None:
    """Timing runs of two builds interleaved (A B B A ...), then compare: nox -s ab -- --a
    .nox/jax-version-0-9-2/bin/python --b .nox/jax-version-0-10-2/bin/python --backends jax (exit 1 on a
    confident regression). Each side runs in its own python; the same python twice is the A/A control."""
    _suite(session, "ab")


@nox.session
def report(session: nox.Session) -> None:
    """The published report (results/report/) from the published store; posargs replace that choice:
    nox -s report -- --store results/local."""
    _suite(session, "report", "--store", "results", "--out", "results/report")


@nox.session
def latest(session: nox.Session) -> None:
    """The newest release of every package, without the lock: what a fresh `pip install -e ".[all]"` gets.
    torch stays this machine's local CPU build (torch==2.13.0): any other torch pulls several GB of CUDA
    packages from PyPI. Runs the whole accuracy matrix into the store (SUITE_STORE, default the published
    results/, which holds the locked run) as run SUITE_RUN_ID (default latest-<date>), then compares it with
    the locked run (SUITE_LOCKED_RUN, default the published 20261124-cpu-latest) into results/comparisons/
    (SUITE_COMPARISONS). posargs go to `python -m suite run`. Exit 0 even when rows moved: the comparison
    is the product; read it."""
    session.install("--upgrade", "--upgrade-strategy", "eager", "-e", ".[all]", "torch==2.13.0")
    session.run("python", "-m", "pip", "list", "--format=freeze")
    store = os.environ.get("SUITE_STORE", "results")
    run_id = os.environ.get("SUITE_RUN_ID") or f"latest-{dt.datetime.now(dt.timezone.utc):%Y%m%d}"
    base = os.environ.get("SUITE_LOCKED_RUN", LOCKED_RUN)
    out = os.path.join(os.environ.get("SUITE_COMPARISONS", "results/comparisons"), f"{base}_vs_{run_id}.md")
    session.run("python", "-m", "suite", "run", "--store", store, "--run-id", run_id, "--no-progress",
                *session.posargs)
    session.run("python", "-m", "suite", "compare", base, run_id, "--store", store, "--out", out,
                success_codes=[0, 1, 3])  # 1: rows got worse (the finding), 3: skipped files listed


# The GPU session's builds: those of the published H200 runs (results/runs/h200-*); SUITE_GPU_* replace them.
GPU_TORCH = "2.11.0"
GPU_TORCH_INDEX = "https://download.pytorch.org/whl/cu130"  # the CUDA 13.0 build (torch 2.11.0+cu130)
GPU_JAX = "0.11.2"  # with its CUDA 13 plug-in: jax[cuda13]
GPU_LIGER = "0.8.5"
# The GPU timing sweep: vocab 16 .. 262,147 and the LLM shapes the report's speed table shows.
GPU_SIZES = "64x16,8x1000,16x4096,256x32768,83x50257,64x131072,16x262147,512x131072,4096x32768"


def _no_gpu() -> str | None:
    """Why this machine cannot run the GPU session (None if it can), before anything is installed."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return "no NVIDIA GPU here: nvidia-smi is not on PATH (the GPU session needs an NVIDIA GPU and its driver)"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi -L failed ({type(exc).__name__}): no usable GPU"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return f"nvidia-smi -L lists no GPU (exit {out.returncode}: {(out.stderr or out.stdout).strip()[:200]})"
    return None


@nox.session
def gpu(session: nox.Session) -> None:
    """On an NVIDIA GPU: the accuracy matrix of torch and of jax on the GPU, Liger-Kernel's plug-in
    (examples/plugins/liger.py) and the GPU timing sweep, each its own run (one partition each: what
    `python -m suite.import_run` publishes) under SUITE_RUN_ID (default <date>-gpu-<hex>) plus -torch, -jax,
    -liger, -timing, into SUITE_STORE (default results/local). Skipped, with the reason, where there is no GPU.
    SUITE_GPU_TORCH, SUITE_GPU_TORCH_INDEX, SUITE_GPU_JAX, SUITE_GPU_LIGER, SUITE_GPU_SIZES (none: no timing)
    and SUITE_MIN_TIME replace the defaults; posargs go to each `python -m suite run`."""
    why = _no_gpu()
    if why:
        session.skip(why)
    env = os.environ.get
    session.install("--index-url", env("SUITE_GPU_TORCH_INDEX", GPU_TORCH_INDEX),
                    f"torch=={env('SUITE_GPU_TORCH', GPU_TORCH)}")
    # liger-kernel alone, not the gpu-kernels extra: torch's CUDA wheels pin their own triton
    session.install("-e", ".", f"jax[cuda13]=={env('SUITE_GPU_JAX', GPU_JAX)}",
                    f"liger-kernel=={env('SUITE_GPU_LIGER', GPU_LIGER)}")
    seen = session.run("python", "-c", "import torch; print('cuda', torch.cuda.is_available())", silent=True)
    if "cuda True" not in str(seen):
        session.skip(f"torch in this venv sees no GPU (torch.cuda.is_available() is False): {str(seen).strip()}")
    run_id = env("SUITE_RUN_ID") or f"{dt.datetime.now(dt.timezone.utc):%Y%m%d}-gpu-{secrets.token_hex(2)}"
    common = ["--devices", "gpu", "--store", env("SUITE_STORE", "results/local"), "--no-progress"]
    for backend in ("torch", "jax"):
        session.run("python", "-m", "suite", "run", *common, "--backends", backend, "--run-id",
                    f"{run_id}-{backend}", *session.posargs)
    session.run("python", "-m", "suite", "run", *common, "--backends", "torch", "--plugin",
                "examples/plugins/liger.py", "--impls", "liger", "--run-id", f"{run_id}-liger", *session.posargs)
    sizes = env("SUITE_GPU_SIZES", GPU_SIZES)
    if sizes.lower() != "none":
        session.run("python", "-m", "suite", "bench", *common, "--backends", "torch,jax", "--sizes", sizes,
                    "--min-time", env("SUITE_MIN_TIME", "0.2"), "--run-id", f"{run_id}-timing")


@nox.session
def zoo(session: nox.Session) -> None:
    """The zoo (docs/zoo.md): keras 3 on each backend, optax and scikit-learn at the lock's versions, their
    tests, then the whole catalog of every zoo plug-in installed here under SUITE_RUN_ID (default
    <date>-cpu-zoo-<hex>) into SUITE_STORE (default results/local); posargs go to `python -m suite run`."""
    session.install("-e", ".[all,zoo,test]", "-c", LOCK)
    session.run("python", "-m", "zoo")
    session.run("python", "-m", "pytest", "-q", "-n", "0", "suite/tests/test_zoo.py")
    impls = session.run("python", "-m", "zoo", "--names", silent=True).strip().splitlines()[-1]
    stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%d}-cpu-zoo-{secrets.token_hex(2)}"
    run_id = os.environ.get("SUITE_RUN_ID") or stamp
    session.run("python", "-m", "suite", "run", "--plugin", "zoo", "--impls", impls, "--devices", "cpu",
                "--store", os.environ.get("SUITE_STORE", "results/local"), "--run-id", run_id, "--no-progress",
                *session.posargs)
