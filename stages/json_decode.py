"""json-decode: decode and validate one JSON document per line."""
from __future__ import annotations

import re
from typing import Any, Iterator

import msgspec

from pipeline import Batch, Option, Processor

from .site_event import SiteEventType

SMALL = 16  # below this many lines, decode one by one
SCHEMAS: dict[str, Any] = {"site-event": SiteEventType, "object": dict}
_AT = re.compile(r"^(.*?)(?: - at `\$((?:\.[^`]*)|(?:\[[^`]*))`)?$", re.S)
_MISSING = re.compile(r"Object missing required field `([^`]*)`(?: - at `\$(.*)`)?")


def reject_reason(exc: Exception) -> str:
    """msgspec's error as 'field: problem', e.g. "field 'id': expected non-empty str"."""
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        text = text.removeprefix("JSON is malformed: ")
        return f"invalid JSON: {text[0].lower()}{text[1:]}"
    m = _MISSING.match(text)
    if m:
        path = (m.group(2) or "").lstrip(".")
        return f"field {(path + '.' if path else '') + m.group(1)!r}: missing"
    m = _AT.match(text)
    problem, path = m.group(1), m.group(2) if m else None
    if problem.startswith("Expected `object`") and not path:
        return "not a JSON object: " + problem[0].lower() + problem[1:]
    if problem == "Invalid value 'chat'" or (path == ".type" and problem.startswith("Invalid")):
        problem = problem.replace("Invalid value", "unknown type")
    problem = problem.replace("`str` of length >= 1", "a non-empty string")
    problem = problem.replace("Number out of range", "not a finite number")
    problem = (problem.replace("xpected `float`", "xpected a number")
               .replace("xpected `int | str`", "xpected a string or integer"))
    problem = problem[0].lower() + problem[1:]
    return f"field {path.lstrip('.')!r}: {problem}" if path else problem


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class JsonDecode(Processor):
    """Decode each line as JSON and validate it against a schema; reject the rest.

        - json-decode:
            schema: site-event

    `site-event` is SPEC.md's chat-log record; `object` accepts any JSON object.
    Blank lines are skipped. A rejected line goes to the run's dead-letter file with
    its line number, byte offset and a reason naming the field.
    """

    name = "json-decode"
    options = (Option("schema", str, "site-event", "record schema: site-event or object",
                      choices=tuple(SCHEMAS)),)

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._one = msgspec.json.Decoder(SCHEMAS[self.schema])
        self._many = msgspec.json.Decoder(list[SCHEMAS[self.schema]])  # type: ignore[index]
        self.records = 0
        self.rejected = 0

    def snapshot(self) -> dict[str, int]:
        return {"records": self.records, "rejected": self.rejected}

    def restore(self, state: dict[str, int]) -> None:
        self.records, self.rejected = state["records"], state["rejected"]

    def counters(self) -> dict[str, int]:
        return {"records": self.records, "rejected": self.rejected}

    def process(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            out = Batch()
            if not self._decode_run(batch, 0, len(batch), out):
                # blank lines are the usual culprit: decode the runs between them
                lo = 0
                for i, raw in enumerate(batch):
                    if not raw or raw.isspace():
                        self._decode(batch, lo, i, out)
                        lo = i + 1
                self._decode(batch, lo, len(batch), out)
            self.records += len(out)
            yield out

    def _decode_run(self, batch: Batch, lo: int, hi: int, out: list[Any]) -> bool:
        """Decode lines lo..hi as one JSON array, in C; False if any line is bad."""
        if lo >= hi:
            return True
        lines = batch[lo:hi] if hi - lo < len(batch) else batch
        body = b",".join(lines)
        # msgspec does not check UTF-8 in fields it skips; checking only the non-ASCII
        # lines is 4x cheaper than decoding the whole block to str
        if not body.isascii() and not all(_is_utf8(x) for x in lines if not x.isascii()):
            return False
        try:
            out.extend(self._many.decode(b"[" + body + b"]"))
            return True
        except msgspec.DecodeError:
            return False

    def _decode(self, batch: Batch, lo: int, hi: int, out: list[Any]) -> None:
        """Decode lines lo..hi, bisecting down to the bad lines when there are any."""
        if hi - lo <= SMALL:
            for i in range(lo, hi):
                self._decode_line(batch, i, out)
        elif not self._decode_run(batch, lo, hi, out):
            mid = (lo + hi) // 2
            self._decode(batch, lo, mid, out)
            self._decode(batch, mid, hi, out)

    def _decode_line(self, batch: Batch, i: int, out: list[Any]) -> None:
        raw = batch[i]
        if not raw.strip():
            return  # blank and whitespace-only lines are skipped, not rejected
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._reject(batch, i, f"invalid UTF-8 at byte {exc.start}")
            return
        try:
            out.append(self._one.decode(raw))
        except msgspec.DecodeError as exc:
            self._reject(batch, i, reject_reason(exc))

    def _reject(self, batch: Batch, i: int, reason: str) -> None:
        self.rejected += 1
        line, offset = batch.locate(i)
        extra = {"file": batch.source} if batch.source else {}
        self.ctx.reject(batch[i], reason, line=line, offset=offset, stage=self.name, **extra)
