"""An output file written atomically (temp + rename) that survives kills and resumes.

Lines go to `PATH.partial`. `mark()` flushes and fsyncs it and returns its length, which
the output stage puts in its snapshot; after a kill, `open(mark)` cuts the partial file
back to that length, so a resumed run never duplicates a line. `commit()` renames it to
PATH once the run has finished.
"""
from __future__ import annotations

import os
from typing import BinaryIO


class ResumableFile:
    def __init__(self, path: str):
        self.path = path
        self.partial = path + ".partial"
        self.fh: BinaryIO | None = None

    def open(self, length: int) -> BinaryIO:
        """Open for appending after `length` bytes (0: start a new file)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if length and not os.path.exists(self.partial) and os.path.exists(self.path):
            os.replace(self.path, self.partial)  # a finished run being resumed
        if length and os.path.exists(self.partial):
            self.fh = open(self.partial, "r+b")
            self.fh.truncate(length)
            self.fh.seek(length)
        else:
            self.fh = open(self.partial, "wb")
        return self.fh

    def mark(self) -> int:
        if self.fh is None:
            return 0
        self.fh.flush()
        os.fsync(self.fh.fileno())
        return self.fh.tell()

    def commit(self) -> None:
        assert self.fh is not None
        self.mark()
        self.fh.close()
        self.fh = None
        os.replace(self.partial, self.path)
        fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
