"""where: keep or drop records by a field's value."""
from __future__ import annotations

from typing import Any, Iterator

from pipeline import SAME, Batch, Option, Processor
from pipeline.contracts import missing_fields

from .fields import MISSING, getter, normalize


class Where(Processor):
    """Keep the records whose field equals a value or is one of several values.

        - where:
            field: site_id
            in: ["123", "124"]

    Use `equals: VALUE` for one value, `drop: true` to drop the matches instead.
    Integers compare as their decimal strings, so site_id 123 matches "123". A record
    without the field never matches.
    """

    name = "where"
    accepts = ("object", "site-event")
    produces = SAME
    options = (
        Option("field", str, doc="field to test, by its JSON name"),
        Option("equals", (str, int, float, bool), None, "keep records whose field equals this"),
        Option("in", list, None, "keep records whose field is one of these"),
        Option("drop", bool, False, "drop the matching records instead of keeping them"),
    )

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
            out = batch.take(i for i, r in enumerate(batch)
                             if ((v := get(r)) is not MISSING and normalize(v) in wanted) != drop)
            self.kept += len(out)
            self.dropped += len(batch) - len(out)
            yield out
