"""json-decode: decode and validate one JSON document per line."""
from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate, compress
from operator import not_
from typing import Any, Iterator

import msgspec

from pipeline import Batch, Option, Processor

from .site_event import SiteEventType

SMALL = 16  # below this many lines, decode one by one
SCHEMAS: dict[str, Any] = {"site-event": SiteEventType, "object": dict}
_AT = re.compile(r"^(.*?)(?: - at `\$((?:\.[^`]*)|(?:\[[^`]*))`)?$", re.S)
_AT_BYTE = re.compile(r"\(byte (\d+)\)$")
_AT_INDEX = re.compile(r"at `\$\[(\d+)\]")
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
               .replace("xpected `int | float`", "xpected a number")
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

    `site-event` is the chat-log record of configs/summary.md; `object` accepts any
    JSON object.
    Blank lines are skipped. A rejected line goes to the run's dead-letter file with
    its line number, byte offset and a reason naming the field.
    """

    name = "json-decode"
    accepts = ("lines",)
    produces = "site-event"
    produces_doc = "site-event records, or object records with `schema: object`"
    kind_options = ("schema",)  # named when a config error mentions what it produces
    options = (Option("schema", str, "site-event", "record schema: site-event or object",
                      choices=tuple(SCHEMAS)),)

    @classmethod
    def output_kind(cls, options: dict[str, Any], given: str) -> str:
        return "object" if options.get("schema", "site-event") == "object" else "site-event"

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
            _Block(self, batch).decode(0, len(batch), out)
            self.records += len(out)
            yield out

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


class _Block:
    """One batch of lines being decoded, a run of lines per call into msgspec (in C).

    Blank lines and lines of invalid UTF-8 are found first (cheap C-level scans) and
    handled one by one; the runs between them are decoded as JSON arrays. Where a run
    fails, msgspec's error names the element or byte it stopped at: the lines before it
    are decoded again as a run, that line alone (rejected with its reason), and
    decoding goes on after it. Without a position, the run is bisected.
    """

    def __init__(self, stage: JsonDecode, batch: Batch):
        self.stage, self.batch = stage, batch

    def decode(self, lo: int, hi: int, out: list[Any]) -> None:
        batch = self.batch
        n = len(batch)
        # C-level scans (map/compress): a Python loop over every line costs more
        special = list(compress(range(n), map(not_, batch)))  # empty lines
        special += compress(range(n), map(bytes.isspace, batch))
        wide = list(compress(range(n), map(not_, map(bytes.isascii, batch))))
        # msgspec does not check UTF-8 in fields it skips; the non-ASCII lines are
        # checked together, and one by one only if that fails
        if wide and not _is_utf8(b"\n".join([batch[i] for i in wide])):
            special += (i for i in wide if not _is_utf8(batch[i]))
        for i in sorted(set(special)):
            self._span(lo, i, out)
            self.stage._decode_line(batch, i, out)
            lo = i + 1
        self._span(lo, hi, out)

    def _span(self, lo: int, hi: int, out: list[Any]) -> None:
        """Lines lo..hi, none of them blank or invalid UTF-8."""
        while hi - lo > SMALL:
            stop = self._run(lo, hi, out)
            if stop is None:
                return
            if not lo <= stop < hi:
                mid = (lo + hi) // 2
                self._span(lo, mid, out)
                self._span(mid, hi, out)
                return
            self._span(lo, stop, out)
            self.stage._decode_line(self.batch, stop, out)
            lo = stop + 1
        for i in range(lo, hi):
            self.stage._decode_line(self.batch, i, out)

    def _run(self, lo: int, hi: int, out: list[Any]) -> int | None:
        """Decode lines lo..hi as one array. None if all were good, else the line
        msgspec stopped at (-1 if its error names no position)."""
        lines = self.batch if lo == 0 and hi == len(self.batch) else self.batch[lo:hi]
        body = b",".join(lines)
        try:
            out.extend(self.stage._many.decode(b"[" + body + b"]"))
            return None
        except msgspec.DecodeError as exc:
            text = str(exc)
            m = _AT_INDEX.search(text)
            if m is not None:
                return lo + int(m.group(1))
            m = _AT_BYTE.search(text)
            if m is None:
                return -1
            starts = list(accumulate((len(x) + 1 for x in lines), initial=1))
            return lo + bisect_right(starts, int(m.group(1))) - 1
