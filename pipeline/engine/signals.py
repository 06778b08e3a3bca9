"""Stopping a run on request: SIGINT/SIGTERM to the main process, or a stop file.

The main process turns its first SIGINT or SIGTERM into a *stop request*: every task
finishes the batch in hand, writes a checkpoint and stops, so a rerun resumes from
there. A second signal means "now": the process exits at once (the last periodic
checkpoint keeps that safe). Worker processes never act on signals themselves: they
ignore SIGINT (a terminal's Ctrl-C reaches the whole group) and are told to stop by
their executor (SIGUSR1 for local workers, a stop file for Dask tasks).

    with stop_on_signals() as request:     # in the main process
        ...                                # request.signal is None, or "SIGTERM"
"""
from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from typing import Any, Iterator

from pipeline.errors import EXIT_CODES, Stopped


class StopRequest:
    """Set once by the first signal; read by tasks through `is_set()`.

    Until the run `arm()`s it (when its tasks start, which check it at every batch
    boundary), a signal stops the run at once: nothing before that point polls it.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self.armed = False

    def arm(self) -> None:
        self.armed = True

    def set(self, name: str) -> None:
        if self.signal is None:
            self.signal = name

    def is_set(self) -> bool:
        return self.signal is not None


class FileFlag:
    """A stop flag other machines can see: a file in the (shared) state directory.
    Checked at most every `every` seconds, so a batch boundary costs a clock read."""

    def __init__(self, path: str, every: float = 0.25):
        self.path, self.every = path, every
        self.next = 0.0
        self.seen = False

    def is_set(self) -> bool:
        if self.seen:
            return True
        now = time.monotonic()
        if now >= self.next:
            self.next = now + self.every
            self.seen = os.path.exists(self.path)
        return self.seen


class NeverSet:
    def is_set(self) -> bool:
        return False


@contextmanager
def stop_on_signals(request: StopRequest | None = None) -> Iterator[StopRequest]:
    """Route SIGINT/SIGTERM to `request` for the duration (main thread only)."""
    request = request or StopRequest()
    names = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

    def handler(signum: int, _frame: Any) -> None:
        if request.signal is not None:  # the second signal: now
            os._exit(EXIT_CODES.get(names[signum], 1))
        request.set(names[signum])
        if not request.armed:  # planning or starting: nothing to finish, nothing to save
            raise Stopped(0)

    old = {s: signal.signal(s, handler) for s in names}
    try:
        yield request
    finally:
        for s, h in old.items():
            signal.signal(s, h)
