"""A progress bar on stderr: bytes read of the total, lines/s and ETA (tqdm).

Shown only when stderr is a terminal and --quiet is not given, so logs and pipes stay
clean. Local workers send their positions to the parent over their socket, Dask tasks
as they finish; the parent draws the bar.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable


def wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class Progress:
    """`update(done_bytes, lines)` at most ~10 times a second; `close()` at the end."""

    def __init__(self, total: int | None, enabled: bool):
        self.bar: Any = None
        self.last = 0.0
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # the bar is a nicety, never a reason to fail
                return
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            file=sys.stderr, dynamic_ncols=True, leave=False,
                            desc="sluice")
            self.start = time.monotonic()

    def update(self, done: int, lines: int = 0, force: bool = False) -> None:
        if self.bar is None:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        self.bar.n = done
        if lines:
            rate = lines / max(now - self.start, 1e-9)
            self.bar.set_postfix_str(f"{lines:,} lines, {rate:,.0f} lines/s", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def chain_hooks(*hooks: Callable[[int, bool], None] | None) -> Callable[[int, bool], None] | None:
    live = [h for h in hooks if h is not None]
    if not live:
        return None

    def hook(records: int, at_end: bool) -> None:
        for h in live:
            h(records, at_end)
    return hook
