"""date: read an event time from a field, in one of several formats, a column at a time."""
from __future__ import annotations

import re
from typing import Any, Iterator

import numpy as np

from pipeline import Option, Processor
from pipeline.columns import Columns

from .failures import ON_FAILURE, OnFailure, as_records
from .fields import MISSING, column, path_of, set_in, show

NAMED = ("ISO8601", "epoch", "epoch_ms")
OUTPUTS = ("epoch", "iso")
_OFFSET = r"[T ][0-9:.,]+(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)$"
_DIRECTIVE = re.compile(r"%[aAbBdHIjmMpSyYzZ%]")


def _check_formats(formats: Any) -> str | None:
    if not isinstance(formats, list) or not formats:
        return f"must be a non-empty list of formats; got {formats!r}"
    for f in formats:
        if not isinstance(f, str) or not f:
            return f"a format is ISO8601, epoch, epoch_ms or a strftime pattern; got {f!r}"
        if f not in NAMED and not _DIRECTIVE.search(f):
            return (f"{f!r} is not ISO8601, epoch or epoch_ms, and has no strftime "
                    f"directive (%Y, %d, %H, ...)")
    return None


def _check_timezone(name: Any) -> str | None:
    import zoneinfo
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return f"unknown time zone {name!r} (an IANA name: UTC, Europe/Berlin, ...)"
    return None


