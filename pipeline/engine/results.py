"""A reducer's merged results, read like an input by the segment after it.

The results are a pure function of the reducer's finished state, so a resumed reader
can skip the records its checkpoint had already passed on.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from pipeline.keyed import KeyedReducer
from pipeline.batch import Encoded
from pipeline.stage import SAME, Batch, Input
from pipeline.state.spill import Codec, Sets, SpillReader


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

    def location(self) -> str:
        return f"record {self.done + 1:,} of {self.of}'s results"

    def describe(self) -> str:
        return f"{self.of} results"


class EncodedParts(Codec):
    """Frames of an output's bytes made ahead: a frame is the record count (8 bytes,
    little-endian) and then the bytes; it reads back as one Encoded. Nothing in it is
    executed when read."""

    def encode(self, objects: list[Any]) -> bytes:
        records = sum(o.records for o in objects)
        return records.to_bytes(8, "little") + b"".join(o.data for o in objects)

    def decode(self, data: bytes) -> list[Any]:
        return [Encoded(data[8:], int.from_bytes(data[:8], "little"))]

    def nbytes(self, objects: list[Any]) -> int:
        return sum(len(o.data) for o in objects)

    def nrows(self, objects: list[Any]) -> int:
        return sum(o.records for o in objects)


class Capture(KeyedReducer):
    """Where a path without a reducer ends inside a map task: its records (or, if its
    output is written in parts, the output's bytes for them, made here by `encode`),
    kept in file order on disk until the path's output runs (see plan.py)."""

    name = "capture"
    produces = SAME
    spills = {"records": None, "encoded": EncodedParts()}
    phases = 0

    def __init__(self, encode: Callable[[Any], bytes] | None = None):
        super().__init__()
        self.encode = encode

    def update(self, batch: Batch) -> None:
        if not batch:
            return
        if self.encode is not None:
            self._writer().add_objects("encoded", 0, [Encoded(self.encode(batch), len(batch))])
        else:
            self._writer().add_objects("records", 0, list(batch))


class Results:
    """What a leaf of the plan produces, read as batches by calling it: a keyed
    reducer's results merged by key, a capture's records in file order, or a mergeable
    reducer's finish(). `verify()` checks every frame on disk first, so that nothing is
    output from state that turns out damaged halfway through."""

    def __init__(self, read: Any, dirs: list[str] | None = None, sets: Sets | None = None):
        self.read, self.dirs, self.sets = read, list(dirs or []), sets or {}

    def __call__(self) -> Iterator[Batch]:
        return self.read()

    def verify(self) -> None:
        if self.dirs:
            SpillReader(self.dirs, self.sets).verify()


def captured(dirs: list[str]) -> Iterator[Any]:
    """What map tasks captured (their directories in task order), in order: batches of
    records, or an output's bytes (Encoded); a path captures only one of the two."""
    reader = SpillReader(dirs, Capture.all_sets())
    for frame in reader.frames("records", 0):
        yield Batch(frame)
    for frame in reader.frames("encoded", 0):
        yield from frame
