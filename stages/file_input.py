"""file-input: read a file of newline-separated lines in large blocks."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Iterator

from pipeline import Batch, Input, InputError, Option, positive

BOM = b"\xef\xbb\xbf"
FINGERPRINT_BYTES = 1024


class FileInput(Input):
    """Read lines from a file; each batch is one block of whole lines (bytes).

        - file-input:
            path: chat.jsonl

    Handles a UTF-8 BOM, CRLF (the `\\r` is left for the decoder, which treats it as
    whitespace), a missing final newline and lines far longer than a block. Every
    batch knows the line number and byte offset of its first line.
    """

    name = "file-input"
    options = (
        Option("path", str, doc="file to read"),
        Option("block_size", int, 4 << 20, "bytes read per batch", check=positive),
    )

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.start = 0          # first byte of this reader's range (a line start)
        self.end: int | None = None  # one past its last byte; None means end of file
        self.offset = 0         # next byte to read: always a line start
        self.line = 1           # number of the line that starts at `offset`
        self.lines_read = 0

    # -- partitioning -------------------------------------------------------------
    def split(self, n: int) -> list["FileInput"]:
        """Up to n readers over newline-aligned byte ranges, in file order."""
        size = self._size()
        bounds = [0]
        with self._open() as fh:
            for i in range(1, n):
                target = max(size * i // n, bounds[-1])
                fh.seek(max(target - 1, 0))
                if target > 0:
                    fh.readline()  # move to the start of the next line
                pos = fh.tell() if target > 0 else 0
                if bounds[-1] < pos < size:
                    bounds.append(pos)
        bounds.append(size)
        return [self.part(lo, hi) for lo, hi in zip(bounds, bounds[1:])]

    def part(self, start: int, end: int | None) -> "FileInput":
        """A reader of the lines starting in [start, end); end None means to EOF."""
        part = FileInput(path=self.path, block_size=self.block_size)
        part.start = part.offset = start
        part.end = end
        return part

    # -- state --------------------------------------------------------------------
    def snapshot(self) -> dict[str, int]:
        return {"offset": self.offset, "line": self.line, "lines_read": self.lines_read}

    def restore(self, state: dict[str, int]) -> None:
        self.offset, self.line = state["offset"], state["line"]
        self.lines_read = state["lines_read"]

    def counters(self) -> dict[str, int]:
        return {"lines": self.lines_read}

    def identity(self) -> dict[str, Any]:
        st = self._stat()
        with self._open() as fh:
            head = fh.read(FINGERPRINT_BYTES)
        return {"path": os.path.abspath(self.path), "device": st.st_dev,
                "inode": st.st_ino, "head_sha256": hashlib.sha256(head).hexdigest(),
                "head_len": len(head), "start": self.start}

    def resume_problem(self, saved: dict[str, Any], state: dict[str, int]) -> str | None:
        try:
            st = self._stat()
        except Exception:
            return "the input is gone"
        if (saved["path"], saved["device"], saved["inode"]) != (
                os.path.abspath(self.path), st.st_dev, st.st_ino):
            return "the input file was replaced"
        with self._open() as fh:
            head = fh.read(saved["head_len"])
            if hashlib.sha256(head).hexdigest() != saved["head_sha256"]:
                return "the input file was replaced (its first bytes differ)"
            if st.st_size < state["offset"]:
                return "the input file was truncated"
            if state["offset"] > 0 and st.st_size > state["offset"]:
                fh.seek(state["offset"] - 1)
                if fh.read(1) != b"\n":
                    return "the input's last line, read without its newline, has grown"
        return None

    def lines_before(self) -> int:
        count, left = 0, self.start
        with self._open() as fh:
            while left > 0:
                block = fh.read(min(left, 16 << 20))
                if not block:
                    break
                count += block.count(b"\n")
                left -= len(block)
        return count

    def resume_has_more(self) -> bool:
        end = self.end if self.end is not None else self._size()
        return self.offset < end

    def where(self) -> str:
        return f"line {self.line:,} (byte {self.offset:,})"

    def total_bytes(self) -> int:
        return (self.end if self.end is not None else self._size()) - self.start

    def position(self) -> int:
        return self.offset - self.start

    def describe(self) -> str:
        return f"{self.name}({self.path})"

    # -- reading ------------------------------------------------------------------
    def _stat(self) -> os.stat_result:
        try:
            return os.stat(self.path)
        except OSError as exc:
            raise InputError(f"cannot read input {self.path!r}: {exc.strerror}") from None

    def _size(self) -> int:
        return self._stat().st_size

    def _open(self) -> Any:
        try:
            fh = open(self.path, "rb")
        except OSError as exc:
            raise InputError(f"cannot read input {self.path!r}: {exc.strerror}") from None
        if not os.path.isfile(self.path):
            fh.close()
            raise InputError(f"input {self.path!r} is not a regular file")
        return fh

    def read(self) -> Iterator[Batch]:
        with self._open() as fh:
            fh.seek(self.offset)
            end = self.end
            carry = b""
            carry_at = self.offset  # file offset of carry[0]
            while True:
                want = self.block_size if end is None else min(self.block_size,
                                                               end - carry_at - len(carry))
                block = fh.read(want) if want > 0 else b""
                data = carry + block if carry else block
                at_eof = not block
                if carry_at == 0 and data.startswith(BOM):
                    data, carry_at = data[3:], 3
                if at_eof:
                    if not data:
                        return
                    cut = len(data)  # last line without its newline
                    nxt = cut
                else:
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        carry = data  # a line longer than a block: keep reading
                        continue
                    nxt = cut + 1
                lines = data[:cut].split(b"\n")
                batch = Batch(lines, first_line=self.line, first_offset=carry_at)
                carry = data[nxt:]
                carry_at += nxt
                # the snapshot points *after* this batch: set it before yielding
                self.offset = carry_at
                self.line += len(lines)
                self.lines_read += len(lines)
                yield batch
                if at_eof:
                    return
