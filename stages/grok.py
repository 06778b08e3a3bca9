"""grok: parse text into fields with named regular-expression patterns, a column at a
time (Arrow's RE2 `extract_regex`). The pattern library is stages/grok_patterns.py."""
from __future__ import annotations

import re
from typing import Any, Iterator

import numpy as np

from pipeline import Batch, Option, Processor
from pipeline.columns import Columns

from .failures import FIELD, ON_FAILURE, OnFailure, as_records, line_record
from .fields import MISSING, column, json_type, text_source_problem
from .grok_patterns import PATTERNS

_REF = re.compile(r"%\{([A-Za-z0-9_]+)(?::([A-Za-z_][A-Za-z0-9_]*))?(?::([a-z]+))?\}")
_ANY_REF = re.compile(r"%\{([^}]*)\}")
CONVERSIONS = ("int", "float")
MAX_DEPTH = 30
SLICE = 8192  # lines parsed at a time (see process)


class GrokError(ValueError):
    pass


class Compiled:
    """One `match` pattern, expanded: the RE2 text, and its captures in order as
    (group name, field, conversion or None)."""

    def __init__(self, text: str, regex: str, captures: list[tuple[str, str, str | None]]):
        self.text, self.regex, self.captures = text, regex, captures


def compile_pattern(text: str, library: dict[str, str]) -> Compiled:
    """Expand `text` (its %{...} references, recursively) into one RE2 pattern whose
    named groups are the captures; GrokError says what is wrong."""
    captures: list[tuple[str, str, str | None]] = []
    fields: set[str] = set()

    def expand(pattern: str, stack: tuple[str, ...]) -> str:
        if len(stack) > MAX_DEPTH:
            raise GrokError(f"patterns nest deeper than {MAX_DEPTH}: {' -> '.join(stack)}")
        out, at = [], 0
        for m in _ANY_REF.finditer(pattern):
            ref = _REF.fullmatch(m.group(0))
            if ref is None:
                raise GrokError(f"`{m.group(0)}` is not %{{NAME}}, %{{NAME:field}} or "
                                f"%{{NAME:field:int|float}}")
            name, field, conversion = ref.groups()
            if conversion is not None and conversion not in CONVERSIONS:
                raise GrokError(f"`{m.group(0)}`: a capture converts to int or float; "
                                f"got {conversion!r}")
            if name not in library:
                close = [n for n in library if n.lower() == name.lower()]
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise GrokError(f"unknown pattern {name!r}{hint}")
            if name in stack:
                raise GrokError(f"pattern {name} refers to itself: "
                                f"{' -> '.join((*stack, name))}")
            inner = expand(library[name], (*stack, name))
            out.append(pattern[at:m.start()])
            if field is None:
                out.append(f"(?:{inner})")
            else:
                if field in fields:
                    raise GrokError(f"field {field!r} is captured twice")
                fields.add(field)
                group = f"g{len(captures)}"
                captures.append((group, field, conversion))
                out.append(f"(?P<{group}>{inner})")
            at = m.end()
        out.append(pattern[at:])
        return "".join(out)

    regex = expand(text, ())
    if not captures:
        raise GrokError("it captures no field: name one, as in %{IP:client}")
    _check_re2(regex)
    return Compiled(text, regex, captures)


def _check_re2(regex: str) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    try:
        pc.extract_regex(pa.array([""], pa.string()), pattern=regex)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise GrokError(f"not a regular expression RE2 takes: "
                        f"{str(exc).splitlines()[0]}") from None


def _library(options: dict[str, Any]) -> dict[str, str]:
    return {**PATTERNS, **(options.get("patterns") or {})}


def _matches(options: dict[str, Any]) -> list[str]:
    match = options.get("match")
    return [match] if isinstance(match, str) else list(match or [])


