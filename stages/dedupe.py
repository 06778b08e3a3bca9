"""dedupe: drop records whose field value was seen before."""
from __future__ import annotations

from typing import Any, Iterator

from pipeline import AppendOnly, Batch, Option, Processor, unwrap

from .fields import MISSING, getter, normalize


class Dedupe(Processor):
    """Keep the first record for each value of a field; drop later repeats.

        - dedupe:
            field: id

    The seen values are checkpointed (grow-only, so each checkpoint stores only the
    new ones); memory grows with the number of distinct values. Records without the
    field pass through. In a partitioned run each worker dedupes its own range only:
    put it after the reducer, or run with one worker, for a global dedupe.
    """

    name = "dedupe"
    options = (Option("field", str, doc="field whose repeats are dropped"),)

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.get = getter(self.field)
        self.order: list[Any] = []   # first-seen order, for grow-only checkpoints
        self.seen: set[Any] = set()
        self.dropped = 0

    def snapshot(self) -> dict[str, Any]:
        return {"seen": AppendOnly(self.order), "dropped": self.dropped}

    def restore(self, state: dict[str, Any]) -> None:
        self.order = list(unwrap(state["seen"]))
        self.seen = set(self.order)
        self.dropped = state["dropped"]

    def counters(self) -> dict[str, int]:
        return {"duplicates": self.dropped}

    def process(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        get, seen = self.get, self.seen
        for batch in batches:
            out = Batch()
            for record in batch:
                value = get(record)
                if value is MISSING:
                    out.append(record)
                    continue
                key = normalize(value)
                if key in seen:
                    self.dropped += 1
                    continue
                seen.add(key)
                self.order.append(key)
                out.append(record)
            yield out
