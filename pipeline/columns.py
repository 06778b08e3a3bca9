"""Columns: a batch of object records held column by column, as an Apache Arrow record
batch, and where each record came from.

One column holds one top-level field of every record. Its Arrow type says how:

- `int64`, `double`, `string`, `bool`: every record that has the field has a JSON
  value of that one type there (an integer within 64 bits, a number, a string, a bool);
- `struct`: every record that has the field has an object there; its fields are
  columns by these same rules (`data.status` is a column inside `data`);
- a *JSON column* (`string`, with field metadata `{"sluice": "json"}`): each value's
  compact JSON text. A field holds one where its values are arrays, null, integers
  beyond 64 bits, objects no struct column fits, or of more than one JSON type: `123`
  and `"123"` in one column stay `123` and `"123"`.

In every column an Arrow null means that the record does not have the field (inside a
struct: that the object does not); a JSON null is the JSON text `null`. Records become
columns only where one order of the columns keeps every record's own order of fields
(and objects become a struct column only where it keeps every object's), so a batch
turned into columns and back gives every record its fields, in its order, and its
values, with their JSON types, exactly.

A stage that declares `columnar = True` takes Columns as well as a Batch of dicts, and
passes on what it is given; json-decode makes Columns only where every stage after it
takes them (pipeline.contracts.feeds_columns), and the engine turns Columns into
records at the boundary of a stage that does not (`Columns.records()`).
"""
from __future__ import annotations

import functools
import heapq
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, Iterator

import msgspec
import numpy as np

from pipeline.batch import Batch

if TYPE_CHECKING:
    import pyarrow as pa

JSON_META = {b"sluice": b"json"}
_ENCODER = msgspec.json.Encoder()
_encode = _ENCODER.encode
_decode = msgspec.json.Decoder().decode
MAX_COLUMNS = 256  # a batch whose records name more fields stays a batch of records
MAX_DEPTH = 8  # objects nested deeper are JSON text
_EMPTY: dict[str, Any] = {}


