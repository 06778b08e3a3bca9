"""json-decode: decode and validate one JSON document per line."""
from __future__ import annotations

import json
import math
import re
from itertools import compress, repeat
from operator import not_
from typing import Any, Iterator

import msgspec
import numpy as np

from pipeline import Batch, Option, Processor
from pipeline.columns import Columns
from pipeline.config import suggest

from .failures import FIELD, ON_FAILURE, OnFailure, line_record
from .fields import MISSING, column, get_in, json_type, path_of, set_in, show
from .site_event import SITE_EVENT_FIELDS, SiteEventType

CHUNK = 512  # lines decoded by one C-level map; after a bad line, the map goes on
SLICE = 8192  # object records: lines decoded (and passed on) at a time
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


FIELD_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool,
                               "object": dict, "array": list}


def check_field_types(fields: Any) -> str | None:
    """Why a `fields:` mapping is not one (an fields: option check), or None."""
    if not fields:
        return "must name at least one field, as in {id: str, timestamp: float}"
    declared: dict[tuple[str, ...], str] = {}
    for name, kind in fields.items():
        if not isinstance(name, str) or not name or "" in name.split("."):
            return f"names a field that is not a dotted JSON name: {name!r}"
        if not isinstance(kind, str) or kind not in FIELD_TYPES:
            return (f"gives field {name!r} the type {kind!r}; the types are "
                    f"{', '.join(FIELD_TYPES)}{suggest(str(kind), FIELD_TYPES)}")
        declared[path_of(name)] = kind
    for path, kind in declared.items():
        for n in range(1, len(path)):
            parent = declared.get(path[:n])
            if parent is not None and parent != "object":
                return (f"declares field {'.'.join(path)!r} inside {'.'.join(path[:n])!r}, "
                        f"which it declares {parent}, not object")
    return None


