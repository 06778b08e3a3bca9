"""csv-output: records as CSV rows, to a file or stdout."""
from __future__ import annotations

import csv
import io
from typing import Any, Iterator

from pipeline import Batch, Option, Output, a_path
from pipeline.columns import Columns
from pipeline.contracts import missing_fields
from pipeline.outputs import NEW, ResumableFile, Stdout, cell, encode_text

from .fields import MISSING, column_values, getter, path_of

TUPLES = ("summary-row", "count-row")


def columns_problem(cols: list[str], given: tuple[str, ...], kind: str) -> str | None:
    """What is wrong with an output's `columns` for the fields its records have (a
    table output's check_fields): a column no record has, or, for records that are
    tuples (written by position), a different number of columns."""
    if kind in TUPLES:  # written by position: the columns only name them
        if len(cols) != len(given):
            return (f"{kind} records are {len(given)} values ({', '.join(given)}): give "
                    f"{len(given)} columns, got {len(cols)}")
        return None
    missing = missing_fields(cols, given)
    return f"column {missing}" if missing else None


class CsvOutput(Output):
    """Write records as CSV with a header row.

        - csv-output:
            path: out.csv
            columns: [site_id, messages, emails, operators, visitors]

    A dict or struct record is read by column name (a dotted name reads a nested
    field); a tuple or list record fills the columns in order. Cells: a string as
    itself, null or a missing field as an empty cell, anything else as its JSON text
    (`true`, `1.5`, `[1,"a"]`, `{"x":1}`). Columns (pipeline.columns) give the same
    cells, read a column at a time. Written and checkpointed like jsonl-output:
    `PATH.partial`, cut back on resume, renamed at the end.
    """

    name = "csv-output"
    columnar = True
    accepts = ("object", "site-event", "summary-row", "count-row")
    options = (Option("path", str, doc='file to write, or "-" for stdout', check=a_path),
               Option("columns", list, doc="column names, in order (the header row)"))

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        cols = options.get("columns", [])
        if not cols or not all(isinstance(c, str) for c in cols):
            return "stage 'csv-output': `columns` must be a non-empty list of names"
        return None

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return tuple(options["columns"])

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        return columns_problem(options.get("columns", []), given, kind)

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.written = NEW
        self.file = None if self.path == "-" else ResumableFile(self.path)
        self.getters = [getter(c) for c in self.columns]

    def snapshot(self) -> dict[str, int]:
        return self.file.mark() if self.file else NEW

    def restore(self, state: dict[str, int]) -> None:
        self.written = state

    @property
    def in_parts(self) -> bool:
        return self.file is not None

    def encode(self, batch: Any) -> bytes:
        return self._rows(batch)

    def _rows(self, batch: Batch | Columns) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if isinstance(batch, Columns):
            w.writerows(zip(*[column_cells(batch, c) for c in self.columns]))
            return encode_text(buf.getvalue())
        for rec in batch:
            if isinstance(rec, (tuple, list)):
                w.writerow(map(cell, rec))
            else:
                w.writerow("" if (v := g(rec)) is MISSING else cell(v) for g in self.getters)
        return encode_text(buf.getvalue())

    def write(self, batches: Iterator[Batch]) -> None:
        header = self._rows(Batch([self.columns]))
        if self.file is None:
            out = Stdout(self.ctx)  # EPIPE: discards, and the engine stops the run
            out.write(header)
            for batch in batches:
                out.write(self._rows(batch))
            out.finish()
            return
        self.file.open(self.written)
        try:
            if not self.written["bytes"]:
                self.file.write(header)
            for batch in batches:
                self.file.write(self.bytes_of(batch))
            self.file.commit()
        finally:
            self.file.close()


def column_cells(batch: Columns, name: str) -> list[str]:
    """The cells of column `name` (a field's name or dotted path) for every record of
    `batch`, by the rule of `cell` (as the records' getter reads them)."""
    import pyarrow as pa
    path = path_of(name)
    found = batch.find(path)
    if found is not None and not found[1] and not found[2] and pa.types.is_string(
            found[0].type):
        return found[0].fill_null("").to_pylist()  # strings are their own cells
    return ["" if v is MISSING else cell(v) for v in column_values(batch, path)]