class Columns:
    """Object records as an Arrow record batch (`data`), with their origins (the
    (line numbers, byte offsets) arrays of `Batch.origins`) and source file."""

    __slots__ = ("data", "origins", "source")

    def __init__(self, data: pa.RecordBatch, origins: tuple[Any, Any] | None = None,
                 source: str | None = None):
        self.data = data
        self.origins = origins
        self.source = source

    def __len__(self) -> int:
        return self.data.num_rows

    def __repr__(self) -> str:
        return f"Columns({self.data.num_rows} records: {', '.join(self.names)})"

    @property
    def names(self) -> list[str]:
        return self.data.schema.names

    def is_json(self, name: str) -> bool:
        return is_json_field(self.data.schema.field(name))

    # -- from and to records ------------------------------------------------------------
    @classmethod
    def from_records(cls, records: list[Any], origins: tuple[Any, Any] | None = None,
                     source: str | None = None) -> "Columns | None":
        """The records (dicts) as columns; None if they cannot all be held exactly
        (a record that is not a dict, text UTF-8 cannot hold, more than MAX_COLUMNS
        fields), so that the caller passes them on as records."""
        import pyarrow as pa
        if set(map(type, records)) - {dict}:
            return None
        fields = _object_fields(records, 0)
        if fields is None:
            return None
        data = pa.RecordBatch.from_arrays([a for _, a in fields], schema=pa.schema(
            [f for f, _ in fields])) if fields else _empty_objects(len(records))
        return cls(data, origins, source)

    def find(self, path: tuple[str, ...]) -> tuple[pa.Array, bool, tuple[str, ...]] | None:
        """The column a field's path names, into struct columns: (the array, with a
        null where a record lacks the field; whether it is a JSON column; what is left
        of the path, which reaches into JSON values or into what is not an object), or
        None where no record has the field."""
        import pyarrow as pa
        if path[0] not in self.names:
            return None
        array, json = self.data.column(path[0]), self.is_json(path[0])
        for i, name in enumerate(path[1:], 1):
            if not pa.types.is_struct(array.type):
                return array, json, path[i:]
            at = array.type.get_field_index(name)
            if at < 0:
                return None
            array, json = child(array, at)
        return array, json, ()

    def values(self, name: str, absent: Any) -> list[Any]:
        """Every record's value of field `name` as a Python value, `absent` for a record
        without it."""
        return values_of(self.data.column(name), self.is_json(name), absent)

    def records(self) -> Batch:
        """The records as dicts (a Batch, with the origins)."""
        rows = _dicts(self.names, [self.values(name, _ABSENT) for name in self.names],
                      len(self), _ABSENT, any(c.null_count for c in self.data.columns))
        return Batch(rows, source=self.source, origins=self.origins)

    def record(self, i: int) -> dict[str, Any]:
        """Record i as a dict (for a reject: one record, not the batch)."""
        one = Columns(self.data.slice(i, 1))
        return one.records()[0]

    # -- selecting ----------------------------------------------------------------------
    def locate(self, i: int) -> tuple[int | None, int | None]:
        """(line number, byte offset) of record i; (None, None) if not known."""
        if self.origins is None:
            return None, None
        return int(self.origins[0][i]), int(self.origins[1][i])

    def take(self, indices: Any) -> "Columns":
        """The records `indices` (in that order), with their origins."""
        import pyarrow as pa
        idx = np.asarray(indices, dtype=np.int64)
        origins = None if self.origins is None else (self.origins[0][idx], self.origins[1][idx])
        return Columns(self.data.take(pa.array(idx)), origins, self.source)

    def filter(self, keep: Any) -> "Columns":
        """The records where the boolean mask `keep` (numpy or Arrow) is true."""
        mask = np.asarray(keep, dtype=bool)
        if mask.all():
            return self
        return self.take(np.flatnonzero(mask))

    def with_columns(self, columns: list[tuple[str, pa.Array, bool]]) -> "Columns":
        """The same records (and origins) with these columns: (name, array, is_json)."""
        import pyarrow as pa
        n = len(self)
        if not columns:
            return Columns(_empty_objects(n), self.origins, self.source)
        schema = pa.schema([pa.field(name, array.type, metadata=JSON_META if json else None)
                            for name, array, json in columns])
        data = pa.RecordBatch.from_arrays([a for _, a, _ in columns], schema=schema)
        return Columns(data, self.origins, self.source)

    def with_column(self, name: str, array: pa.Array, json: bool = False) -> "Columns":
        """The same records with field `name` set to `array` (null: the record does not
        have it); a new field comes last, a field already there keeps its place (so a
        record that did not have it gets it there, not after its other fields). Its
        type must be one of the column types above (int64, not int32)."""
        columns = [(n, self.data.column(n), self.is_json(n)) for n in self.names if n != name]
        at = self.names.index(name) if name in self.names else len(columns)
        columns.insert(at, (name, array, json))
        return self.with_columns(columns)

    # -- writing ------------------------------------------------------------------------
    def json_lines(self) -> bytes:
        """One JSON object per record, each ending in '\\n': the same text as encoding
        each of `records()` (msgspec encodes a row object per record, made from the
        columns; a JSON column's text goes in as it is)."""
        return _ENCODER.encode_lines(_rows(self.names, [
            _row_values(self.data.column(name), self.is_json(name)) for name in self.names],
            len(self)))


def is_json_field(field: pa.Field) -> bool:
    return bool(field.metadata) and field.metadata.get(b"sluice") == b"json"


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def child(array: pa.StructArray, at: int) -> tuple[pa.Array, bool]:
    """Field `at` of a struct column, null where the object is absent; is it JSON."""
    import pyarrow.compute as pc
    return pc.struct_field(array, [at]), is_json_field(array.type.field(at))


