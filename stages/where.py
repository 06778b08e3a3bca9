"""where: keep or drop records by a field's value, or by a condition (an expression)."""
from __future__ import annotations

from typing import Any, Iterator

import msgspec
import numpy as np

from pipeline import SAME, Batch, Option, Processor
from pipeline.columns import Columns
from pipeline.contracts import missing_fields

from .expression import LOADS, ExpressionError, holds, parse, problem
from .failures import ON_FAILURE, OnFailure, as_records
from .fields import MISSING, get_in, getter, normalize, path_of


def hit(value: Any, wanted: set[Any]) -> bool:
    """Whether a field's value (MISSING if absent) is one of the `wanted` (normalized)
    values; an object or array is none of them."""
    return value is not MISSING and not isinstance(value, (dict, list)) and \
        normalize(value) in wanted


def _condition(text: Any) -> str | None:
    try:
        parse(text)
    except ExpressionError as exc:
        return problem(exc, text)
    return None


class Where(OnFailure, Processor):
    """Keep the records whose field equals a value or is one of several values, or for
    which a condition holds.

        - where:
            field: site_id
            in: ["123", "124"]

        - where:
            if: "status >= 500 AND starts_with(path, '/api')"

    Use `equals: VALUE` for one value, `drop: true` to drop the matches instead.
    Integers compare as their decimal strings, so site_id 123 matches "123". A record
    without the field never matches.

    `if` takes an SQL expression (see stages/expression.py and the README's
    "Expressions"): a record is kept where it is true, dropped where it is false or
    NULL (`drop: true`: the other way round); a record it cannot be computed for goes
    to the dead-letter file with the reason (`on_failure: keep` passes it on with a
    `_failures` field instead, `drop` drops it: see stages/failures.py).

    On columns, the test runs once per distinct value of the field in a batch, and an
    Arrow lookup keeps the records whose value passed.
    """

    name = "where"
    order_free = True
    accepts = ("object", "site-event")
    produces = SAME
    columnar = True
    options = (
        Option("field", str, None, "field to test, by its JSON name (with equals or in)"),
        Option("equals", (str, int, float, bool), None, "keep records whose field equals this"),
        Option("in", list, None, "keep records whose field is one of these"),
        Option("if", str, None, "keep records for which this SQL condition is true",
               check=_condition),
        Option("drop", bool, False, "drop the matching records instead of keeping them"),
        ON_FAILURE,
    )

    @classmethod
    def loads_with(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return LOADS if options.get("if") is not None else cls.loads

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...]:
        if options.get("if") is not None:
            return parse(options["if"]).fields
        return (options["field"],)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        given = [k for k in ("equals", "in", "if") if k in options]
        if len(given) != 1:
            return "stage 'where': give exactly one of `equals`, `in` or `if`"
        if given[0] == "if" and "field" in options:
            return ("stage 'where': `field` goes with `equals` or `in`; an `if` condition "
                    "names its fields itself")
        if given[0] != "if" and "field" not in options:
            return f"stage 'where': `{given[0]}` needs `field`, the field to test"
        for value in options.get("in") or []:
            if not isinstance(value, (str, int, float, bool)):
                return (f"stage 'where': `in` must list strings, numbers or booleans; got "
                        f"{type(value).__name__} {value!r}")
        return None

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        missing = missing_fields(list(cls.reads(options)), given)
        return f"field {missing}" if missing else None

    def __init__(self, **options: Any):
        super().__init__(**options)
        text = getattr(self, "if")  # `if` and `in` are keywords: no plain attribute access
        self.condition = parse(text) if text is not None else None
        values = getattr(self, "in")
        wanted = [self.equals] if values is None else values
        self.wanted = {normalize(v) for v in wanted}
        self.get = getter(self.field) if self.field is not None else None
        self.kept = self.dropped = 0

    def snapshot(self) -> dict[str, int]:
        return {"kept": self.kept, "dropped": self.dropped, **self.failure_counts()}

    def restore(self, state: dict[str, int]) -> None:
        self.kept, self.dropped = state["kept"], state["dropped"]
        self.restore_failure_counts(state)

    def counters(self) -> dict[str, int]:
        return self.failure_counts()

    def process(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        get, wanted, drop = self.get, self.wanted, self.drop
        for batch in batches:
            failed = 0
            if self.condition is not None:
                out, failed = self._where(batch)
            elif isinstance(batch, Columns):
                out = batch.filter(self._matches(batch) != drop)
            else:
                out = batch.take(i for i, r in enumerate(batch) if hit(get(r), wanted) != drop)
            self.kept += len(out)
            self.dropped += len(batch) - len(out) - failed
            yield out

    def _where(self, batch: Any) -> tuple[Any, int]:
        """The records the condition keeps (or, with drop, does not), and how many it
        could not be computed for and did not pass on (see on_failure)."""
        assert self.condition is not None
        outcome = self.condition.evaluate(batch)
        keep = holds(outcome, len(batch))
        if self.drop:
            keep = ~keep
        failed = outcome.failed
        kept = self.failed(batch, failed, f"condition `{self.condition.text}`")
        keep[list(failed)] = False
        keep[list(kept)] = True  # on_failure: keep passes them on
        if kept:
            batch = as_records(batch)
        if isinstance(batch, Columns):
            return batch.filter(keep), len(failed)
        rows = np.flatnonzero(keep)
        out = batch.take(rows.tolist())
        self.tag_rows(out, rows, kept)
        return out, len(failed) - len(kept)

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
