"""The dead-letter sink: every rejected record, one JSON line each, from any stage."""
from __future__ import annotations

import json
import os
from typing import Any, BinaryIO

from .errors import RejectedLine


class DeadLetter:
    """Appends `{"line", "offset", "stage", "reason", "raw"}` lines to a file.

    The file is created on the first reject. `truncate_to(n)` cuts it back to a
    checkpointed length, so a resumed run holds each rejected line once.
    """

    def __init__(self, path: str | None, strict: bool = False):
        self.path = path  # None: keep the entries in memory, in `entries`
        self.entries: list[dict[str, Any]] = []
        self.strict = strict
        self.count = 0
        self.by_stage: dict[str, int] = {}
        self._fh: BinaryIO | None = None

    def start(self, keep_bytes: int = 0) -> None:
        """Begin a run: drop whatever a previous run wrote past `keep_bytes`."""
        if self.path is not None and os.path.exists(self.path):
            with open(self.path, "r+b") as fh:
                fh.truncate(keep_bytes)

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
        self.append_entry(entry)

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
        stage = entry.get("stage") or ""
        self.by_stage[stage] = self.by_stage.get(stage, 0) + 1
        if self.path is None:
            self.entries.append(entry)
            self.count += 1
            return
        if self._fh is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._fh = open(self.path, "ab")
        self._fh.write(json.dumps(entry, ensure_ascii=False).encode() + b"\n")
        self.count += 1

    def tell(self) -> int:
        """Bytes durably written so far (flushed and fsynced)."""
        if self._fh is None:
            return os.path.getsize(self.path) if os.path.exists(self.path) else 0
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self._fh.tell()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
