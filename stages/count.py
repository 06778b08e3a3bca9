"""count: how many records have each value of a field."""
from __future__ import annotations

from typing import Any, Iterator

from pipeline import Batch, Option, Reducer

from .fields import MISSING, getter, normalize


class Count(Reducer):
    """Count records per value of a field; emit (value, count) sorted by value.

        - count:
            field: type

    Records without the field count under `missing` (option, default "(missing)").
    """

    name = "count"
    options = (Option("field", str, doc="field to group by, by its JSON name"),
               Option("missing", str, "(missing)", "the value counted for records without it"))

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.get = getter(self.field)
        self.counts: dict[str, int] = {}

    def update(self, batch: Batch) -> None:
        counts, get = self.counts, self.get
        for record in batch:
            value = get(record)
            key = self.missing if value is MISSING else str(normalize(value))
            counts[key] = counts.get(key, 0) + 1

    def merge(self, other: "Count") -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    def restore(self, state: dict[str, int]) -> None:
        self.counts = dict(state)

    def finish(self) -> Iterator[Batch]:
        yield Batch(sorted(self.counts.items()))