def fields_schema(fields: dict[str, str]) -> Any:
    """A msgspec Struct type that checks the declared fields (each may be missing or
    null; other fields are ignored): dotted names become nested structs."""
    tree: dict[str, Any] = {}
    for name, kind in fields.items():
        node = tree
        path = path_of(name)
        for step in path[:-1]:  # a parent is an object (check_field_types made sure)
            if not isinstance(node.get(step), dict):
                node[step] = {}
            node = node[step]
        node.setdefault(path[-1], FIELD_TYPES[kind])  # an object keeps its declared fields

    def build(node: dict[str, Any], label: str) -> Any:
        members = [(f"f{i}", (build(t, f"{label}_{i}") if isinstance(t, dict) else t) | None,
                    None) for i, t in enumerate(node.values())]
        return msgspec.defstruct(label, members, rename={f"f{i}": name for i, name in
                                                          enumerate(node)})
    return build(tree, "Fields")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class JsonDecode(OnFailure, Processor):
    """Decode each line as JSON and validate it against a schema; reject the rest.

        - json-decode:
            schema: site-event

    `site-event` is the chat-log record of configs/summary.md; `object` accepts any
    JSON object. With `schema: object`, `fields` declares fields and their types
    (str, int, float, bool, object, array; dotted names for nested ones):

        - json-decode:
            schema: object
            fields: {id: str, timestamp: float, data.status: str}

    A declared field may be missing or null; when it has a value, a value of another
    type rejects the record, naming the field. An integer in a float field becomes a
    float (rounded to the nearest double beyond 2**53, as a double-reading JSON reader
    does); other fields pass as they are.
    Every line is decoded as exactly one JSON value, whatever its neighbours: a line
    holding two objects (`{...},{...}`), half an object, or a fragment of an array is
    rejected, never joined with the next. Blank lines are skipped. A rejected line goes
    to the run's dead-letter file with its line number, byte offset and a reason naming
    the field. Object records go on as columns (pipeline.columns) where every stage
    that follows takes them.
    """

    name = "json-decode"
    accepts = ("lines",)
    produces = "site-event"
    produces_doc = "site-event records, or object records with `schema: object`"
    kind_options = ("schema",)  # named when a config error mentions what it produces
    options = (Option("schema", str, "site-event", "record schema: site-event or object",
                      choices=tuple(SCHEMAS)),
               Option("fields", dict, None, "with schema: object, declared fields and types: "
                      "{id: str, timestamp: float, data.status: str}",
                      check=check_field_types),
               ON_FAILURE)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        if options.get("fields") is not None and options.get("schema", "site-event") != "object":
            return "option 'fields' needs schema: object (site-event records have their own)"
        if options.get("on_failure") == "keep" and options.get("schema", "site-event") != "object":
            return ("stage 'json-decode': on_failure: keep needs schema: object (a line it "
                    "fails on goes on as {\"message\": the line, \"_failures\": [...]})")
        return None

    @classmethod
    def check_kind(cls, options: dict[str, Any], kind: str) -> str | None:
        return None  # it is given lines: what keep needs is checked in check_options

    @classmethod
    def output_kind(cls, options: dict[str, Any], given: str) -> str:
        return "object" if options.get("schema", "site-event") == "object" else "site-event"

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        return SITE_EVENT_FIELDS if options.get("schema", "site-event") != "object" else None

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._one = msgspec.json.Decoder(SCHEMAS[self.schema])
        self._fields = fields_schema(self.fields) if self.fields else None
        self._floats = [(column(name), path_of(name)) for name, kind in
                        (self.fields or {}).items() if kind == "float"]
        self.records = 0
        self.rejected = 0
        self._pending: list[tuple[int, str]] = []  # this batch's rejects: (line, reason)
        self._kept: list[tuple[int, str]] = []  # and its failures kept (on_failure: keep)

    def snapshot(self) -> dict[str, int]:
        return {"records": self.records, "rejected": self.rejected, **self.failure_counts()}

    def restore(self, state: dict[str, int]) -> None:
        self.records, self.rejected = state["records"], state["rejected"]
        self.restore_failure_counts(state)

    def counters(self) -> dict[str, int]:
        return {"records": self.records, "rejected": self.rejected, **self.failure_counts()}

    def process(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in (part for whole in batches for part in self._slices(whole)):
            out = Batch(source=batch.source)
            keep: list[Any] = []  # the lines the records came from: ranges and indices
            self._decode(batch, out, keep)
            lines = np.zeros(0, np.int64)
            if out:
                lines = np.concatenate(
                    [k if isinstance(k, np.ndarray) else np.array(k, np.int64) for k in keep])
                if self._fields is not None:
                    lines = self._check_fields(batch, out, lines)
            if self._kept:
                lines = self._add_kept(batch, out, lines)
            if out:
                out.origins = batch.line_origins(lines)
            self._flush_rejects(batch)
            self.records += len(out)
            if self.feeds_columns and self.schema == "object":
                columns = Columns.from_records(out, out.origins, out.source)
                yield out if columns is None else columns
            else:
                yield out

    def _slices(self, batch: Batch) -> Iterator[Batch]:
        """A block of lines, a slice of at most SLICE lines at a time, for object
        records made into columns: their dicts, made on the way, take several times
        their lines' size, and a whole 4 MB block of them (25,000 records) held about
        50 MB more in every worker, for no gain in speed (filter job, 1M lines, one
        process: 3.16-3.40 s sliced against 3.64-3.81 s). Records that go on as dicts
        are decoded a block at a time: the stages after (dedupe) pay per batch. Each
        slice keeps its lines' numbers and offsets; a batch that does not know them (a
        plugin's input) is decoded whole."""
        if self.schema != "object" or not self.feeds_columns:
            yield batch
            return
        yield from batch.slices(SLICE)

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

    def _check_fields(self, batch: Batch, out: list[Any], lines: np.ndarray) -> np.ndarray:
        """Check the declared fields of every record in `out` (a C-level map of
        msgspec.convert), reject the records that break them, turn integers in float
        fields into floats; returns the line indices of the records kept."""
        convert, schema = msgspec.convert, self._fields
        bad: list[int] = []
        a = 0
        while a < len(out):
            checked: list[Any] = []
            try:
                checked.extend(map(convert, out[a:], repeat(schema)))
                break
            except msgspec.ValidationError as exc:
                j = a + len(checked)
                bad.append(j)
                self._reject(batch, int(lines[j]), self._field_reason(out[j], exc))
                a = j + 1
        if bad:
            drop = set(bad)
            out[:] = [r for j, r in enumerate(out) if j not in drop]
            lines = np.delete(lines, bad)
        for values, path in self._floats:
            for j, v in enumerate(values(out)):
                if v.__class__ is int:
                    set_in(out[j], path, float(v))
        return lines

    @staticmethod
    def _field_reason(record: Any, exc: Exception) -> str:
        """'field 'timestamp': expected float (declared in fields); got string "x"'."""
        m = _AT.match(str(exc))
        path = (m.group(2) or "").lstrip(".") if m else ""
        want = re.search(r"`(\w+) \| null`", str(exc))
        value = get_in(record, path_of(path)) if path else MISSING
        got = "" if value is MISSING else f"; got {json_type(value)} {show(value)}"
        kind = want.group(1) if want else "the declared type"
        return f"field {path!r}: expected {kind} (declared in fields){got}"

    def _reject(self, batch: Batch, i: int, reason: str) -> None:
        if self.on_failure == "dead-letter":
            self.rejected += 1
            self._pending.append((i, reason))
        elif self.on_failure == "drop":
            self.failures_dropped += 1
        else:
            self.failures_kept += 1
            self._kept.append((i, reason))

    def _add_kept(self, batch: Batch, out: list[Any], lines: np.ndarray) -> np.ndarray:
        """on_failure: keep: each line it failed on as {"message": the line (invalid
        UTF-8 replaced), "_failures": [...]}, among the records in line order; returns
        the records' line indices."""
        made = [{**line_record(batch[i]), FIELD: [{"stage": self.name, "reason": why}]}
                for i, why in self._kept]
        at = np.concatenate([lines, np.array([i for i, _ in self._kept], np.int64)])
        self._kept.clear()
        order = np.argsort(at, kind="stable")
        records = [*out, *made]
        out[:] = [records[k] for k in order.tolist()]
        return at[order]

    def _flush_rejects(self, batch: Batch) -> None:
        """The batch's rejects, in line order (a line that decoded but broke `fields`
        is found after the lines that did not decode)."""
        extra = {"file": batch.source} if batch.source else {}
        for i, reason in sorted(self._pending):
            line, offset = batch.locate(i)
            self.ctx.reject(batch[i], reason, line=line, offset=offset, stage=self.name,
                            **extra)
        self._pending.clear()
