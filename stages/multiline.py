"""file-input's `multiline`: several physical lines read as one record (a Java stack
trace, an indented continuation), as Logstash's multiline codec and Filebeat do:

    multiline: {pattern: '^\\s', negate: false, what: previous, max_lines: 500}

A line *matches* when `pattern` (a Python regular expression, searched in the line's
bytes) finds something in it; with `negate: true`, when it finds nothing. With
`what: previous` a matching line belongs to the record before it; with `what: next`
it belongs, with the lines after it, to the record of the next line that does not
match. A record is its lines joined by "\\n", and keeps the line number and byte offset
of its first line. A record of `max_lines` lines is complete: the next line starts a new
one (nothing is dropped). Records never span files.
"""
from __future__ import annotations

import re
from typing import Any, Iterator, NamedTuple

import numpy as np

from pipeline import Batch

KEYS = ("pattern", "negate", "what", "max_lines")
MAX_LINES = 100_000


class Spec(NamedTuple):
    pattern: Any  # a compiled bytes regex
    negate: bool
    previous: bool  # what: previous (else next)
    max_lines: int


def parse(value: Any) -> Spec | str:
    """The `multiline` option, checked: a Spec, or why it is wrong."""
    if not isinstance(value, dict):
        return f"expected {{pattern: '^\\s', what: previous}}; got {value!r}"
    unknown = [k for k in value if k not in KEYS]
    if unknown:
        return f"unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}"
    pattern = value.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        return f"`pattern` must be a regular expression; got {pattern!r}"
    try:
        compiled = re.compile(pattern.encode("utf-8"))
    except re.error as exc:
        return f"`pattern` {pattern!r} is not a regular expression: {exc}"
    negate = value.get("negate", False)
    if not isinstance(negate, bool):
        return f"`negate` must be true or false; got {negate!r}"
    what = value.get("what", "previous")
    if what not in ("previous", "next"):
        return f"`what` must be previous or next; got {what!r}"
    most = value.get("max_lines", 500)
    if not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= MAX_LINES:
        return f"`max_lines` must be a whole number from 1 to {MAX_LINES:,}; got {most!r}"
    return Spec(compiled, negate, what == "previous", most)


def check(value: Any) -> str | None:
    parsed = parse(value)
    return parsed if isinstance(parsed, str) else None


class Joiner:
    """Joins one file's line batches into records. `feed()` takes a batch of lines and
    returns the batch of records completed by it; the lines of a record that may go on
    are held (`held`) until a line shows it ended, or the file does (`end()`)."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.lines: list[bytes] = []   # the held record's lines
        self.line = 0                   # its first line's number and offset
        self.offset = 0
        self.glue = False               # what: next: the last line joins the next

    @property
    def held(self) -> int:
        return len(self.lines)

    def feed(self, batch: Batch) -> Batch:
        spec = self.spec
        search = spec.pattern.search
        flags = [(search(line) is None) == spec.negate for line in batch]  # matches
        line_nos, offsets = batch.line_origins(np.arange(len(batch)))
        records: list[bytes] = []
        rec_lines: list[int] = []
        rec_offsets: list[int] = []
        lines, glue, most = self.lines, self.glue, spec.max_lines
        for i, line in enumerate(batch):
            joins = lines and (flags[i] if spec.previous else glue) and len(lines) < most
            if not joins and lines:
                records.append(b"\n".join(lines))
                rec_lines.append(self.line)
                rec_offsets.append(self.offset)
                lines = []
            if not lines:
                self.line, self.offset = int(line_nos[i]), int(offsets[i])
            lines.append(line)
            glue = flags[i]
        self.lines, self.glue = lines, glue
        return self._batch(records, rec_lines, rec_offsets, batch.source)

    def end(self, source: str | None) -> Batch:
        """The file ended: its held record is complete."""
        if not self.lines:
            return self._batch([], [], [], source)
        out = self._batch([b"\n".join(self.lines)], [self.line], [self.offset], source)
        self.lines, self.glue = [], False
        return out

    @staticmethod
    def _batch(records: list[bytes], lines: list[int], offsets: list[int],
               source: str | None) -> Batch:
        out = Batch(records, source=source,
                    origins=(np.array(lines, np.int64), np.array(offsets, np.int64)))
        if records:
            out.first_line, out.first_offset = lines[0], offsets[0]
        return out


def joined(batches: Iterator[Batch], spec: Spec, reader: Any, source: str | None
           ) -> Iterator[Batch]:
    """A file's line batches as batches of records. While a batch is handed on, the
    reader's position (`offset`, `line`, `lines_read`: what a snapshot records) is the
    first line of the record held back, so a resume reads that record whole again."""
    joiner = Joiner(spec)
    for batch in batches:
        out = joiner.feed(batch)
        if not joiner.held:
            yield out
            continue
        after = reader.offset, reader.line, reader.lines_read
        reader.offset, reader.line = joiner.offset, joiner.line
        reader.lines_read -= after[1] - joiner.line
        yield out  # (closed here, the position stays at the held record: safe)
        reader.offset, reader.line, reader.lines_read = after
    yield joiner.end(source)
