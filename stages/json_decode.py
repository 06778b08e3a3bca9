"""json-decode: decode and validate one JSON document per line."""
from __future__ import annotations

import json
import math
import re
from itertools import compress
from operator import not_
from typing import Any, Iterator

import msgspec
import numpy as np

from pipeline import Batch, Option, Processor

from .site_event import SITE_EVENT_FIELDS, SiteEventType

CHUNK = 512  # lines decoded by one C-level map; after a bad line, the map goes on
SCHEMAS: dict[str, Any] = {"site-event": SiteEventType, "object": dict}
_AT = re.compile(r"^(.*?)(?: - at `\$((?:\.[^`]*)|(?:\[[^`]*))`)?$", re.S)
_MISSING = re.compile(r"Object missing required field `([^`]*)`(?: - at `\$(.*)`)?")
_ANY = msgspec.json.Decoder()


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


def line_reason(raw: bytes, exc: Exception) -> str:
    """Why one line is rejected, naming what msgspec could not: a line that is not JSON
    at all (an nginx line) is "invalid JSON", not "expected object, got float"; a number
    beyond the double range inside an object names its field (`bytes`, `a.b[2]`)."""
    reason = reject_reason(exc)
    if reason.startswith("not a JSON object"):
        try:
            _ANY.decode(raw)
        except msgspec.DecodeError as inner:
            return reject_reason(inner)
        except RecursionError:
            return DEEP
    elif "[...]" in reason and reason.endswith("not a finite number"):
        path = _infinite_at(raw)
        if path:
            return f"field {path!r}: not a finite number"
    return reason


DEEP = "invalid JSON: nested too deeply to decode"


def _infinite_at(raw: bytes) -> str | None:
    """The path of the first number beyond the double range in a JSON line, or None."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    todo: list[tuple[str, Any]] = [("", value)]
    while todo:
        path, v = todo.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return path
        if isinstance(v, dict):
            todo += [(f"{path}.{k}" if path else k, x) for k, x in reversed(v.items())]
        elif isinstance(v, list):
            todo += [(f"{path}[{i}]", x) for i, x in reversed(list(enumerate(v)))]
    return None


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
    Every line is decoded as exactly one JSON value, whatever its neighbours: a line
    holding two objects (`{...},{...}`), half an object, or a fragment of an array is
    rejected, never joined with the next. Blank lines are skipped. A rejected line goes
    to the run's dead-letter file with its line number, byte offset and a reason naming
    the field.
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

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        return SITE_EVENT_FIELDS if options.get("schema", "site-event") != "object" else None

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._one = msgspec.json.Decoder(SCHEMAS[self.schema])
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
            out = Batch(source=batch.source)
            keep: list[Any] = []  # the lines the records came from: ranges and indices
            self._decode(batch, out, keep)
            if out:
                out.origins = batch.line_origins(np.concatenate(
                    [k if isinstance(k, np.ndarray) else np.array(k, np.int64) for k in keep]))
            self.records += len(out)
            yield out

    def _decode(self, batch: Batch, out: list[Any], keep: list[Any]) -> None:
        """Blank lines and lines of invalid UTF-8 are found first (cheap C-level scans)
        and handled one by one; the lines between them are decoded in chunks by a
        C-level map, each line on its own; only a bad line is decoded by itself."""
        n = len(batch)
        # C-level scans (map/compress): a Python loop over every line costs more
        special = list(compress(range(n), map(not_, batch)))  # empty lines
        special += compress(range(n), map(bytes.isspace, batch))
        wide = list(compress(range(n), map(not_, map(bytes.isascii, batch))))
        # msgspec does not check UTF-8 in fields it skips; the non-ASCII lines are
        # checked together, and one by one only if that fails
        if wide and not _is_utf8(b"\n".join([batch[i] for i in wide])):
            special += (i for i in wide if not _is_utf8(batch[i]))
        lo = 0
        for i in sorted(set(special)):
            self._span(batch, lo, i, out, keep)
            if self._decode_line(batch, i, out):
                keep.append([i])
            lo = i + 1
        self._span(batch, lo, n, out, keep)

    def _span(self, batch: Batch, lo: int, hi: int, out: list[Any], keep: list[Any]) -> None:
        """Lines lo..hi, none of them blank or invalid UTF-8. A C-level map decodes a
        chunk into `out`; when a line fails, the lines before it are kept (extend()
        appends as it goes), that line is decoded on its own (and rejected), and the map
        goes on after it."""
        decode = self._one.decode
        a = lo
        while a < hi:
            b = min(a + CHUNK, hi)
            start = len(out)
            try:
                out.extend(map(decode, batch[a:b]))
                keep.append(np.arange(a, b, dtype=np.int64))
                a = b
            except (msgspec.DecodeError, RecursionError):
                bad = a + len(out) - start  # lines a..bad-1 were decoded
                keep.append(np.arange(a, bad, dtype=np.int64))
                if self._decode_line(batch, bad, out):
                    keep.append([bad])
                a = bad + 1

    def _decode_line(self, batch: Batch, i: int, out: list[Any]) -> bool:
        """Decode line i into `out`, or reject it; whether it became a record."""
        raw = batch[i]
        if not raw.strip():
            return False  # blank and whitespace-only lines are skipped, not rejected
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._reject(batch, i, f"invalid UTF-8 at byte {exc.start}")
            return False
        try:
            out.append(self._one.decode(raw))
        except msgspec.DecodeError as exc:
            self._reject(batch, i, line_reason(raw, exc))
            return False
        except RecursionError:
            self._reject(batch, i, DEEP)
            return False
        return True

    def _reject(self, batch: Batch, i: int, reason: str) -> None:
        self.rejected += 1
        line, offset = batch.locate(i)
        extra = {"file": batch.source} if batch.source else {}
        self.ctx.reject(batch[i], reason, line=line, offset=offset, stage=self.name, **extra)
