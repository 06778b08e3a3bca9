"""count: how many records have each value of a field, at any number of values."""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

import msgspec
import numpy as np

from pipeline import Batch, Option, keys
from pipeline.columns import Columns
from pipeline.contracts import missing_fields
from pipeline.keyed import KeyedReducer, ReduceIO

from .fields import MISSING, column
from .windows import CLOSED, WINDOW, WINDOW_FIELDS, Windowed, names_problem, window_of, with_closed

# a value (keys.encode's words and tag), its count, and its window's start (0 without one)
COUNT_ROW = np.dtype([("w0", "<u8"), ("w1", "<u8"), ("n", "<u8"), ("tag", "u1"),
                      ("win", "<f8")])
NULL = 3  # the tag of a null value (keys.encode's tags are 0-2)
_json = msgspec.json.Encoder(order="sorted").encode


def count_key(value: Any) -> str | None:
    """What a value counts as: a string as itself, an integer as its decimal string,
    null as null, anything else as its JSON text (`true`, `1.5`, `[1,2]`)."""
    if value.__class__ is str:
        return value
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _json(value).decode()


class Count(Windowed, KeyedReducer):
    """Count records per value of a field; emit (value, count) sorted by value.

        - count:
            field: type

    With `window` (see below), per event-time window and value: emits (window_start,
    window_end, value, count), sorted by window, then value.

    Records without the field count under `missing` (option, default "(missing)").
    Values compare as strings: an integer as its decimal string, true/false, a float,
    an array or an object as its JSON text; null stays null (and sorts first). Each
    batch's counts are spilled by value, so memory does not grow with the number of
    distinct values.
    """

    name = "count"
    order_free = True
    columnar = True  # the field is read a column at a time from either
    accepts = ("object", "site-event")
    produces = "count-row"
    options = (Option("field", str, doc="field to group by, by its JSON name"),
               Option("missing", str, "(missing)", "the value counted for records without it"),
               WINDOW)
    spills = {"counts": COUNT_ROW, "longs": None, CLOSED: None}
    reduce_row_bytes = 160

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        if options.get("window") is not None:
            return names_problem("count", [options.get("field", "value")])
        return None

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        window = WINDOW_FIELDS if options.get("window") is not None else ()
        return (*window, options.get("field", "value"), "count")

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...]:
        window = window_of(options)
        return (options["field"],) + ((window.field,) if window is not None else ())

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        missing = missing_fields(list(cls.reads(options)), given)
        return f"field {missing}" if missing else None

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.values = column(self.field)
        self._init_window()

    def update(self, batch: Batch | Columns) -> None:
        values = self.values(batch)
        if self.win is None:
            self._count(values, None)
            return

        def take(target: "Count", at: Any, starts: Any) -> None:
            target._count([values[j] for j in at.tolist()], starts)
        self._windowed(batch, set(), take)

    def _count(self, values: list[Any], wins: np.ndarray | None) -> None:
        """Count values (each in its window's start, `wins`, in a batch run's window)."""
        if set(map(type, values)) != {str}:  # else strings count as themselves
            missing = self.missing
            values = [missing if value is MISSING else count_key(value) for value in values]
        if wins is None:
            counts: dict[Any, int] = Counter(values)
            values = list(counts)
            starts = np.zeros(len(values))
        else:
            counts = Counter(zip(wins.tolist(), values))
            starts = np.array([w for w, _ in counts], np.float64)
            values = [v for _, v in counts]
        if not counts:
            return
        words, tags, longs = keys.encode(["" if v is None else v for v in values])
        tags[[i for i, v in enumerate(values) if v is None]] = NULL
        rows = np.empty(len(counts), COUNT_ROW)
        rows["w0"], rows["w1"], rows["tag"] = words[:, 0], words[:, 1], tags
        rows["n"] = list(counts.values())
        rows["win"] = starts
        buckets = keys.bucket_of(keys.mix(words[:, 0], words[:, 1], tags,
                                          starts.view(np.uint64)), self.nbuckets)
        self._writer().add("counts", buckets, rows)
        self.keep_longs("longs", words, tags, longs, buckets)

    def reduce(self, phase: int, bucket: int, io: ReduceIO) -> Iterable[tuple[Any, Any]]:
        return with_closed(self._counted(bucket, io), io, bucket)

    def _counted(self, bucket: int, io: ReduceIO) -> list[tuple[Any, Any]]:
        rows = io.read("counts", bucket)
        if not len(rows):
            return []
        strings = io.strings("longs", bucket)
        w0, w1, tag = rows["w0"], rows["w1"], rows["tag"]
        win = np.ascontiguousarray(rows["win"]).view(np.uint64)
        gid, ngroups, firsts = keys.groups(keys.mix(w0, w1, tag, win), w0, w1, tag, win)
        totals = np.zeros(ngroups, np.uint64)
        np.add.at(totals, gid, rows["n"])
        firsts_l = firsts.tolist()
        values = [None if tag[i] == NULL else keys.decode(w0[i], w1[i], tag[i], strings)
                  for i in firsts_l]
        if self.win is None:
            out = [((value is not None, value or ""), (value, int(n)))
                   for value, n in zip(values, totals.tolist())]
        else:
            end = self.win.end
            out = [((start, value is not None, value or ""), (start, end(start), value, int(n)))
                   for start, value, n in zip(self.win.bounds(rows["win"][firsts]),
                                              values, totals.tolist())]
        out.sort(key=lambda pair: pair[0])
        return out

    def closed_pair(self, start: Any, end: Any, key: Any, record: Any) -> tuple[Any, Any]:
        return (start, *key), (start, end, *record)

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), **self.window_state()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.restore_windows(state)
