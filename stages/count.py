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

COUNT_ROW = np.dtype([("w0", "<u8"), ("w1", "<u8"), ("n", "<u8"), ("tag", "u1")])
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


class Count(KeyedReducer):
    """Count records per value of a field; emit (value, count) sorted by value.

        - count:
            field: type

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
               Option("missing", str, "(missing)", "the value counted for records without it"))
    spills = {"counts": COUNT_ROW, "longs": None}

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        return (options.get("field", "value"), "count")
    reduce_row_bytes = 160

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return (options["field"],)

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        missing = missing_fields(list(cls.reads(options)), given)
        return f"field {missing}" if missing else None

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.values = column(self.field)

    def update(self, batch: Batch | Columns) -> None:
        values = self.values(batch)
        if set(map(type, values)) == {str}:  # the usual case: strings count as themselves
            counts: dict[str | None, int] = Counter(values)
        else:
            counts = {}
            missing = self.missing
            for value in values:
                key = missing if value is MISSING else count_key(value)
                counts[key] = counts.get(key, 0) + 1
        if not counts:
            return
        values = list(counts)
        words, tags, longs = keys.encode(["" if v is None else v for v in values])
        tags[[i for i, v in enumerate(values) if v is None]] = NULL
        rows = np.empty(len(counts), COUNT_ROW)
        rows["w0"], rows["w1"], rows["tag"] = words[:, 0], words[:, 1], tags
        rows["n"] = list(counts.values())
        buckets = keys.bucket_of(keys.mix(words[:, 0], words[:, 1], tags), self.nbuckets)
        self._writer().add("counts", buckets, rows)
        self.keep_longs("longs", words, tags, longs, buckets)

    def reduce(self, phase: int, bucket: int, io: ReduceIO) -> Iterable[tuple[Any, Any]]:
        rows = io.read("counts", bucket)
        if not len(rows):
            return []
        strings = io.strings("longs", bucket)
        w0, w1, tag = rows["w0"], rows["w1"], rows["tag"]
        gid, ngroups, firsts = keys.groups(keys.mix(w0, w1, tag), w0, w1, tag)
        totals = np.zeros(ngroups, np.uint64)
        np.add.at(totals, gid, rows["n"])
        out = [(None if tag[i] == NULL else keys.decode(w0[i], w1[i], tag[i], strings), int(n))
               for i, n in zip(firsts.tolist(), totals.tolist())]
        out.sort(key=lambda pair: (pair[0] is not None, pair[0] or ""))
        return [((value is not None, value or ""), (value, n)) for value, n in out]
