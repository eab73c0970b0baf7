"""Which (backend, dtype) task an idle worker takes next: each worker keeps to the framework it has
imported (TensorFlow's import alone is ~4 s a process; a worker that switches framework is a fresh
process), unless another framework's tasks are seen to take much longer (JAX compiling cold), which are
then shared out longest first.

The choice only orders the work: every task computes the same rows in whichever worker runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LONGER = 2.0  # a framework whose tasks take this many times longer than any other's goes first


class Lanes:
    """The schedule of `jobs` workers over `backends[i]`'s tasks, given longest first."""

    def __init__(self, backends: list[str], jobs: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.backends, self.clock = backends, clock
        self.remaining = list(range(len(backends)))
        self.loaded: list[str | None] = [None] * jobs  # the framework each worker's process runs
        self.started: dict[int, float] = {}  # running task -> its start
        self.took: dict[str, float] = {}  # backend -> its longest finished task

    def _seen(self, backend: str) -> float:
        """How long a task of `backend` takes, as far as seen: its longest finished or running one."""
        now = self.clock()
        running = [now - t0 for i, t0 in self.started.items() if self.backends[i] == backend]
        return max([self.took.get(backend, 0.0), *running])

    def take(self, lane: int, allowed: Callable[[int], bool] | None = None) -> int | None:
        """The task `lane` runs next (None: none left that `allowed` lets it run): one of a framework it
        has imported, else one of a framework no worker has, else the first left; but first one of a
        framework whose tasks are seen to take LONGER times as long as every other framework's finished
        ones."""
        if not self.remaining:
            return None
        anywhere = set(self.loaded)
        first: dict[str, int] = {}
        for i in self.remaining:
            if allowed is None or allowed(i):
                first.setdefault(self.backends[i], i)
        if not first:
            return None
        leftmost = next(i for i in self.remaining if i in first.values())
        choice = next((i for b, i in first.items() if b == self.loaded[lane]),
                      next((i for b, i in first.items() if b not in anywhere), leftmost))
        slowest = max(first, key=self._seen)
        others = [t for b, t in self.took.items() if b != slowest]
        if others and self._seen(slowest) > LONGER * max(others):
            choice = first[slowest]
        self.remaining.remove(choice)
        self.loaded[lane] = self.backends[choice]  # a worker runs one framework (suite/workers.py)
        self.started[choice] = self.clock()
        return choice

    def retry(self, task: int) -> None:
        """A task whose worker died goes back to the front, to be resumed by the next idle worker."""
        self.started.pop(task, None)
        self.remaining.insert(0, task)

    def done(self, task: int) -> None:
        backend = self.backends[task]
        self.took[backend] = max(self.took.get(backend, 0.0), self.clock() - self.started.pop(task))