def values_of(array: pa.Array, json: bool, absent: Any) -> list[Any]:
    """A column's values as Python values, `absent` where a record lacks the field."""
    import pyarrow as pa
    if json:
        texts = array.to_pylist()
        if not array.null_count:
            return list(map(_decode, texts))
        return [absent if t is None else _decode(t) for t in texts]
    if pa.types.is_struct(array.type):
        children = array.flatten()  # null where the object, or its field, is absent
        objects = _dicts([f.name for f in array.type], [
            values_of(c, is_json_field(f), absent) for c, f in zip(children, array.type)],
            len(array), absent, any(c.null_count for c in children))
        if array.null_count:
            valid = array.is_valid().to_pylist()
            objects = [o if ok else absent for o, ok in zip(objects, valid)]
        return objects
    values = array.to_pylist()
    if array.null_count:
        values = [absent if v is None else v for v in values]
    return values


def _dicts(names: list[str], columns: list[list[Any]], n: int, absent: Any,
           sparse: bool) -> list[Any]:
    """A dict per record of the fields' values (`absent`: the record lacks it; only
    where `sparse`)."""
    if not names:
        return [{} for _ in range(n)]
    if not sparse:
        return [dict(zip(names, row)) for row in zip(*columns)]
    return [{k: v for k, v in zip(names, row) if v is not absent} for row in zip(*columns)]


def column_of(values: list[Any], absent: Any = _ABSENT,
              depth: int = 0) -> tuple[pa.Array, bool] | None:
    """One field of a batch's records (`absent` where a record lacks it) as (an Arrow
    array, whether it is a JSON column); None if a value cannot be held exactly."""
    import pyarrow as pa
    if values and values[0].__class__ is str:  # the common case, without a type scan:
        try:                                   # Arrow takes only str (and bytes, which
            array = pa.array(values, pa.string())  # no JSON value is), and None: null
            if not array.null_count:
                return array, False
        except (pa.ArrowException, TypeError):
            pass
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it
            return None
    kinds = set(map(type, values))
    missing = type(absent) in kinds
    kinds.discard(type(absent))
    if kinds == {dict} and depth < MAX_DEPTH:
        rows = [_EMPTY if v is absent else v for v in values] if missing else values
        fields = _object_fields(rows, depth + 1)
        if fields:
            mask = pa.array([v is absent for v in values]) if missing else None
            return pa.StructArray.from_arrays([a for _, a in fields], fields=[
                f for f, _ in fields], mask=mask), False
    elif len(kinds) == 1:
        kind = next(iter(kinds))
        arrow = {int: pa.int64, float: pa.float64, str: pa.string, bool: pa.bool_}.get(kind)
        if arrow is not None:
            vals = values if not missing else [None if v is absent else v for v in values]
            try:
                return pa.array(vals, arrow()), False
            except (OverflowError, pa.ArrowException):
                pass  # an integer beyond 64 bits: a JSON column
            except UnicodeEncodeError:
                return None
    try:
        if not missing:
            texts: list[Any] = list(map(_encode, values))
        else:
            texts = [None if v is absent else _encode(v) for v in values]
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError):
        return None
    return pa.array(texts, pa.binary()).cast(pa.string()), True


def _row_values(array: pa.Array, json: bool) -> list[Any]:
    """A column's values as msgspec encodes them to the same JSON text: UNSET where the
    record lacks the field, the JSON text (msgspec.Raw) of a JSON column's values, a
    row object for each object of a struct column."""
    import pyarrow as pa
    if json:
        texts = array.cast(pa.binary()).to_pylist()
        if array.null_count:
            return [msgspec.UNSET if t is None else msgspec.Raw(t) for t in texts]
        return list(map(msgspec.Raw, texts))
    if pa.types.is_struct(array.type):
        rows = _rows([f.name for f in array.type], [
            _row_values(c, is_json_field(f)) for c, f in zip(array.flatten(), array.type)],
            len(array))
        if array.null_count:
            valid = array.is_valid().to_pylist()
            rows = [row if ok else msgspec.UNSET for row, ok in zip(rows, valid)]
        return rows
    values = array.to_pylist()
    if array.null_count:
        return [msgspec.UNSET if v is None else v for v in values]
    return values


