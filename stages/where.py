"""where: keep or drop records by a field's value."""
from __future__ import annotations

from typing import Any, Iterator

import msgspec
import numpy as np

from pipeline import SAME, Batch, Option, Processor
from pipeline.columns import Columns
from pipeline.contracts import missing_fields

from .fields import MISSING, get_in, getter, normalize, path_of


def hit(value: Any, wanted: set[Any]) -> bool:
    """Whether a field's value (MISSING if absent) is one of the `wanted` (normalized)
    values; an object or array is none of them."""
    return value is not MISSING and not isinstance(value, (dict, list)) and \
        normalize(value) in wanted


class Where(Processor):
    """Keep the records whose field equals a value or is one of several values.

        - where:
            field: site_id
            in: ["123", "124"]

    Use `equals: VALUE` for one value, `drop: true` to drop the matches instead.
    Integers compare as their decimal strings, so site_id 123 matches "123". A record
    without the field never matches.

    On columns, the test runs once per distinct value of the field in a batch, and an
    Arrow lookup keeps the records whose value passed.
    """

    name = "where"
    order_free = True
    accepts = ("object", "site-event")
    produces = SAME
    columnar = True
    options = (
        Option("field", str, doc="field to test, by its JSON name"),
        Option("equals", (str, int, float, bool), None, "keep records whose field equals this"),
        Option("in", list, None, "keep records whose field is one of these"),
        Option("drop", bool, False, "drop the matching records instead of keeping them"),
    )

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return (options["field"],)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        if ("equals" in options) == ("in" in options):
            return "stage 'where': give exactly one of `equals` or `in`"
        for value in options.get("in") or []:
            if not isinstance(value, (str, int, float, bool)):
                return (f"stage 'where': `in` must list strings, numbers or booleans; got "
                        f"{type(value).__name__} {value!r}")
        return None

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        missing = missing_fields([options["field"]], given)
        return f"field {missing}" if missing else None

    def __init__(self, **options: Any):
        super().__init__(**options)
        values = getattr(self, "in")  # `in` is a keyword, so no plain attribute access
        wanted = [self.equals] if values is None else values
        self.wanted = {normalize(v) for v in wanted}
        self.get = getter(self.field)
        self.kept = self.dropped = 0

    def snapshot(self) -> dict[str, int]:
        return {"kept": self.kept, "dropped": self.dropped}

    def restore(self, state: dict[str, int]) -> None:
        self.kept, self.dropped = state["kept"], state["dropped"]

    def process(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        get, wanted, drop = self.get, self.wanted, self.drop
        for batch in batches:
            if isinstance(batch, Columns):
                out = batch.filter(self._matches(batch) != drop)
            else:
                out = batch.take(i for i, r in enumerate(batch) if hit(get(r), wanted) != drop)
            self.kept += len(out)
            self.dropped += len(batch) - len(out)
            yield out

    def _matches(self, batch: Columns) -> np.ndarray:
        """Which records of a batch of columns match (a record without the field does
        not): each distinct value of the field's column is tested as a record's is."""
        import pyarrow as pa  # here: a run without columns does not load Arrow
        import pyarrow.compute as pc
        found = batch.find(path_of(self.field))
        if found is None or pa.types.is_struct(found[0].type):  # absent, or objects
            return np.zeros(len(batch), dtype=bool)
        column, json, rest = found
        distinct = column.unique().drop_null()
        values = distinct.to_pylist()
        if json:
            values = list(map(msgspec.json.decode, values))
        if rest:
            values = [get_in(v, rest) for v in values]
        wanted = self.wanted
        passed = [hit(v, wanted) for v in values]
        mask = pc.is_in(column, value_set=distinct.filter(passed))
        return np.asarray(mask.fill_null(False), dtype=bool)
