"""suite/lanes.py: each framework imported by as few workers as it can, without leaving a cold JAX (the
long tasks) to one worker; simulated with a clock, each task's time given (and the first task of a
framework in a worker paying its import)."""

from __future__ import annotations

import pytest

from suite.lanes import Lanes

DTYPES = ("float16", "bfloat16", "float32", "float64")
IMPORT = {"jax": 0.9, "tensorflow": 4.2, "torch": 1.5, "numpy": 0.5}


def simulate(took: dict[str, float], jobs: int = 2, fifo: bool = False) -> tuple[float, dict[str, int]]:
    """Makespan and how many times a worker imported each framework, for tasks in the runner's order (JAX,
    TensorFlow, torch, numpy; one per dtype); fifo: the next task in order, as a shared pool hands out."""
    backends = [b for b in took for _ in DTYPES]
    now = [0.0]
    lanes = Lanes(backends, jobs, clock=lambda: now[0])
    free = [0.0] * jobs  # when each worker is next idle
    loaded: list[str | None] = [None] * jobs  # the framework of each worker's process
    imports = dict.fromkeys(took, 0)
    running: dict[int, tuple[float, int]] = {}  # worker -> (end, task)
    order = iter(range(len(backends)))
    while True:
        for w in range(jobs):
            if w not in running and free[w] <= now[0]:
                i = next(order, None) if fifo else lanes.take(w)
                if i is None:
                    continue
                b = backends[i]
                cost = took[b] + (0.0 if b == loaded[w] else IMPORT[b])  # another framework: a fresh process
                imports[b] += b != loaded[w]
                loaded[w] = b
                running[w] = (now[0] + cost, i)
        if not running:
            break
        w = min(running, key=lambda k: running[k][0])
        now[0], i = running.pop(w)
        free[w] = now[0]
        if not fifo:
            lanes.done(i)
    return now[0], imports


WARM = {"jax": 7.0, "tensorflow": 10.5, "torch": 2.8, "numpy": 3.4}  # seconds per task, measured warm
COLD = {"jax": 57.0, "tensorflow": 12.0, "torch": 2.8, "numpy": 3.4}  # JAX compiling its programs


def test_warm_each_framework_is_imported_once_and_the_run_is_shorter():
    span, imports = simulate(WARM)
    fifo_span, fifo_imports = simulate(WARM, fifo=True)
    assert fifo_imports["tensorflow"] == 2 and imports["tensorflow"] == 1
    assert sum(imports.values()) < sum(fifo_imports.values())
    assert span < fifo_span - 1.0


def test_cold_jax_is_shared_by_both_workers_longest_first():
    span, imports = simulate(COLD)
    fifo_span, _ = simulate(COLD, fifo=True)
    assert imports["jax"] == 2  # the long tasks are not left to one worker
    assert span <= fifo_span + 5.0  # about what a shared pool takes (the JAX tasks set it)
    one_worker_jax = 4 * COLD["jax"]
    assert span < one_worker_jax


@pytest.mark.parametrize("jobs", [1, 2, 3, 8])
def test_every_task_is_handed_out_once(jobs):
    lanes = Lanes(["jax", "jax", "numpy", "torch"], jobs, clock=lambda: 0.0)
    got = []
    while (i := lanes.take(len(got) % jobs)) is not None:
        got.append(i)
        lanes.done(i)
    assert sorted(got) == [0, 1, 2, 3]
    assert lanes.take(0) is None
