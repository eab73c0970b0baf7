"""Progress of a long command: tqdm's bar on a terminal; in a log or a pipe, where a bar prints nothing (or
carriage-return litter), a plain line every few seconds, so a run that is slow can be told from one that hangs."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

PLAIN_EVERY_S = 10.0  # seconds between plain lines; SUITE_PROGRESS_EVERY_S overrides it (the tests use 0.2)


def plain_every() -> float:
    """The plain lines' period: SUITE_PROGRESS_EVERY_S if it is a positive number, else PLAIN_EVERY_S."""
    try:
        every = float(os.environ.get("SUITE_PROGRESS_EVERY_S", PLAIN_EVERY_S))
    except ValueError:
        return PLAIN_EVERY_S
    return every if every > 0 else PLAIN_EVERY_S


class PlainProgress:
    """tqdm's update / set_postfix_str / total / close, shown as one flushed line
    ('timing: 12/72 configs done, 31 s elapsed, now: torch cpu float32 64x16 softmax fused forward')
    every `every` seconds, and a last one at the end if any was printed (a command shorter than
    `every` prints none). A thread prints the lines, so one step that takes minutes (a compile,
    a huge input) still shows the command is alive."""

    def __init__(self, total: int, desc: str, unit: str, every: float | None = None,
                 file: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.n, self.postfix = total, desc, unit, 0, ""
        self.every = plain_every() if every is None else every
        self.file = file if file is not None else sys.stdout
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.lines = 0
        self._thread = threading.Thread(target=self._beat, name=f"{desc}-progress", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self._line()

    def _line(self, last: bool = False) -> None:
        with self._lock:
            now = f", now: {self.postfix}" if self.postfix and not last else ""
            try:
                print(f"{self.desc}: {self.n}/{self.total} {self.unit}s done, "
                      f"{time.monotonic() - self.t0:.0f} s elapsed{now}", file=self.file, flush=True)
                self.lines += 1
            except (OSError, ValueError):  # the reader left (a closed pipe): progress is not worth an error
                self._stop.set()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            if self.lines:
                self._line(last=True)


def progress_bar(total: int, desc: str, unit: str, progress: bool | None) -> Any:
    """What `run` and `bench` report progress with: progress False shows nothing, True tqdm's bar; None
    (the default) tqdm's bar when stdout is a terminal, else PlainProgress lines on stdout."""
    from tqdm import tqdm

    if progress is None and not _is_terminal(sys.stdout):
        return PlainProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True,
                disable=(None if progress is None else not progress))


def _is_terminal(f: TextIO) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False