_ROW_TYPES: dict[tuple[str, ...], Any] = {}


def _rows(names: list[str], columns: list[list[Any]], n: int) -> list[Any]:
    """A row object per record: a msgspec Struct whose fields encode under `names`, in
    that order, and are left out where UNSET."""
    key = tuple(names)
    cls = _ROW_TYPES.get(key)
    if cls is None:
        if len(_ROW_TYPES) > 1024:
            _ROW_TYPES.clear()
        try:
            cls = msgspec.defstruct(
                "Row", [(f"f{i}", object, msgspec.UNSET) for i in range(len(names))],
                rename={f"f{i}": name for i, name in enumerate(names)}, omit_defaults=True)
        except ValueError:  # a name with `\`, `"` or a control character: no Struct
            cls = functools.partial(_dict_row, names)  # takes it; a dict does (slower)
        _ROW_TYPES[key] = cls
    return list(map(cls, *columns)) if columns else [cls() for _ in range(n)]


def _dict_row(names: list[str], *values: Any) -> dict[str, Any]:
    return {k: v for k, v in zip(names, values) if v is not msgspec.UNSET}


def _object_fields(objects: list[dict[str, Any]],
                   depth: int) -> list[tuple[pa.Field, pa.Array]] | None:
    """The fields of a list of dicts as (Arrow field, column) pairs, in one order that
    every dict's own order of fields keeps (field_order); None if there is none such,
    if they name more than MAX_COLUMNS fields, or if a value cannot be held exactly."""
    import pyarrow as pa
    names = field_order(objects)
    if names is None:
        return None
    out = []
    for name in names:
        column = column_of(list(map(dict.get, objects, repeat(name), repeat(_ABSENT))),
                           _ABSENT, depth)
        if column is None:
            return None
        out.append((pa.field(name, column[0].type, metadata=JSON_META if column[1]
                             else None), column[0]))
    return out


def field_order(objects: list[dict[str, Any]]) -> list[str] | None:
    """One order of the dicts' fields that every dict's own order keeps (so that one
    column order gives each its own order back): where several fit, the earliest named
    first. None if none fits (say {"a","b"} and {"b","a"}) or beyond MAX_COLUMNS."""
    orders = dict.fromkeys(map(tuple, objects))  # each distinct order, first seen first
    if len(orders) == 1:
        names = list(next(iter(orders)))
        return names if len(names) <= MAX_COLUMNS else None
    rank = {name: i for i, name in enumerate(dict.fromkeys(chain.from_iterable(orders)))}
    if len(rank) > MAX_COLUMNS:
        return None
    after: dict[str, set[str]] = {name: set() for name in rank}
    for order in orders:
        for a, b in zip(order, order[1:]):
            after[a].add(b)
    waiting = dict.fromkeys(rank, 0)
    for following in after.values():
        for b in following:
            waiting[b] += 1
    ready = [(rank[name], name) for name, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    names = []
    while ready:  # Kahn's topological sort, the earliest named of those free first
        _, name = heapq.heappop(ready)
        names.append(name)
        for b in after[name]:
            waiting[b] -= 1
            if waiting[b] == 0:
                heapq.heappush(ready, (rank[b], b))
    return names if len(names) == len(rank) else None


def _empty_objects(n: int) -> pa.RecordBatch:
    """n records without fields ({}): a record batch of no columns and n rows."""
    import pyarrow as pa
    return pa.RecordBatch.from_struct_array(pa.array([{}] * n, pa.struct([])))


def as_records(batches: Iterator[Any]) -> Iterator[Any]:
    """Batches for a stage that works on records: Columns become a Batch of dicts."""
    for batch in batches:
        yield batch.records() if isinstance(batch, Columns) else batch
