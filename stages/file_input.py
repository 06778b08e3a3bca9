"""file-input: read files of newline-separated lines in large blocks."""
from __future__ import annotations

import bz2
import errno
import glob
import gzip
import hashlib
import os
import sys
import zlib
from typing import Any, Iterator

from pipeline import Batch, Input, InputError, Option, a_path, positive_at_most

from . import multiline
from .follow import Follower

BOM = b"\xef\xbb\xbf"
FINGERPRINT_BYTES = 1024
COMPRESSED_PIECE = 64 << 10  # compressed files are read this much at a time
RANGE_BLOCK = 64 << 10  # a range's identity: hashes of its first and last this many bytes


def _damaged(exc: BaseException, path: str) -> bool:
    """Whether a read error is damaged compressed data (not an I/O error of the disk)."""
    if not path.endswith((".gz", ".bz2")):
        return False
    return not isinstance(exc, OSError) or exc.errno is None


def expand(path: str | list[str]) -> list[str]:
    """The files a `path` option names: a path, "-", a glob, or a list of those."""
    out: list[str] = []
    for item in [path] if isinstance(path, str) else path:
        if item != "-" and glob.has_magic(item):
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

    With `follow: true` (or `--follow`) the files are read to their end and then watched
    for appended lines until the run is stopped (see stages/follow.py); `-` is then read
    to its end as usual.

    With `multiline: {pattern, negate, what, max_lines}`, several lines make one record
    (see stages/multiline.py); a file is then read by one process.
    """

    name = "file-input"
    produces = "lines"
    options = (
        Option("path", (str, list), doc="file, `-` (stdin), glob, or a list of them",
               check=a_path),
        Option("block_size", int, 4 << 20, "bytes read per batch",
               check=positive_at_most(1 << 30)),
        Option("follow", bool, False, "keep reading lines appended to the files until "
                                      "stopped (SIGINT/SIGTERM)"),
        Option("multiline", dict, None, "lines joined into one record: {pattern: '^\\s', "
                                        "negate: false, what: previous, max_lines: 500}",
               check=multiline.check),
    )

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        path = options.get("path")
        if isinstance(path, list) and not path:
            return "stage 'file-input': option 'path' must be a non-empty list of paths"
        if options.get("multiline") is not None and options.get("follow"):
            return ("stage 'file-input': `multiline` cannot be used with `follow` yet (a "
                    "followed file's last record could not know when it ends)")
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
        self.label: str | None = None  # the file named in rejects, when there are several
        self.follower: Follower | None = None  # the reader when following
        joined = multiline.parse(self.multiline) if self.multiline is not None else None
        self.joining = joined if isinstance(joined, multiline.Spec) else None
        if self.follow and "-" not in self.files:  # stdin is read to its end, as usual
            self.follower = Follower([os.path.abspath(f) for f in self.files],
                                     self.block_size, len(self.files) > 1)

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        return "-" not in self.files

    @property
    def plain(self) -> bool:
        """One regular, uncompressed file: can be split, resumed and grown."""
        f = self.files
        return len(f) == 1 and f[0] != "-" and not f[0].endswith((".gz", ".bz2"))

    # -- planning -------------------------------------------------------------------
    # A range is (file index, start, end): the lines that start in [start, end) of one
    # file; end None means "to the end" (stdin, compressed files). The *frontier* is
    # what a plan has covered: each file's identity, size, and whether it ended in \n.

    def ranges(self, target_bytes: int, frontier: dict[str, Any] | None = None
               ) -> tuple[list[tuple[int, int, int | None]], dict[str, Any]]:
        """Ranges of about `target_bytes` covering what is readable now and was not
        covered by `frontier` (check `frontier_problem()` first), and the new frontier."""
        if "-" in self.files:
            return ([(0, 0, None)] if frontier is None else []), {"stdin": True}
        files = [self._file_state(i) for i in range(len(self.files))]
        if self.follower is not None:  # one open-ended reader of every file: one range
            return ([("follow", 0, None)] if frontier is None else []), {"files": files}
        out: list[tuple[int, int, int | None]] = []
        for i, now in enumerate(files):
            if not now["splittable"] or self.joining is not None:
                if frontier is None:
                    out.append((i, 0, None))
                continue
            lo = frontier["files"][i]["size"] if frontier is not None else 0
            if now["size"] > lo:
                n = max(1, -(-(now["size"] - lo) // max(target_bytes, 1)))
                out.extend((i, a, b) for a, b in self._split_range(i, lo, now["size"], n))
        return out, {"files": files}

    def frontier_problem(self, frontier: dict[str, Any]) -> str | None:
        """Why a plan that covered `frontier` cannot continue on the input as it is now."""
        if "-" in self.files:
            return "standard input cannot be re-read"
        saved = frontier.get("files", [])
        if [f["path"] for f in saved] != [os.path.abspath(f) for f in self.files]:
            return "the input files changed"
        for i, old in enumerate(saved):
            try:
                now = self._file_state(i)
            except InputError:
                return "the input is gone"
            if not old["splittable"] or len(saved) > 1 and i < len(saved) - 1:
                if now != old:
                    return "the input files changed"
                continue
            if (now["device"], now["inode"]) != (old["device"], old["inode"]):
                return "the input file was replaced"
            if now["size"] < old["size"]:
                return "the input file was truncated"
            if now["size"] == old["size"] and now["mtime_ns"] != old["mtime_ns"]:
                return "the input file was modified (the same size, a newer modification time)"
            with open(self.files[i], "rb") as fh:
                head = fh.read(old["head_len"])
            if hashlib.sha256(head).hexdigest() != old["head_sha256"]:
                return "the input file was replaced (its first bytes differ)"
            if now["size"] > old["size"] and not old["newline_end"] and not self.follow:
                return "the input's last line, read without its newline, has grown"
        return None

    def unbounded(self) -> bool:
        return self.follower is not None

    def range_bytes(self, piece: Any) -> int:
        i, start, end = piece
        return end - start if isinstance(i, int) and end is not None else 0

    def numbering(self, piece: Any) -> str:
        return str(piece[0])  # each file numbers its lines from 1

    def range_identity(self, piece: Any) -> Any:
        """Hashes of the first and last RANGE_BLOCK bytes of a range of a plain file."""
        i, start, end = piece
        if not isinstance(i, int) or end is None or not self._splittable(self.files[i]):
            return None
        try:
            with open(self.files[i], "rb") as fh:
                head = fh.read(min(RANGE_BLOCK, end - start))
                fh.seek(max(start, end - RANGE_BLOCK))
                tail = fh.read(min(RANGE_BLOCK, end - start))
        except OSError:
            return "unreadable"
        return hashlib.sha256(head).hexdigest()[:32] + hashlib.sha256(tail).hexdigest()[:32]

    @staticmethod
    def _splittable(path: str) -> bool:
        return not path.endswith((".gz", ".bz2")) and path != "-"

    def _file_state(self, i: int) -> dict[str, Any]:
        path = self.files[i]
        st = self._stat_of(path)
        splittable = self._splittable(path)
        state = {"path": os.path.abspath(path),
                 "device": st.st_dev, "inode": st.st_ino, "size": st.st_size,
                 "splittable": splittable, "mtime_ns": st.st_mtime_ns}
        if not splittable:
            return state
        with open(path, "rb") as fh:
            head = fh.read(FINGERPRINT_BYTES)
            last = b"\n"
            if st.st_size:
                fh.seek(st.st_size - 1)
                last = fh.read(1)
        return {**state, "head_sha256": hashlib.sha256(head).hexdigest(),
                "head_len": len(head), "newline_end": last == b"\n"}

    @staticmethod
    def _stat_of(path: str) -> Any:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"cannot read input {path!r}: {exc.strerror}") from None
        if os.path.isdir(path):
            raise InputError(f"cannot read input {path!r}: {os.strerror(errno.EISDIR)}")
        if not os.path.isfile(path):
            raise InputError(f"input {path!r} is not a regular file")
        return st

    def _split_range(self, i: int, lo: int, hi: int, n: int) -> list[tuple[int, int]]:
        """n newline-aligned pieces of [lo, hi) (fewer if lines are long)."""
        bounds = [lo]
        with open(self.files[i], "rb") as fh:
            for k in range(1, n):
                target = max(lo + (hi - lo) * k // n, bounds[-1])
                fh.seek(max(target - 1, 0))
                if target > 0:
                    fh.readline()  # to the start of the next line
                pos = fh.tell() if target > 0 else 0
                if bounds[-1] < pos < hi:
                    bounds.append(pos)
        bounds.append(hi)
        return list(zip(bounds, bounds[1:]))

    def part(self, piece: tuple[int, int, int | None]) -> "FileInput":  # type: ignore[override]
        """A reader of one range that ranges() described."""
        i, start, end = piece
        if i == "follow":
            return FileInput(path=self.path, block_size=self.block_size, follow=True)
        path = self.files[i]
        if path != "-":
            path = os.path.abspath(path)  # Dask workers may run elsewhere
        part = FileInput(path=path, block_size=self.block_size)
        part.start = part.offset = start
        part.end = end
        part.label = self.files[i] if len(self.files) > 1 else None
        return part

    def estimated_bytes(self) -> int | None:
        """Roughly how many bytes of lines there are, to size the reducers' buckets."""
        if "-" in self.files:
            return None
        total = 0
        for f in self.files:
            size = self._stat_of(f).st_size
            total += size * 8 if f.endswith((".gz", ".bz2")) else size
        return total

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        if self.follower is not None:  # a following read ends when the run is stopped
            self.follower.stop = getattr(ctx, "stop", None)

    # -- state --------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        if self.follower is not None:
            return {"follow": self.follower.snapshot()}
        return {"offset": self.offset, "line": self.line, "lines_read": self.lines_read,
                "index": self.index}

    def restore(self, state: dict[str, Any]) -> None:
        if self.follower is not None:
            self.follower.restore(state["follow"])
            return
        self.offset, self.line = state["offset"], state["line"]
        self.lines_read = state["lines_read"]
        self.index = state.get("index", 0)

    def counters(self) -> dict[str, int]:
        if self.follower is not None:
            return {"lines": self.follower.lines_read}
        return {"lines": self.lines_read}

    def identity(self) -> dict[str, Any]:
        if self.follower is not None:  # growing files: their identity is in the state
            return {"follow": [os.path.abspath(f) for f in self.files]}
        if not self.plain:
            return {"files": [self._file_identity(f) for f in self.files]}
        st = self._stat()
        with self._open() as fh:
            head = fh.read(FINGERPRINT_BYTES)
        return {"path": os.path.abspath(self.files[0]), "device": st.st_dev,
                "inode": st.st_ino, "head_sha256": hashlib.sha256(head).hexdigest(),
                "head_len": len(head), "start": self.start}

    @staticmethod
    def _file_identity(path: str) -> dict[str, Any]:
        if path == "-":
            return {"path": "-"}
        st = os.stat(path)
        return {"path": os.path.abspath(path), "device": st.st_dev,
                "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def resume_problem(self, saved: dict[str, Any], state: dict[str, Any]) -> str | None:
        if self.follower is not None:
            if saved != self.identity() or "follow" not in state:
                return "the input files changed"
            return self.follower.problem(state["follow"])
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

    def location(self) -> str:
        if self.follower is not None:
            return self.follower.location()
        prefix = f"{self.files[self.index]} " if len(self.files) > 1 else ""
        if self.start:  # a range's line numbers start at 1: only the byte is absolute
            return f"{prefix}byte {self.offset:,}"
        return f"{prefix}line {self.line:,} (byte {self.offset:,})"

    def total_bytes(self) -> int | None:
        if not self.plain:
            return None
        return (self.end if self.end is not None else self._size()) - self.start

    def position(self) -> int:
        if self.follower is not None:
            return sum(self.follower.offsets)
        return self.offset - self.start

    # -- reading ------------------------------------------------------------------
    def _stat(self) -> Any:
        path = self.files[self.index]
        try:
            return os.stat(path)
        except OSError as exc:
            raise InputError(f"cannot read input {path!r}: {exc.strerror or exc}") from None

    def _size(self) -> int:
        return self._stat().st_size

    def _open(self) -> Any:
        path = self.files[self.index]
        if path == "-":
            return open(sys.stdin.fileno(), "rb", closefd=False)
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
        if self.follower is not None:
            yield from self.follower.read()
            return
        while self.index < len(self.files):
            if self.joining is not None:
                source = self.files[self.index] if len(self.files) > 1 else self.label
                yield from multiline.joined(self._read_file(), self.joining, self, source)
            else:
                yield from self._read_file()
            if self.index + 1 >= len(self.files):
                return
            self.index, self.offset, self.line = self.index + 1, 0, 1

    def _damaged_tail(self, exc: BaseException, carry: bytes, at: int,
                      source: str | None) -> None:
        """A compressed file whose data breaks off: what follows its last whole line is
        one rejected "line", and the file ends there."""
        why = str(exc) or exc.__class__.__name__
        self.ctx.reject(carry[:1024], f"corrupt or truncated compressed data: {why}; the "
                        f"rest of the file cannot be read", line=self.line, offset=at,
                        stage=self.name, file=source)
        self.lines_read += 1
        self.line += 1
        self.offset = at + len(carry)

    def _read_block(self, fh: Any, want: int) -> tuple[bytes, BaseException | None]:
        """Up to `want` bytes, and the damage that cut them short (compressed files are
        read in small pieces, so that what precedes the damage is kept)."""
        if want <= 0:
            return b"", None
        path = self.files[self.index]
        if not path.endswith((".gz", ".bz2")):
            return fh.read(want), None
        pieces: list[bytes] = []
        got = 0
        while got < want:
            try:
                piece = fh.read(min(want - got, COMPRESSED_PIECE))
            except (EOFError, zlib.error, OSError) as exc:
                if not _damaged(exc, path):
                    raise
                return b"".join(pieces), exc
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces), None

    def _read_file(self) -> Iterator[Batch]:
        source = self.files[self.index] if len(self.files) > 1 else self.label
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
                block, broken = self._read_block(fh, want)
                data = carry + block if carry else block
                at_eof = not block and broken is None
                if carry_at == 0 and data.startswith(BOM):
                    data, carry_at = data[3:], 3
                if at_eof:
                    if not data:
                        return
                    lines, carry = [data], b""  # the last line, without its newline
                    nxt = len(data)
                else:
                    lines = data.split(b"\n")  # no copy of the block, unlike data[:cut]
                    carry = lines.pop()  # the part after the last newline
                    if not lines:
                        if broken is not None:
                            self._damaged_tail(broken, carry, carry_at, source)
                            return
                        continue  # a line longer than a block: keep reading
                    nxt = len(data) - len(carry)
                batch = Batch(lines, first_line=self.line, first_offset=carry_at)
                batch.source = source
                carry_at += nxt
                # the snapshot points *after* this batch: set it before yielding
                self.offset = carry_at
                self.line += len(lines)
                self.lines_read += len(lines)
                yield batch
                if broken is not None:  # the lines before the damage, then the damage
                    self._damaged_tail(broken, carry, carry_at, source)
                    return
                if at_eof:
                    return