class Date(OnFailure, Processor):
    """Read a field's event time, trying each format in order; write it as epoch seconds
    (a float) or as ISO 8601 text in UTC.

        - date:
            field: timestamp
            formats: ["%d/%b/%Y:%H:%M:%S %z", ISO8601, epoch]
            timezone: Europe/Berlin      # for times that carry no offset (default UTC)
            target: ts                   # default: the field itself
            as: epoch                    # or iso

    Formats: `ISO8601` (`2026-10-10T13:55:36Z`, `+02:00`, fractions, a date alone, a
    space for the T), `epoch` (seconds, an int, float or numeric text), `epoch_ms`
    (milliseconds), or a strftime pattern (`%d/%b/%Y:%H:%M:%S %z` reads nginx's time;
    `%z` an offset). A time without an offset is local time in `timezone`: at the
    autumn change an hour happens twice and the earlier is taken; a time in the spring
    gap does not exist and fails. A value no format reads fails, naming the field and
    value (`field 'timestamp': no format reads '10/Oct'`), and on_failure says what
    happens to its record. Parsing runs a column at a time (Arrow's strptime, casts
    and time zones).
    """

    name = "date"
    order_free = True
    accepts = ("object",)
    produces = "object"
    columnar = True
    loads = ("pyarrow",)
    options = (
        Option("field", str, doc="the field holding the time"),
        Option("formats", list, ["ISO8601"], "formats tried in order: ISO8601, epoch, "
               "epoch_ms or strftime patterns", check=_check_formats),
        Option("timezone", str, "UTC", "the zone of times without an offset (IANA name)",
               check=_check_timezone),
        Option("target", str, None, "where to write the time (default: the field)"),
        Option("as", str, "epoch", "epoch: seconds since 1970 (a float); iso: ISO 8601 "
               "text in UTC", choices=OUTPUTS),
        ON_FAILURE,
    )

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        target = options.get("target") or options.get("field")
        fields = super().output_fields(options, given)
        if fields is not None and target not in fields:
            fields = (*fields, target)
        return fields

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.get = column(self.field)
        self.path = path_of(self.target or self.field)

    def process(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            if not len(batch):
                yield batch
                continue
            micros, failed = self.parse(self.get(batch))
            kept = self.failed(batch, failed)
            keep = np.ones(len(batch), dtype=bool)
            keep[list(failed)] = False
            keep[list(kept)] = True
            out = self._write(batch, micros, keep, set(failed), bool(kept))
            self.tag_rows(out, np.flatnonzero(keep), kept)
            yield out

    # -- parsing ----------------------------------------------------------------------------
    def parse(self, values: list[Any]) -> tuple[np.ndarray, dict[int, str]]:
        """Each value's time as microseconds since 1970 UTC (int64), and the values no
        format reads (with the reason)."""
        n = len(values)
        micros = np.zeros(n, dtype=np.int64)
        todo = np.array([v is not MISSING and v is not None for v in values], dtype=bool)
        failed: dict[int, str] = {}
        for i in np.flatnonzero(~todo).tolist():
            failed[i] = (f"field {self.field!r} is missing" if values[i] is MISSING else
                         f"field {self.field!r} is null")
        gaps: dict[int, str] = {}
        for fmt in self.formats:
            rows = np.flatnonzero(todo)
            if not len(rows):
                break
            got, ok = self._read(fmt, [values[i] for i in rows.tolist()], rows, gaps)
            micros[rows[ok]] = got[ok]
            todo[rows[ok]] = False
        for i in np.flatnonzero(todo).tolist():
            failed[i] = gaps.get(i) or f"field {self.field!r}: no format reads {show(values[i])}"
        return micros, failed

    def _read(self, fmt: str, values: list[Any], rows: np.ndarray,
              gaps: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
        """(microseconds, whether read) of values by one format."""
        import pyarrow as pa
        import pyarrow.compute as pc
        n = len(values)
        if fmt in ("epoch", "epoch_ms"):
            scale = 1_000_000 if fmt == "epoch" else 1_000
            got, ok = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
            for j, v in enumerate(values):
                number = _number(v)
                if number is not None and abs(number) < 9e12 * (1 if fmt == "epoch" else 1000):
                    got[j], ok[j] = round(number * scale), True
            return got, ok
        texts = pa.array([v if v.__class__ is str else None for v in values], pa.string())
        if fmt == "ISO8601":
            texts = pc.replace_substring_regex(texts, r"^([0-9-]+) ", r"\1T", max_replacements=1)
            aware = pc.match_substring_regex(texts, _OFFSET).fill_null(False)
            utc = _cast(pc.if_else(aware, texts, None), pa.timestamp("us", tz="UTC"))
            naive = _cast(pc.if_else(aware, None, texts), pa.timestamp("us"))
        else:
            parsed = pc.strptime(texts, format=fmt, unit="us", error_is_null=True)
            # with %z Arrow gives UTC times; without, local ones
            utc, naive = (parsed, None) if parsed.type.tz is not None else (None, parsed)
        got = np.zeros(n, dtype=np.int64)
        ok = np.zeros(n, dtype=bool)
        if utc is not None:
            valid = utc.is_valid().to_numpy(zero_copy_only=False)
            got[valid] = utc.cast(pa.int64()).to_numpy(zero_copy_only=False)[valid]
            ok |= valid
        if naive is not None:
            local = self._localized(naive, rows, gaps)
            valid = local.is_valid().to_numpy(zero_copy_only=False) & ~ok
            got[valid] = local.cast(pa.int64()).to_numpy(zero_copy_only=False)[valid]
            ok |= valid
        return got, ok

    def _localized(self, naive: Any, rows: np.ndarray, gaps: dict[int, str]) -> Any:
        """Naive local times in `timezone` as UTC; a time in a gap (spring forward) is
        null, with its reason in `gaps`."""
        import pyarrow as pa
        import pyarrow.compute as pc
        if self.timezone == "UTC":
            return pc.assume_timezone(naive, "UTC")
        utc = pc.assume_timezone(naive, self.timezone, ambiguous="earliest",
                                 nonexistent="earliest")
        back = pc.local_timestamp(utc)
        gap = pc.not_equal(back.cast(pa.int64()), naive.cast(pa.int64())).fill_null(False)
        for j in np.flatnonzero(gap.to_numpy(zero_copy_only=False)).tolist():
            gaps[int(rows[j])] = (f"field {self.field!r}: {naive[j].as_py().isoformat()} does "
                                  f"not exist in {self.timezone} (the clocks skipped it)")
        return pc.if_else(gap, None, utc)

    # -- writing ----------------------------------------------------------------------------
    def _write(self, batch: Any, micros: np.ndarray, keep: np.ndarray, failed: set[int],
               tagged: bool) -> Any:
        """The records kept, each read time written to the target (a failed one, kept,
        is left as it was)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        if getattr(self, "as") == "epoch":
            array = pa.array(micros / 1_000_000)
        else:
            text = pc.strftime(pa.array(micros, pa.timestamp("us", tz="UTC")),
                               "%Y-%m-%dT%H:%M:%SZ")  # seconds with 6 decimals: trimmed
            text = pc.replace_substring_regex(text, r"\.0+Z$", "Z")
            array = pc.replace_substring_regex(text, r"(\.[0-9]*[1-9])0+Z$", r"\1Z")
        if batch.__class__ is Columns and len(self.path) == 1 and not tagged:
            return batch.with_column(self.path[0], array).filter(keep)
        records = as_records(batch)
        rows = np.flatnonzero(keep).tolist()
        out = records.take(rows)
        values = array.to_pylist()
        for k, i in enumerate(rows):
            if i in failed:
                continue
            record = dict(out[k])
            set_in(record, self.path, values[i])
            out[k] = record
        return out


def _number(v: Any) -> float | None:
    if v.__class__ in (int, float):
        return v
    if v.__class__ is str:
        try:
            return float(v) if re.fullmatch(r"[+-]?[0-9]+(\.[0-9]*)?", v.strip()) else None
        except ValueError:
            return None
    return None


def _cast(texts: Any, to: Any) -> Any:
    """texts cast to `to`, null where one does not parse (Arrow's cast fails whole)."""
    import pyarrow as pa
    try:
        return texts.cast(to)
    except pa.ArrowInvalid:
        out = []
        for t in texts.to_pylist():
            try:
                out.append(None if t is None else pa.scalar(t).cast(to).as_py())
            except pa.ArrowInvalid:
                out.append(None)
        return pa.array(out, to)
