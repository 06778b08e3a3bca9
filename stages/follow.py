"""Following growing files: whole lines as they are appended, until the run is stopped.

Used by file-input with `follow: true`. Each poll reads, file by file in list order,
every line whose `\\n` has arrived; an unterminated last line waits for its newline.
When nothing is new it yields an empty batch and sleeps, so the engine can checkpoint,
emit and notice a stop request between polls (idle, a poll is a few `stat` calls).

With several files, "file order" is the order lines are read in: each poll takes each
file's new lines in list order. A file that is truncated or replaced (other inode, or
other first bytes) raises InputChanged: the engine starts over, as for a batch run.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Any, Iterator

from pipeline import Batch, InputChanged, InputError

BOM = b"\xef\xbb\xbf"
HEAD_BYTES = 1024
POLL_SECONDS = 0.25


class Follower:
    def __init__(self, files: list[str], block_size: int, label: bool):
        self.files, self.block_size, self.label = files, block_size, label
        n = len(files)
        self.offsets = [0] * n          # next byte to read in each file: a line start
        self.lines = [1] * n            # the number of the line starting there
        self.heads: list[Any] = [None] * n  # (device, inode, head length, head sha256)
        self.lines_read = 0
        self.sizes = [-1] * n           # last size seen, to re-check heads only on change
        self.stop: Any = None           # the run's stop request: reading ends there

    # -- state ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"offsets": list(self.offsets), "lines": list(self.lines),
                "heads": [list(h) if h else None for h in self.heads],
                "lines_read": self.lines_read}

    def restore(self, state: dict[str, Any]) -> None:
        self.offsets, self.lines = list(state["offsets"]), list(state["lines"])
        self.heads = [tuple(h) if h else None for h in state["heads"]]
        self.lines_read = state["lines_read"]

    def problem(self, state: dict[str, Any]) -> str | None:
        """Why a saved state does not describe the files as they are now, or None."""
        saved = Follower(self.files, self.block_size, self.label)
        saved.restore(state)
        try:
            for i, path in enumerate(self.files):
                if os.path.exists(path) or saved.heads[i] is not None:
                    saved._check(i, os.stat(path))
        except InputChanged as exc:
            return str(exc)
        except OSError:
            return "an input file is gone"
        return None

    def location(self) -> str:
        return ", ".join(f"{f} line {n:,} (byte {o:,})" if len(self.files) > 1
                         else f"line {n:,} (byte {o:,})"
                         for f, n, o in zip(self.files, self.lines, self.offsets))

    # -- reading --------------------------------------------------------------------
    def read(self) -> Iterator[Batch]:
        """Until the run is stopped: then it ends like a file, after the batch in hand."""
        while not self._stopping():
            fresh = False
            for i in range(len(self.files)):
                for batch in self._new_lines(i):
                    fresh = True
                    yield batch
                    if self._stopping():
                        return
            if not fresh:
                yield Batch()  # idle: the engine may checkpoint, emit or stop now
                if not self._stopping():
                    time.sleep(POLL_SECONDS)

    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _check(self, i: int, st: os.stat_result) -> None:
        """Raise InputChanged if file i is not the file (or the prefix) read so far."""
        path = self.files[i]
        head = self.heads[i]
        if head is None:
            return
        if (st.st_dev, st.st_ino) != (head[0], head[1]):
            raise InputChanged(f"the input file {path} was replaced")
        if st.st_size < self.offsets[i]:
            raise InputChanged(f"the input file {path} was truncated")
        if st.st_size != self.sizes[i]:
            with open(path, "rb") as fh:
                data = fh.read(head[2])
            if len(data) < head[2] or hashlib.sha256(data).hexdigest() != head[3]:
                raise InputChanged(f"the input file {path} was replaced (its first bytes "
                                   f"differ)")

    def _new_lines(self, i: int) -> Iterator[Batch]:
        path = self.files[i]
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if self.heads[i] is not None:
                raise InputChanged(f"the input file {path} was removed") from None
            return  # not there yet: a later poll may find it
        except OSError as exc:
            raise InputError(f"cannot read input {path!r}: {exc.strerror}") from None
        self._check(i, st)
        self.sizes[i] = st.st_size
        if st.st_size <= self.offsets[i] and self.heads[i] is not None:
            return
        with open(path, "rb") as fh:
            if self.heads[i] is None:
                data = fh.read(HEAD_BYTES)
                self.heads[i] = (st.st_dev, st.st_ino, len(data),
                                 hashlib.sha256(data).hexdigest())
            fh.seek(self.offsets[i])
            carry = b""
            while True:
                block = fh.read(self.block_size)
                if not block:
                    return  # what is left in carry has no newline yet: it waits
                data = carry + block if carry else block
                at = self.offsets[i]
                if at == 0 and data.startswith(BOM):
                    data, at = data[3:], 3
                    self.offsets[i] = 3
                lines = data.split(b"\n")
                carry = lines.pop()
                if not lines:
                    continue
                batch = Batch(lines, first_line=self.lines[i], first_offset=at)
                batch.source = path if self.label else None
                # the snapshot points *after* this batch: set it before yielding
                self.offsets[i] = at + len(data) - len(carry)
                self.lines[i] += len(lines)
                self.lines_read += len(lines)
                yield batch
