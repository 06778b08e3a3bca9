"""The dead-letter sink: every rejected record, one JSON line each, from any stage.

Rejected lines hold raw input, so the file is created 0600. A dead-letter file that
cannot be written stops the run (WriteFailed: one line, exit 2; the last checkpoint
records its length, so a rerun resumes without losing or repeating a line); one whose
path cannot work at all is refused before the run starts (PathError).
"""
from __future__ import annotations

import json
import os
import re
import zlib
from typing import Any, BinaryIO

from pipeline.errors import (CheckpointFailed, DamagedState, PathError, RejectedLine, WriteFailed,
                             reason, writable_problem)
from pipeline.state.trust import make_private_dirs, open_private

WHAT = "dead-letter file"
_VALUES = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|-?\d+(?:\.\d+)?")


def reason_class(reason: str) -> str:
    """`field 'bytes': sum(bytes) needs a number, got 'x'` -> `field _: sum(bytes) needs
    a number, got _`: one class for every value (the metrics' label)."""
    return _VALUES.sub("_", reason)[:60]


class DeadLetter:
    """Appends `{"line", "offset", "stage", "reason", "raw"}` lines to a file.

    The file is created on the first reject. `truncate_to(n)` cuts it back to a
    checkpointed length, so a resumed run holds each rejected line once.

    Stages' rejects are held until the engine's next barrier (`flush()`, and before
    `seal()` and `close()`) and written in line order, by file: a batch's rejects from
    json-decode and from a stage after it come in the order of their lines, so the
    file is the same however the input was cut into batches or pieces (one process,
    workers, parts). Entries copied from elsewhere (`append_entry`) are in order already.
    """

    def __init__(self, path: str | None, strict: bool = False):
        self.path = path  # None: keep the entries in memory, in `entries`
        self.entries: list[dict[str, Any]] = []
        self.strict = strict
        self.count = 0
        self.by_stage: dict[str, int] = {}
        self.by_class: dict[tuple[str, str], int] = {}  # (stage, reason_class): count
        self._fh: BinaryIO | None = None
        self._crc = 0  # CRC-32 of everything in the file
        self._held: list[dict[str, Any]] = []  # rejects since the last flush()
        self._files: dict[Any, int] = {}  # each file's place, in the order first rejected

    def start(self, keep_bytes: int = 0, crc: int | None = None) -> None:
        """Begin a run: check the path, and drop whatever a previous run wrote past
        `keep_bytes`. With `crc` (a checkpoint's), the part kept must match it, or the
        file is damaged (DamagedState)."""
        if self.path is None:
            return
        problem = writable_problem(self.path)
        if problem:
            raise PathError(f"{WHAT} {self.path}: {problem}; use another --dead-letter")
        kept = b""
        if os.path.exists(self.path):
            try:
                with open(self.path, "r+b") as fh:
                    fh.truncate(keep_bytes)
                    kept = fh.read()
            except OSError as exc:
                raise WriteFailed(WHAT, self.path, reason(exc)) from None
        self._crc = zlib.crc32(kept)
        if crc is not None and (len(kept) != keep_bytes or self._crc != crc):
            raise DamagedState(self.path, f"its first {keep_bytes:,} bytes are not what the "
                                          f"checkpoint recorded")

    def reject(self, raw: Any, reason: str, *, line: int | None = None,
               offset: int | None = None, stage: str = "", file: str | None = None) -> None:
        if self.strict:
            raise RejectedLine(reason, line, stage, file)
        if isinstance(raw, bytes):
            text = raw.decode("utf-8", errors="backslashreplace")
        else:
            text = raw if isinstance(raw, str) else repr(raw)
        entry = {"line": line, "offset": offset, "stage": stage, "reason": reason,
                 "raw": text}
        if file is not None:
            entry = {"file": file, **entry}
        self._counted(stage, reason)
        self._files.setdefault(file, len(self._files))
        self._held.append(entry)

    def _counted(self, stage: str, reason: str) -> None:
        self.by_stage[stage] = self.by_stage.get(stage, 0) + 1
        key = (stage, reason_class(reason))
        self.by_class[key] = self.by_class.get(key, 0) + 1
        self.count += 1

    def flush(self) -> None:
        """Write the held rejects, in order of file, then line (those without a line
        last, as they came), then stage and reason: entries that tie on all of them
        are the same text."""
        if not self._held:
            return
        held, self._held = self._held, []
        files = self._files

        def key(e: dict[str, Any]) -> tuple[Any, ...]:
            line = e["line"]
            return (files[e.get("file")], line is None, line or 0, e["stage"], e["reason"])
        held.sort(key=key)
        for entry in held:
            self._write(entry)

    def refuse_if_strict(self, entry: dict[str, Any]) -> None:
        """Under --strict, a rejected line found in saved state stops the run too."""
        if self.strict:
            raise RejectedLine(entry["reason"], entry.get("line"), entry.get("stage", ""),
                               entry.get("file"))

    def first_saved(self) -> dict[str, Any] | None:
        """The first entry already in the file (after a resume), if any."""
        if self.path is None or not os.path.exists(self.path):
            return None
        with open(self.path, "rb") as fh:
            first = fh.readline()
        return json.loads(first) if first.strip() else None

    def append_entry(self, entry: dict[str, Any]) -> None:
        """Append an entry as it is (one copied from a task's dead-letter file)."""
        self.flush()
        self._counted(entry.get("stage") or "", entry.get("reason") or "")
        self._write(entry)

    def _write(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            self.entries.append(entry)
            return
        try:
            if self._fh is None:
                make_private_dirs(os.path.dirname(os.path.abspath(self.path)))
                self._fh = open(open_private(self.path, os.O_WRONLY | os.O_CREAT |
                                             os.O_APPEND), "ab")
            data = json.dumps(entry, ensure_ascii=False).encode("utf-8", "backslashreplace")
            self._fh.write(data + b"\n")
            self._crc = zlib.crc32(b"\n", zlib.crc32(data, self._crc))
        except OSError as exc:
            raise WriteFailed(WHAT, self.path, reason(exc)) from None

    def tell(self) -> int:
        """Bytes durably written so far (flushed and fsynced). WriteFailed if they
        cannot be written; CheckpointFailed if only the fsync fails."""
        self.flush()
        if self._fh is None:
            return os.path.getsize(self.path) if os.path.exists(self.path) else 0
        try:
            self._fh.flush()
        except OSError as exc:
            raise WriteFailed(WHAT, self.path, reason(exc)) from None
        try:
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise CheckpointFailed(WHAT, self.path, reason(exc), "sync") from None
        return self._fh.tell()

    def seal(self) -> dict[str, int]:
        """Its length and CRC, durably: what a checkpoint or a task's result records."""
        return {"bytes": self.tell(), "crc": self._crc}

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError as exc:
                raise WriteFailed(WHAT, self.path, reason(exc)) from None
