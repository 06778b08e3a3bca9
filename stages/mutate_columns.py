"""mutate's operations on a batch of columns (pipeline.columns), where they are column
operations: relabelling, dropping, a constant column, a cast that cannot fail, a field
taken out of or put into a struct column. The rest runs record by record (mutate.py)."""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import JSON_META, Columns, child, column_of, values_of

from .fields import MISSING

# conversions that cannot fail, as Arrow casts: (from type, to) -> Arrow type
CASTS = {(pa.int64(), "str"): pa.string(), (pa.int64(), "float"): pa.float64(),
         (pa.bool_(), "str"): pa.string(), (pa.bool_(), "int"): pa.int64(),
         (pa.bool_(), "float"): pa.float64()}
SAME = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
Column = tuple[pa.Array, bool]  # an Arrow column and whether it is a JSON column


class Frame:
    """The top-level fields of a batch of columns while mutate works on them, in order:
    each an Arrow column (array, is_json) or a list of Python values (MISSING where a
    record lacks it), which the record-by-record operations work on.

    A record's fields must come out in the order the record path gives them: a field a
    record gains goes after its others. Where one column order can no longer say that
    for every record, `exact` turns False and mutate works on the batch's records."""

    def __init__(self, batch: Columns):
        self.n = len(batch)
        self.cols: dict[str, Any] = {name: (batch.data.column(name), batch.is_json(name))
                                     for name in batch.names}
        self.exact = True  # one column order still gives every record its own order

    def gains(self, name: str, rows: bool) -> None:
        """Some `rows` gain field `name`, which the record path puts after their other
        fields: one column order fits them only if `name` is new or the last field."""
        if rows and name in self.cols and name != next(reversed(self.cols)):
            self.exact = False

    def has_absent(self, name: str) -> bool:
        col = self.cols.get(name)
        if col is None:
            return True
        return MISSING in col if isinstance(col, list) else col[0].null_count > 0

    def values(self, name: str) -> list[Any]:
        col = self.cols.get(name)
        if col is None:
            return [MISSING] * self.n
        if isinstance(col, list):
            return col
        values = self.cols[name] = values_of(col[0], col[1], MISSING)
        return values

    def put(self, name: str, values: list[Any]) -> None:
        """Set a field's values (a new field comes last); a field no record has goes."""
        if values.count(MISSING) == len(values):
            self.cols.pop(name, None)
        else:
            self.cols[name] = values

    def columns(self) -> list[tuple[str, Any, bool]] | None:
        """The fields as (name, array, is_json); None if a value cannot be a column."""
        out = []
        for name, col in self.cols.items():
            if isinstance(col, list):
                col = column_of(col, MISSING)
                if col is None:
                    return None
            out.append((name, col[0], col[1]))
        return out

    # -- column operations ----------------------------------------------------------------
    def native(self, what: str, paths: Any, arg: Any) -> bool:
        """Do an operation as a column operation, if it is one here (none of these can
        reject a record); whether it was done. Nothing is changed when it was not."""
        path = paths[0]
        if what == "remove":
            return self._remove(path)
        if what == "set":
            if len(path) > 1:
                return False
            column = column_of([arg] * self.n)
            if column is None:
                return False
            self.gains(path[0], self.has_absent(path[0]))
            self.cols[path[0]] = column
            return True
        if what == "convert":
            return self._convert(path, arg)
        return self._move(path, paths[1], what == "rename")

    def _at(self, path: tuple[str, ...]) -> Column | None | bool:
        """The column at a path: (array, json); None if no record has it; False if it
        cannot be said column-wise (a list, or a path through what is not a struct)."""
        col = self.cols.get(path[0])
        if col is None or isinstance(col, list):
            return None if col is None else False
        array, json = col
        for name in path[1:]:
            if not pa.types.is_struct(array.type):
                return False
            at = array.type.get_field_index(name)
            if at < 0:
                return None
            array, json = child(array, at)
        return array, json

    def _remove(self, path: tuple[str, ...]) -> bool:
        if len(path) == 1:
            self.cols.pop(path[0], None)
            return True
        found = self._at(path)
        return found is None or (found is not False and self._put(path, None))

    def _convert(self, path: tuple[str, ...], kind: str) -> bool:
        found = self._at(path)
        if found is None:
            return True
        if found is False or found[1]:
            return False
        array = found[0]
        if array.type != SAME[kind]:
            cast = CASTS.get((array.type, kind))
            if cast is None:
                return False
            array = pc.cast(array, cast, safe=False)
        return self._put(path, (array, False))

    def _put(self, path: tuple[str, ...], new: Column | None) -> bool:
        """Set the column at a path (into struct columns), or take it out (None);
        whether that could be done column-wise (not if it leaves an empty object)."""
        if len(path) == 1:
            if new is None:
                self.cols.pop(path[0], None)
            else:
                self.cols[path[0]] = new
            return True
        rebuilt = _rebuilt(self.cols[path[0]][0], path[1:], new)
        if rebuilt is None:
            return False
        self.cols[path[0]] = (rebuilt, False)
        return True

    def _move(self, src: tuple[str, ...], dst: tuple[str, ...], rename: bool) -> bool:
        """rename or copy into a top-level field: where the source has a value, the
        destination takes it; elsewhere the destination keeps its own."""
        if len(dst) > 1:
            return False
        found = self._at(src)
        if found is None:
            return True
        if found is False:
            return False
        if rename:
            if len(src) == 1:
                del self.cols[src[0]]
            elif not self._remove(src):
                return False
        name, old = dst[0], self.cols.get(dst[0])
        self.gains(name, old is not None and self.has_absent(name))
        if old is None:
            self.cols[name] = found
        elif not isinstance(old, list) and found[0].type == old[0].type and \
                found[1] == old[1]:
            self.cols[name] = (pc.coalesce(found[0], old[0]), found[1])
        else:
            new = values_of(found[0], found[1], MISSING)
            self.cols[name] = [s if s is not MISSING else d
                               for s, d in zip(new, self.values(name))]
        return True


def _rebuilt(array: pa.StructArray, path: tuple[str, ...],
             new: Column | None) -> pa.StructArray | None:
    """A struct column with the field at `path` (inside it) replaced by `new`, or taken
    out (None); None if that would leave an object without fields."""
    at = array.type.get_field_index(path[0])
    fields = list(array.type)
    children = [array.field(i) for i in range(len(fields))]
    if len(path) > 1:
        inner = _rebuilt(children[at], path[1:], new)
        if inner is None:
            return None
        children[at] = inner
        fields[at] = pa.field(fields[at].name, inner.type)
    elif new is None:
        del children[at], fields[at]
        if not fields:
            return None
    else:
        children[at] = new[0]
        fields[at] = pa.field(fields[at].name, new[0].type,
                              metadata=JSON_META if new[1] else None)
    mask = array.is_null() if array.null_count else None
    return pa.StructArray.from_arrays(children, fields=fields, mask=mask)
