"""An output file written atomically (temp + rename) that survives kills and resumes,
and standard output that ends quietly when its reader goes away.

Lines go to `PATH.partial`. `mark()` flushes and fsyncs it and returns its length and
CRC, which the output stage puts in its snapshot; after a kill, `open(mark)` checks the
partial file against them and cuts it back to that length, so a resumed run never
duplicates a line. `commit()` renames it to PATH once the run has finished. An existing
file at PATH is only ever replaced by that rename of a complete output: never moved,
removed or truncated by a run that fails.

A line that cannot be written (full disk, I/O error) stops the run with WriteFailed:
one line naming the file; the last checkpoint holds the partial file's length, so a
rerun cuts it back and resumes. Only a failed fsync at a checkpoint is milder
(CheckpointFailed: that checkpoint is skipped, the run goes on).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import zlib
from typing import Any, BinaryIO

import msgspec

from pipeline.columns import Columns
from pipeline.errors import (CheckpointFailed, DamagedState, OutputClosed, PathError, WriteFailed,
                             reason, writable_problem)
from pipeline.state.trust import fsync_path

WHAT = "output file"
_json = msgspec.json.Encoder()


def cell(value: Any) -> str:
    """A value as text in a table (a CSV cell), by one rule for every output that
    writes text: a string as itself; null (or a missing field) as an empty cell;
    anything else as its JSON text: `true`, `1.5`, `1e22`, `[1,"a"]`, `{"x":1}`."""
    if value.__class__ is str:
        return value
    if value is None:
        return ""
    return json_text(value)


def json_text(value: Any) -> str:
    """A value's compact JSON text (`[1,"a"]`, a string quoted); text UTF-8 cannot hold
    (a lone surrogate) is written escaped, `"\\udc80"`, which JSON reads back as it was."""
    try:
        return _json.encode(value).decode("utf-8")
    except (TypeError, UnicodeEncodeError, OverflowError):  # a lone surrogate inside
        return json.dumps(msgspec.to_builtins(value), ensure_ascii=True, separators=(",", ":"))


def encode_text(text: str) -> bytes:
    """UTF-8, with text that UTF-8 cannot hold (a lone surrogate) escaped as `\\udc80`
    instead of failing the run."""
    return text.encode("utf-8", "backslashreplace")


def json_lines(records: Any) -> bytes:
    """One JSON document per record; a record holding a lone surrogate is written with
    it escaped (`"\\udc80"`, which JSON reads back as the same text). Of Columns, the
    same text, made column by column."""
    if isinstance(records, Columns):
        return records.json_lines()
    encode = _json.encode
    try:
        return b"".join([encode(r) + b"\n" for r in records])
    except UnicodeEncodeError:
        return b"".join(json.dumps(msgspec.to_builtins(r), ensure_ascii=True,
                                   separators=(",", ":")).encode() + b"\n" for r in records)


NEW = {"bytes": 0, "crc": 0}  # the mark of an output not yet written


class ResumableFile:
    """PATH.partial, appended to and checkpointed; renamed to PATH when complete."""

    def __init__(self, path: str):
        self.path = path
        self.partial = path + ".partial"
        self.fh: BinaryIO | None = None
        self.crc = 0  # CRC-32 of everything in the partial file

    def _failed(self, exc: OSError, path: str | None = None, verb: str = "write") -> WriteFailed:
        return WriteFailed(WHAT, path or self.partial, reason(exc), verb)

    def open(self, mark: dict[str, int]) -> BinaryIO:
        """Open for appending after what a checkpoint recorded (`mark()`; NEW: start a
        new file). What is kept must be exactly what was written: the partial file's
        first bytes or, when a finished run is resumed, PATH's. PATH is copied, never
        moved, so it stays as it was until a complete output replaces it. Anything else
        (the file changed or was removed since) is DamagedState: the run starts over."""
        problem = writable_problem(self.path)
        if problem:
            raise PathError(f"{WHAT} {self.path}: {problem}")
        length, crc = mark["bytes"], mark["crc"]
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            if length:
                if not holds(self.partial, length, crc):
                    if not holds(self.path, length, crc):
                        raise DamagedState(self.path, f"its first {length:,} bytes are not "
                                                      f"what the last checkpoint recorded")
                    shutil.copyfile(self.path, self.partial)  # a finished run, resumed
                self.fh = open(self.partial, "r+b")
                self.fh.truncate(length)
                self.fh.seek(length)
            else:
                self.fh = open(self.partial, "wb")
        except OSError as exc:
            raise self._failed(exc) from None
        self.crc = crc
        return self.fh

    def write(self, data: bytes) -> None:
        assert self.fh is not None
        try:
            self.fh.write(data)
        except OSError as exc:
            raise self._failed(exc) from None
        self.crc = zlib.crc32(data, self.crc)

    def mark(self) -> dict[str, int]:
        """Flush and fsync: the length and CRC a checkpoint records."""
        if self.fh is None:
            return dict(NEW)
        try:
            self.fh.flush()
        except OSError as exc:
            raise self._failed(exc) from None
        try:
            os.fsync(self.fh.fileno())
        except OSError as exc:
            raise CheckpointFailed(WHAT, self.partial, reason(exc), "sync") from None
        return {"bytes": self.fh.tell(), "crc": self.crc}

    def commit(self) -> None:
        """Rename the complete output to PATH: until then PATH is left as it was."""
        assert self.fh is not None
        try:
            self.mark()
        except CheckpointFailed as exc:  # the finished file must be on disk
            raise WriteFailed(exc.what, exc.path, exc.why, exc.verb) from None
        self.fh.close()
        self.fh = None
        try:
            os.replace(self.partial, self.path)
            fsync_path(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            raise self._failed(exc, self.path, "commit") from None

    def close(self) -> None:
        if self.fh is not None:
            fh, self.fh = self.fh, None
            try:
                fh.close()
            except OSError:
                pass  # only reached when the run is already failing or stopping


def file_crc(path: str, length: int | None = None) -> tuple[int, int]:
    """(bytes read, CRC-32 of them): the first `length` bytes of `path`, or all of it;
    fewer bytes read than `length` means the file is shorter."""
    value = read = 0
    with open(path, "rb") as fh:
        while length is None or read < length:
            block = fh.read(1 << 20 if length is None else min(length - read, 1 << 20))
            if not block:
                break
            value = zlib.crc32(block, value)
            read += len(block)
    return read, value


def holds(path: str, length: int, crc: int, exact: bool = False) -> bool:
    """Whether `path` starts with `length` bytes whose CRC-32 is `crc` (and, if
    `exact`, holds nothing more)."""
    try:
        if exact and os.path.getsize(path) != length:
            return False
        return file_crc(path, length) == (length, crc)
    except FileNotFoundError:
        return False


class Stdout:
    """Standard output for an output stage. When its reader goes away (EPIPE, as with
    `| head`), writing stops: the engine is told (`ctx.output_closed()`, which stops the
    run at the next batch boundary, or at once), and what follows is discarded.
    `finish()` flushes and raises OutputClosed if the reader went away at any point."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.closed = False

    def _gone(self) -> None:
        self.closed = True
        if self.ctx is None:
            raise OutputClosed()
        self.ctx.output_closed()

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            sys.stdout.buffer.write(data)
        except BrokenPipeError:
            self._gone()
        except OSError as exc:  # e.g. stdout redirected to a file on a full disk
            raise WriteFailed("output", "<standard output>", reason(exc)) from None

    def finish(self) -> None:
        if not self.closed:
            try:
                sys.stdout.buffer.flush()
            except BrokenPipeError:
                self.closed = True
            except OSError as exc:
                raise WriteFailed("output", "<standard output>", reason(exc)) from None
        if self.closed:
            raise OutputClosed()


def write_stdout_text(stream: Any, text: str) -> None:
    """Write a whole text output to a stream (stdout): EPIPE ends the run quietly
    (OutputClosed), any other error names the output."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise OutputClosed() from None
    except OSError as exc:
        raise WriteFailed("output", "<standard output>", reason(exc)) from None
