"""file-input: read files of newline-separated lines in large blocks."""
from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import os
import sys
import zlib
from typing import Any, Iterator

from pipeline import Batch, Input, InputError, Option, positive

BOM = b"\xef\xbb\xbf"
FINGERPRINT_BYTES = 1024


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def url_stat(path: str) -> Any:
    """An os.stat_result look-alike for an fsspec URL (size, and an etag/mtime as inode)."""
    import types

    import fsspec

    fs, _, (where,) = fsspec.get_fs_token_paths(path)
    info = fs.info(where)
    tag = str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or "")
    return types.SimpleNamespace(st_size=int(info.get("size") or 0), st_dev=0,
                                 st_ino=zlib.crc32(tag.encode()), st_mtime_ns=0)


def expand(path: str | list[str]) -> list[str]:
    """The files a `path` option names: a path, "-", a glob, or a list of those."""
    out: list[str] = []
    for item in [path] if isinstance(path, str) else path:
        if item != "-" and not is_url(item) and glob.has_magic(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise InputError(f"no input file matches {item!r}")
            out.extend(matches)
        else:
            out.append(item)
    return out


class FileInput(Input):
    """Read lines from files; each batch is one block of whole lines (bytes).

        - file-input:
            path: chat.jsonl

    `path` may be a file, `-` for standard input, a glob (`logs/*.jsonl`) or a list of
    those, read in order; `.gz` and `.bz2` files are decompressed. Handles a UTF-8 BOM,
    CRLF (the `\\r` is left for the decoder, which treats it as whitespace), a missing
    final newline and lines far longer than a block. Every batch knows the line number
    and byte offset (in the decompressed file) of its first line. A single plain file
    can be split between workers; several files, compressed files and stdin are read
    by one process, and stdin cannot be resumed after a kill.
    """

    name = "file-input"
    options = (
        Option("path", (str, list), doc="file, `-` (stdin), glob, or a list of them"),
        Option("block_size", int, 4 << 20, "bytes read per batch", check=positive),
    )

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        path = options.get("path")
        if isinstance(path, list) and (not path or not all(isinstance(p, str) for p in path)):
            return "stage 'file-input': option 'path' must be a non-empty list of paths"
        return None

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.files = expand(self.path)
        self.index = 0          # the file being read, in `files`
        self.start = 0          # first byte of this reader's range (a line start)
        self.end: int | None = None  # one past its last byte; None means end of file
        self.offset = 0         # next byte to read: always a line start
        self.line = 1           # number of the line that starts at `offset`
        self.lines_read = 0

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        return "-" not in self.files

    @property
    def plain(self) -> bool:
        """One regular, uncompressed file: can be split, resumed and grown."""
        f = self.files
        return (len(f) == 1 and f[0] != "-" and not f[0].endswith((".gz", ".bz2"))
                and not is_url(f[0]))

    # -- partitioning -------------------------------------------------------------
    def split(self, n: int) -> list["FileInput"]:
        """Up to n readers over newline-aligned byte ranges, in file order."""
        if not self.plain:
            return [self]
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
        part = FileInput(path=self.files[0], block_size=self.block_size)
        part.start = part.offset = start
        part.end = end
        return part

    # -- state --------------------------------------------------------------------
    def snapshot(self) -> dict[str, int]:
        return {"offset": self.offset, "line": self.line, "lines_read": self.lines_read,
                "index": self.index}

    def restore(self, state: dict[str, int]) -> None:
        self.offset, self.line = state["offset"], state["line"]
        self.lines_read = state["lines_read"]
        self.index = state.get("index", 0)

    def counters(self) -> dict[str, int]:
        return {"lines": self.lines_read}

    def identity(self) -> dict[str, Any]:
        if not self.plain:
            return {"files": [self._file_identity(f) for f in self.files]}
        st = self._stat()
        with self._open() as fh:
            head = fh.read(FINGERPRINT_BYTES)
        return {"path": os.path.abspath(self.files[0]), "device": st.st_dev,
                "inode": st.st_ino, "head_sha256": hashlib.sha256(head).hexdigest(),
                "head_len": len(head), "start": self.start}

    def partitions(self, target_bytes: int) -> list["FileInput"]:
        """Readers of about `target_bytes` each, file by file, in order. A compressed
        file is one partition; stdin cannot be partitioned."""
        out: list[FileInput] = []
        for path in self.files:
            if path == "-":
                raise InputError("standard input cannot be split into partitions")
            one = FileInput(path=path, block_size=self.block_size)
            if one.plain:
                out.extend(one.split(max(1, -(-one._size() // target_bytes))))
            else:
                out.append(one)
        return out

    @staticmethod
    def _file_identity(path: str) -> dict[str, Any]:
        if path == "-":
            return {"path": "-"}
        st = url_stat(path) if is_url(path) else os.stat(path)
        return {"path": path if is_url(path) else os.path.abspath(path), "device": st.st_dev,
                "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def resume_problem(self, saved: dict[str, Any], state: dict[str, int]) -> str | None:
        if not self.plain or "files" in saved:
            if "-" in self.files:
                return "standard input cannot be re-read"
            try:
                now = self.identity()
            except OSError:
                return "an input file is gone"
            return None if now == saved else "the input files changed"
        try:
            st = self._stat()
        except Exception:
            return "the input is gone"
        if (saved["path"], saved["device"], saved["inode"]) != (
                os.path.abspath(self.files[0]), st.st_dev, st.st_ino):
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

    def describe(self) -> str:
        name = self.files[0] if len(self.files) == 1 else f"{self.files[0]}+{len(self.files) - 1}"
        return f"{self.name}({name})"

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
        if not self.plain:
            return True
        end = self.end if self.end is not None else self._size()
        return self.offset < end

    def where(self) -> str:
        prefix = f"{self.files[self.index]} " if len(self.files) > 1 else ""
        return f"{prefix}line {self.line:,} (byte {self.offset:,})"

    def total_bytes(self) -> int | None:
        if not self.plain:
            return None
        return (self.end if self.end is not None else self._size()) - self.start

    def position(self) -> int:
        return self.offset - self.start

    # -- reading ------------------------------------------------------------------
    def _stat(self) -> Any:
        path = self.files[self.index]
        try:
            if is_url(path):
                return url_stat(path)
            return os.stat(path)
        except OSError as exc:
            raise InputError(f"cannot read input {path!r}: {exc.strerror or exc}") from None

    def _size(self) -> int:
        return self._stat().st_size

    def _open(self) -> Any:
        path = self.files[self.index]
        if path == "-":
            return open(sys.stdin.fileno(), "rb", closefd=False)
        if is_url(path):
            import fsspec  # comes with dask; s3://, hdfs://, ... need their own packages

            try:
                return fsspec.open(path, "rb", compression="infer").open()
            except (OSError, ValueError, ImportError) as exc:
                raise InputError(f"cannot read input {path!r}: {exc}") from None
        opener = {".gz": gzip.open, ".bz2": bz2.open}.get(os.path.splitext(path)[1], open)
        try:
            fh = opener(path, "rb")
        except OSError as exc:
            raise InputError(f"cannot read input {path!r}: {exc.strerror}") from None
        if not os.path.isfile(path):
            fh.close()
            raise InputError(f"input {path!r} is not a regular file")
        return fh

    def read(self) -> Iterator[Batch]:
        while self.index < len(self.files):
            yield from self._read_file()
            if self.index + 1 >= len(self.files):
                return
            self.index, self.offset, self.line = self.index + 1, 0, 1

    def _read_file(self) -> Iterator[Batch]:
        source = self.files[self.index] if len(self.files) > 1 else None
        with self._open() as fh:
            if self.offset:
                if self.files[self.index] == "-":
                    raise InputError("standard input cannot be re-read from a checkpoint")
                fh.seek(self.offset)  # compressed files: decompresses up to there
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
                batch.source = source
                carry = data[nxt:]
                carry_at += nxt
                # the snapshot points *after* this batch: set it before yielding
                self.offset = carry_at
                self.line += len(lines)
                self.lines_read += len(lines)
                yield batch
                if at_eof:
                    return
