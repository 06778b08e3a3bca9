"""json-decode: decode and validate one JSON document per line."""
from __future__ import annotations

import re
from typing import Any, Iterator

import msgspec

from pipeline import Batch, Option, Processor

from .site_event import SiteEventType

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
    problem = problem.replace("`float`", "a number").replace("`int | str`", "a string or integer")
    problem = problem[0].lower() + problem[1:]
    return f"field {path.lstrip('.')!r}: {problem}" if path else problem


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
            out = self._fast(batch)
            if out is None:
                out = self._slow(batch)
            self.records += len(out)
            yield out

    def _fast(self, batch: Batch) -> Batch | None:
        """Decode the whole block at once; None if any line needs a closer look."""
        if not batch:
            return Batch()
        body = b",".join(batch)
        if not body.isascii():
            try:
                body.decode("utf-8")  # msgspec does not check fields it skips
            except UnicodeDecodeError:
                return None
        try:
            return Batch(self._many.decode(b"[" + body + b"]"))
        except msgspec.DecodeError:
            return None  # one bad or blank line: find it the slow way

    def _slow(self, batch: Batch) -> Batch:
        out = Batch()
        decode = self._one.decode
        for i, raw in enumerate(batch):
            if not raw.strip():
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._reject(batch, i, f"invalid UTF-8 at byte {exc.start}")
                continue
            try:
                out.append(decode(raw))
            except msgspec.DecodeError as exc:
                self._reject(batch, i, reject_reason(exc))
        return out

    def _reject(self, batch: Batch, i: int, reason: str) -> None:
        self.rejected += 1
        line, offset = batch.locate(i)
        self.ctx.reject(batch[i], reason, line=line, offset=offset, stage=self.name)