class Grok(OnFailure, Processor):
    """Parse text into fields with named patterns (grok), a column at a time.

        - grok:
            match: "%{COMBINEDAPACHELOG}"          # or a list, tried in order
            patterns: {STATUS: "[1-5][0-9]{2}"}     # your own, beside the library's
            on_failure: keep                        # dead-letter (default) | keep | drop

    `%{NAME}` matches pattern NAME (stages/grok_patterns.py, or yours); `%{NAME:field}`
    also captures what it matched as `field`, a string; `%{NAME:field:int}` (or `:float`)
    converts it. Anything else in a pattern is an RE2 regular expression (Arrow's engine:
    no look-around or back-references). A pattern matches anywhere in the text unless it
    says `^`/`$`.

    Without `field`, grok takes file-input's raw lines and makes records of the captured
    fields alone. With `field`, it reads that field of object records (a string) and adds
    the captured fields to them (replacing any of the same name). A capture that matched
    nothing (an optional part that was not there, like `bytes` where the log says `-`) is
    no field at all, as Logstash's default `keep_empty_captures: false`.

    Patterns are expanded and compiled when the config is loaded: an unknown pattern, a
    pattern that refers to itself, a field captured twice, or a regular expression RE2
    refuses is a config error with its line. A record no pattern matches fails (`no
    pattern matched`), and on_failure says what happens to it (stages/failures.py): with
    `keep`, a raw line becomes {"message": the line, "_failures": [...]}.
    """

    name = "grok"
    order_free = True
    accepts = ("lines", "object")
    produces = "object"
    columnar = True
    loads = ("pyarrow",)
    options = (
        Option("match", (str, list), doc="a pattern, or a list of them tried in order: "
                                          "%{NAME:field} captures a field"),
        Option("field", str, None, "the field of object records to parse (default: the "
                                   "raw lines of file-input)"),
        Option("patterns", dict, None, "{NAME: pattern}: your own named patterns"),
        ON_FAILURE,
    )

    @classmethod
    def compile(cls, options: dict[str, Any]) -> list[Compiled]:
        """The stage's patterns, compiled; GrokError, naming the pattern, if one is not."""
        library = _library(options)
        out = []
        for text in _matches(options):
            try:
                out.append(compile_pattern(text, library))
            except GrokError as exc:
                raise GrokError(f"match {text!r}: {exc}") from None
        return out

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        matches = _matches(options)
        if not matches or not all(isinstance(m, str) and m for m in matches):
            return ("stage 'grok': `match` must be a pattern or a non-empty list of "
                    f"patterns; got {options.get('match')!r}")
        for name, text in (options.get("patterns") or {}).items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                return f"stage 'grok': pattern names are letters, digits and _; got {name!r}"
            if not isinstance(text, str):
                return f"stage 'grok': pattern {name!r} must be text; got {text!r}"
        return cls._compiles(options)

    @classmethod
    def _compiles(cls, options: dict[str, Any]) -> str | None:
        try:
            cls.compile(options)
        except GrokError as exc:
            return f"stage {cls.name!r}: {exc}"
        return None

    @classmethod
    def check_kind(cls, options: dict[str, Any], kind: str) -> str | None:
        return text_source_problem(options, kind, "parse")

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        if options.get("field") is not None:
            return None  # the fields given, and what the patterns capture
        try:
            fields = [f for c in cls.compile(options) for _, f, _ in c.captures]
        except GrokError:
            return None
        if options.get("on_failure") == "keep":
            fields += ["message", FIELD]
        return tuple(dict.fromkeys(fields))

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.compiled = self.compile(options)
        self.fields = list(dict.fromkeys(f for c in self.compiled for _, f, _ in c.captures))
        self.get = column(self.field) if self.field is not None else None

    def process(self, batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        for whole in batches:
            # a block of lines a slice at a time: each pattern's captures (a column per
            # field) and the records made of them are several times the lines' size
            for batch in whole.slices(SLICE) if isinstance(whole, Batch) else [whole]:
                if len(batch):
                    yield self._parsed(batch)
            pa.default_memory_pool().release_unused()

    def _parsed(self, batch: Any) -> Any:
        texts, failed = self._texts(batch)
        values, matched = self._parse(texts, failed)
        if self.field is None:
            return self._records_of_lines(batch, values, matched, failed)
        return self._records_with_fields(batch, values, matched, failed)

    # -- parsing, a column at a time ------------------------------------------------------
    def _texts(self, batch: Any) -> tuple[Any, dict[int, str]]:
        """The text to parse of each record, as an Arrow string array (null where there
        is none), and the records that have none, with the reason."""
        import pyarrow as pa
        failed: dict[int, str] = {}
        if self.field is None:
            try:
                return pa.array(batch, pa.binary()).cast(pa.string()), failed
            except pa.ArrowInvalid:  # invalid UTF-8 somewhere: find it
                texts: list[Any] = []
                for i, raw in enumerate(batch):
                    try:
                        texts.append(raw.decode("utf-8"))
                    except UnicodeDecodeError as exc:
                        failed[i] = f"invalid UTF-8 at byte {exc.start}"
                        texts.append(None)
                return pa.array(texts, pa.string()), failed
        values = self.get(batch)  # type: ignore[misc]
        for i, v in enumerate(values):
            if v.__class__ is not str:
                failed[i] = (f"field {self.field!r} is missing" if v is MISSING else
                             f"field {self.field!r} is {json_type(v, article=True)}, not text")
        if failed:
            values = [None if i in failed else v for i, v in enumerate(values)]
        return pa.array(values, pa.string()), failed

    def _parse(self, texts: Any, failed: dict[int, str]) -> tuple[dict[str, Any], np.ndarray]:
        """Each captured field's values (Arrow arrays, null where absent) and which
        records a pattern matched; the others are added to `failed`."""
        import pyarrow as pa
        import pyarrow.compute as pc
        n = len(texts)
        matched = np.zeros(n, dtype=bool)
        values: dict[str, Any] = {}
        for compiled in self.compiled:
            todo = np.flatnonzero(~matched & texts.is_valid().to_numpy(zero_copy_only=False))
            if not len(todo):
                break
            found = pc.extract_regex(texts.take(pa.array(todo)), pattern=compiled.regex)
            hit = found.is_valid().to_numpy(zero_copy_only=False)
            rows = todo[hit]
            matched[rows] = True
            found = found.filter(pa.array(hit))
            for group, field, conversion in compiled.captures:
                got = found.field(group)
                got = pc.if_else(pc.equal(got, ""), pa.scalar(None, pa.string()), got)
                if conversion == "append":  # dissect's %{+field}: after what it has
                    values[field] = _appended(values.get(field), self._place(None, got, rows, n))
                    continue
                if conversion is not None:
                    got = self._convert(got, field, conversion, rows, failed)
                values[field] = self._place(values.get(field), got, rows, n)
        for i in np.flatnonzero(~matched).tolist():
            failed.setdefault(i, "no pattern matched")
        for i in failed:
            matched[i] = False
        return values, matched

    @staticmethod
    def _convert(got: Any, field: str, to: str, rows: np.ndarray,
                 failed: dict[int, str]) -> Any:
        import pyarrow as pa
        target = pa.int64() if to == "int" else pa.float64()
        try:
            return got.cast(target)
        except (pa.ArrowInvalid, OverflowError):
            out = []
            for row, text in zip(rows.tolist(), got.to_pylist()):
                try:
                    out.append(None if text is None else (int(text) if to == "int"
                                                          else float(text)))
                    if to == "int" and not -2**63 <= out[-1] < 2**63:
                        raise ValueError
                except ValueError:
                    failed.setdefault(row, f"field {field!r}: cannot convert {text!r} to {to}")
                    out[-1:] = [None]
            return pa.array(out, target)

    @staticmethod
    def _place(old: Any, got: Any, rows: np.ndarray, n: int) -> Any:
        """A length-n array: `old` (or nulls) with `got`'s values at `rows`."""
        import pyarrow as pa
        where = np.full(n, -1, dtype=np.int64)
        where[rows] = np.arange(len(rows))
        placed = got.take(pa.array(where, mask=where < 0))
        if old is None:
            return placed
        if old.type != placed.type:  # a field captured as int by one pattern, text by another
            old, placed = old.cast(pa.string()), placed.cast(pa.string())
        return pa.compute.coalesce(placed, old)

    # -- what it passes on -----------------------------------------------------------------
    def _records_of_lines(self, batch: Batch, values: dict[str, Any], matched: np.ndarray,
                          failed: dict[int, str]) -> Any:
        kept = self.failed(batch, failed)
        rows = np.flatnonzero(matched)
        if kept:  # each kept line as {"message": ..., "_failures": [...]}, in line order
            records = as_records(self._columns(batch, values, rows))
            made = {i: line_record(batch[i]) for i in kept}
            every = sorted([*rows.tolist(), *made])
            by_row = dict(zip(rows.tolist(), records))
            out = Batch([by_row.get(i) or made[i] for i in every], source=batch.source,
                        origins=batch.line_origins(np.asarray(every, dtype=np.int64)))
            self.tag_rows(out, every, kept)
            return out
        return self._columns(batch, values, rows)

    def _columns(self, batch: Batch, values: dict[str, Any], rows: np.ndarray) -> Columns:
        import pyarrow as pa
        arrays = [values[f].take(pa.array(rows)) if f in values
                  else pa.nulls(len(rows), pa.string()) for f in self.fields]
        data = pa.RecordBatch.from_arrays(arrays, names=self.fields)
        return Columns(data, batch.line_origins(rows), batch.source)

    def _records_with_fields(self, batch: Any, values: dict[str, Any], matched: np.ndarray,
                             failed: dict[int, str]) -> Any:
        kept = self.failed(batch, failed)
        keep = matched.copy()
        keep[list(kept)] = True
        if batch.__class__ is Columns and not kept and all(
                f not in batch.names or (batch.data.column(f).type == a.type
                                         and not batch.is_json(f)) for f, a in values.items()):
            import pyarrow.compute as pc
            out = batch
            for f, array in values.items():  # a capture replaces the field, where it has one
                out = out.with_column(f, array if f not in batch.names else
                                      pc.coalesce(array, batch.data.column(f)))
            return out.filter(keep)
        records = as_records(batch)
        columns = {f: a.to_pylist() for f, a in values.items()}
        out = []
        for i in np.flatnonzero(keep).tolist():
            record = dict(records[i])
            for f, vals in columns.items():
                if vals[i] is not None:
                    record[f] = vals[i]
            out.append(record)
        result = records.take(np.flatnonzero(keep).tolist())
        result[:] = out
        self.tag_rows(result, np.flatnonzero(keep), kept)
        return result



def _appended(old: Any, new: Any) -> Any:
    """`old` and `new` joined by a space where both are there, else whichever is."""
    import pyarrow.compute as pc
    if old is None:
        return new
    return pc.coalesce(pc.binary_join_element_wise(old, new, " "), old, new)

Grok.__doc__ = (Grok.__doc__ or "") + "\n    Patterns: " + ", ".join(sorted(PATTERNS)) + ".\n"
