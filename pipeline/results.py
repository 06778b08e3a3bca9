"""A reducer's merged results, read like an input by the segment after it.

The results are a pure function of the reducer's finished state, so a resumed reader
can skip the records its checkpoint had already passed on.
"""
from __future__ import annotations

from typing import Any, Iterator

from .stage import Batch, Input


class ResultsInput(Input):
    name = "results"

    def __init__(self, batches: Iterator[Batch], of: str):
        super().__init__()
        self.batches = batches
        self.of = of
        self.done = 0

    def read(self) -> Iterator[Batch]:
        skip = self.done
        for batch in self.batches:
            if skip >= len(batch):
                skip -= len(batch)
                continue
            out = Batch(batch[skip:]) if skip else batch
            skip = 0
            self.done += len(out)  # the snapshot points after this batch
            yield out

    def snapshot(self) -> dict[str, int]:
        return {"done": self.done}

    def restore(self, state: dict[str, int]) -> None:
        self.done = state["done"]

    def resume_problem(self, saved_identity: Any, saved_state: Any) -> str | None:
        return None  # the plan already checked that the results are the same

    def where(self) -> str:
        return f"record {self.done + 1:,} of {self.of}'s results"

    def describe(self) -> str:
        return f"{self.of} results"
