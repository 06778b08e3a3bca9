"""A batch: the unit of work between stages, and where each of its records came from."""
from __future__ import annotations

from itertools import accumulate
from typing import Any, Iterable, Iterator


class Batch(list):
    """A list of records, and where each came from in the input.

    An input that yields raw lines sets `first_line` (1-based) and `first_offset` (the
    byte offset of the first line); the records are then consecutive lines. A stage
    that turns lines into records (json-decode) gives its batch `origins`: each
    record's line number and byte offset, as two arrays. A processor that keeps some
    records passes them on with `batch.take(indices)`, so that a stage further on that
    rejects a record still names its line: `ctx.reject(..., at=batch.locate(i))`.
    """

    __slots__ = ("first_line", "first_offset", "source", "origins", "_starts")

    def __init__(self, records: Iterable[Any] = (), first_line: int | None = None,
                 first_offset: int | None = None, source: str | None = None,
                 origins: tuple[Any, Any] | None = None):
        super().__init__(records)
        self.first_line = first_line
        self.first_offset = first_offset
        self.source = source  # the file it came from, when the input reads several
        self.origins = origins  # (line numbers, byte offsets), one of each per record
        self._starts: list[int] | None = None

    def locate(self, i: int) -> tuple[int | None, int | None]:
        """(line number, byte offset) of record i; (None, None) if not known."""
        if self.origins is not None:
            return int(self.origins[0][i]), int(self.origins[1][i])
        if self.first_line is None or self.first_offset is None:
            return None, None
        if self._starts is None:  # once per batch, at its first reject: rejects are rare
            self._starts = list(accumulate(map(len, self), lambda a, n: a + n + 1,
                                           initial=self.first_offset))
        return self.first_line + i, self._starts[i]

    def line_origins(self, keep: Any) -> tuple[Any, Any]:
        """Of a raw-line batch: the (line numbers, byte offsets) of lines `keep` (an
        array of indices), for the records made of them."""
        import numpy as np

        if self.origins is not None:  # records of several lines (file-input's multiline)
            return self.origins[0][keep], self.origins[1][keep]
        lengths = np.fromiter(map(len, self), np.int64, len(self)) + 1
        starts = np.empty(len(self) + 1, np.int64)
        starts[0] = self.first_offset or 0
        np.cumsum(lengths, out=starts[1:])
        starts[1:] += starts[0]
        return (keep + (self.first_line or 1)), starts[keep]

    def slices(self, size: int) -> Iterator["Batch"]:
        """A batch of raw lines as batches of at most `size` lines, each with the line
        number and byte offset of its first line (itself, whole, if it does not know
        them, or is no longer than `size`)."""
        if len(self) <= size or self.first_line is None or self.first_offset is None:
            yield self
            return
        if self.origins is not None:
            for a in range(0, len(self), size):
                yield Batch(self[a:a + size], source=self.source,
                            origins=(self.origins[0][a:a + size], self.origins[1][a:a + size]))
            return
        for a in range(0, len(self), size):
            line, offset = self.locate(a)
            yield Batch(self[a:a + size], first_line=line, first_offset=offset,
                        source=self.source)

    def take(self, indices: Any) -> "Batch":
        """A batch of records `indices` (in that order), with their origins."""
        idx = list(indices)
        out = Batch([self[i] for i in idx], source=self.source)
        if self.origins is not None:
            out.origins = (self.origins[0][idx], self.origins[1][idx])
        return out


class Encoded:
    """An output's bytes for some records, made ahead (Output.encode), by a worker:
    written as they are. `len()` is the number of records they hold."""

    __slots__ = ("data", "records")

    def __init__(self, data: bytes, records: int):
        self.data = data
        self.records = records

    def __len__(self) -> int:
        return self.records
