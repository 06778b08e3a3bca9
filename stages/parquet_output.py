"""parquet-output: records as one Parquet file, written atomically, resumed after a kill."""
from __future__ import annotations

import os
import re
import shutil
import zlib
from typing import Any, Iterator

import msgspec

from pipeline import Batch, Option, Output, a_path, positive_at_most
from pipeline.errors import DamagedState, PathError, WriteFailed, reason, writable_problem
from pipeline.outputs import file_crc, fsync_path, holds, json_lines, json_text

from .csv_output import columns_problem
from .fields import MISSING, column, json_type

TYPES = ("string", "int", "float", "bool", "json")
AUTO = "auto"  # a column whose type comes from its first values
EXACT_FLOAT = 1 << 53  # integers up to this size are exact as a double
INT64 = (-(1 << 63), (1 << 63) - 1)
MERGED = "merged.parquet"
_encoder = msgspec.json.Encoder()
NEW: dict[str, Any] = {"parts": [], "rows": 0, "content": 0, "types": None}


_PART = re.compile(r"part-\d{6}\.parquet")


def _part(i: int) -> str:
    return f"part-{i:06d}.parquet"


def _arrow_type(name: str) -> Any:
    import pyarrow as pa

    return {"string": pa.string(), "json": pa.string(), "int": pa.int64(),
            "float": pa.float64(), "bool": pa.bool_()}[name]


_NULLS = {None.__class__, MISSING.__class__}


def fits(kind: str, values: list[Any]) -> bool:
    """Whether a column of type `kind` holds every value exactly (nulls and missing
    fields always fit): one look at the classes, and at the range of the integers."""
    if kind == "json":
        return True
    classes = {v.__class__ for v in values} - _NULLS
    if kind in ("string", "bool"):
        return classes <= {str if kind == "string" else bool}
    if not classes <= ({int, float} if kind == "float" else {int}):
        return False
    ints = [v for v in values if v.__class__ is int]
    lo, hi = (-EXACT_FLOAT, EXACT_FLOAT) if kind == "float" else INT64
    return not ints or (lo <= min(ints) and max(ints) <= hi)


def infer(values: list[Any]) -> str:
    """The type of a column from its values: the first of bool, string, int (every
    value an integer within int64), float (numbers, the integers among them exact as
    doubles) that holds them all, else json; AUTO while there is no value yet."""
    if not {v.__class__ for v in values} - _NULLS:
        return AUTO
    return next((k for k in ("bool", "string", "int", "float") if fits(k, values)), "json")


def _describe(kind: str) -> str:
    return {"string": "a string", "int": "an integer within int64", "bool": "true or false",
            "float": "a number (an integer only up to 2**53, exact as a double)"}[kind]


class ParquetOutput(Output):
    """Write records as one Parquet file, one column per name in `columns`.

        - parquet-output:
            path: out.parquet
            columns: {site_id: string, records: int, first: float}
            row_group_rows: 131072

    `columns` is a list of names, or a mapping of name to type: `string`, `int`
    (int64), `float` (double), `bool`, or `json` (the value's JSON text, for lists,
    objects and fields whose type varies). A listed name without a type (`auto` in a
    mapping) takes the type of its values in the first batch that has any: int, float
    if integers and fractions mix, string, bool, else json; a column still without a
    value when the first rows are written is a string column. A null or missing field is
    a null cell. A record with a value its column cannot hold exactly (a string in an
    int column, a fraction in a column inferred as int, an integer beyond int64) goes
    to the dead-letter file, naming the field; declare the type to avoid surprises.

    Rows go to `PATH.partial/`: a Parquet part per checkpoint interval, fsynced and
    recorded with its CRC at each checkpoint. A resumed run keeps the recorded parts and
    drops any later one, so no row is written twice. At the end the parts are merged
    into one file of `row_group_rows`-row groups, whose bytes do not depend on where a
    run was stopped, and renamed to PATH; PATH is never touched before. With `--follow`
    the file appears at each emission of a reducer before it, and when the run stops.
    Standard output is not possible: Parquet's footer comes last.
    """

    name = "parquet-output"
    loads = ("pyarrow", "pyarrow.parquet")
    accepts = ("object", "site-event", "summary-row", "count-row")
    options = (Option("path", str, doc="file to write", check=a_path),
               Option("columns", (list, dict),
                      doc="column names in order, or a mapping of name to type: "
                          + ", ".join(TYPES) + " or auto"),
               Option("row_group_rows", int, 131072, doc="rows per Parquet row group",
                      check=positive_at_most(1 << 24)))

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        if options.get("path") == "-":
            return ("stage 'parquet-output': Parquet cannot go to standard output (its "
                    "footer is written last): give `path` a file name")
        cols = options.get("columns")
        names = list(cols) if isinstance(cols, (list, dict)) else []
        if not names or not all(isinstance(c, str) and c for c in names):
            return ("stage 'parquet-output': `columns` must be a non-empty list of names, "
                    "or a mapping of name to type")
        if len(set(names)) != len(names):
            return f"stage 'parquet-output': `columns` names a column twice: {names}"
        if isinstance(cols, dict):
            for name, kind in cols.items():
                if kind not in TYPES + (AUTO,):
                    return (f"stage 'parquet-output': column {name!r} has type {kind!r}; "
                            f"expected one of {', '.join(TYPES)} or {AUTO}")
        return None

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        return columns_problem(list(options.get("columns", [])), given, kind)

    def __init__(self, **options: Any):
        super().__init__(**options)
        cols = self.columns
        self.names = list(cols)
        self.declared = [cols[n] if isinstance(cols, dict) else AUTO for n in self.names]
        self.readers = [column(n) for n in self.names]
        self.dir = self.path + ".partial"
        self.state: dict[str, Any] = dict(NEW)
        self.types: list[str] = list(self.declared)
        self.pending: list[Any] = []  # accepted batches, as Arrow tables
        self.pending_rows = 0
        self.writer: Any = None  # the open part's ParquetWriter
        self.schema: Any = None

    def describe(self) -> str:
        return f"{self.name}({self.path})"

    # --- checkpoints -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Write what is pending, close the open part, and record every part."""
        if self.writer is not None or self.pending:
            self._flush()
            self._close_part()
        return {**self.state, "parts": [list(p) for p in self.state["parts"]],
                "types": list(self.types)}

    def restore(self, state: dict[str, Any]) -> None:
        self.state = {**state, "parts": [tuple(p) for p in state["parts"]]}
        if state["types"] is not None:
            self.types = list(state["types"])

    def _failed(self, exc: OSError, path: str, verb: str = "write") -> WriteFailed:
        return WriteFailed("output file", path, reason(exc), verb)

    def _resume(self) -> None:
        """Make PATH.partial/ hold exactly the recorded parts (none for a new run)."""
        problem = writable_problem(self.path)
        if problem:
            raise PathError(f"output file {self.path}: {problem}")
        parts = self.state["parts"]
        try:
            if os.path.isdir(self.dir) and not os.path.islink(self.dir):
                if parts and not all(holds(os.path.join(self.dir, name), size, crc, exact=True)
                                     for name, size, crc in parts):
                    self._from_finished()
                keep = {name for name, _, _ in self.state["parts"]}
                for leftover in set(os.listdir(self.dir)) - keep:  # past the checkpoint
                    if leftover == MERGED or _PART.fullmatch(leftover):
                        os.unlink(os.path.join(self.dir, leftover))
            elif os.path.lexists(self.dir):
                raise PathError(f"output file {self.path}: {self.dir} exists and is not the "
                                f"directory of parts a run of parquet-output makes; move it "
                                f"away or remove it")
            else:
                os.makedirs(self.dir)
                if parts:
                    self._from_finished()
        except OSError as exc:
            raise self._failed(exc, self.dir) from None

    def _from_finished(self) -> None:
        """The parts are gone: the run had finished, and PATH is its whole output if it
        holds the recorded rows. It becomes the only part (copied: PATH stays as is)."""
        import pyarrow.parquet as pq

        rows, crc = 0, 0
        try:
            with pq.ParquetFile(self.path) as done:
                for rb in done.iter_batches(self.row_group_rows):
                    values = [c.to_pylist() for c in rb.columns]
                    crc = _content(list(zip(*values)), crc)  # the same rows and text
                    rows += rb.num_rows
        except (OSError, ValueError, TypeError):  # absent, or not Parquet
            rows = -1
        if (rows, crc) != (self.state["rows"], self.state["content"]):
            raise DamagedState(self.dir, "its parts are not those the last checkpoint "
                                         "recorded")
        shutil.rmtree(self.dir)
        os.makedirs(self.dir)
        dest = os.path.join(self.dir, _part(0))
        shutil.copyfile(self.path, dest)
        self.state["parts"] = [(_part(0), *file_crc(dest))]

    # --- rows --------------------------------------------------------------------

    def _columns(self, batch: Batch) -> list[list[Any]]:
        if isinstance(batch[0], (tuple, list)):  # a count-row or summary-row: by position
            return [list(c) for c in zip(*batch)]
        return [read(batch) for read in self.readers]

    def _accept(self, batch: Batch) -> None:
        """Check a batch's values against the column types; reject records that do not
        fit; keep the rest pending."""
        cols = self._columns(batch)
        bad: dict[int, str] = {}
        for j, values in enumerate(cols):
            kind = self.types[j]
            if kind == AUTO:
                kind = infer(values)
                if kind == AUTO:
                    continue
                self.types[j] = kind
            if fits(kind, values):
                continue
            for i, v in enumerate(values):
                if i not in bad and not fits(kind, [v]):
                    got = json_type(v, article=True)
                    if v.__class__ is int and kind in ("int", "float"):
                        got = f"{v}, " + ("beyond int64" if kind == "int" else
                                          "beyond 2**53, not exact as a double")
                    bad[i] = (f"field {self.names[j]!r}: expected {_describe(kind)}, got "
                              f"{got}" + ("" if self.declared[j] != AUTO else
                                          " (the column's type was inferred from its first "
                                          "values; declare another in `columns`)"))
        if bad:
            for i, why in sorted(bad.items()):
                self.ctx.reject(json_lines([batch[i]]).rstrip(b"\n"), why, stage=self.name,
                                at=batch.locate(i), file=batch.source)
            keep = [i for i in range(len(batch)) if i not in bad]
            if not keep:
                return
            cols = [[c[i] for i in keep] for c in cols]
        table = self._table(cols)
        self.state["rows"] += table.num_rows
        self.pending.append(table)
        self.pending_rows += table.num_rows

    def _table(self, cols: list[list[Any]]) -> Any:
        """The accepted rows as an Arrow table (a column with no type yet: nulls); their
        text joins the content CRC."""
        import pyarrow as pa

        converted, arrays = [], []
        for kind, values in zip(self.types, cols):
            if values.count(MISSING):
                values = [None if v is MISSING else v for v in values]
            if kind == AUTO:  # nothing but nulls so far
                arrays.append(pa.nulls(len(values)))
                converted.append(values)
                continue
            if kind == "json":
                values = [None if v is None else json_text(v) for v in values]
            elif kind == "float":
                values = [float(v) if v.__class__ is int else v for v in values]
            try:
                arrays.append(pa.array(values, _arrow_type(kind)))
            except UnicodeEncodeError:  # a lone surrogate: escaped, as in every output
                values = [None if v is None else v.encode("utf-8", "backslashreplace")
                          .decode() for v in values]
                arrays.append(pa.array(values, _arrow_type(kind)))
            converted.append(values)
        self.state["content"] = _content(list(zip(*converted)), self.state["content"])
        return pa.Table.from_arrays(arrays, names=self.names)

    def _flush(self) -> None:
        """Write the pending rows into the open part (opened first if need be)."""
        if not self.pending:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.schema is None:
            self._fix_schema()
        if self.writer is None:
            name = _part(len(self.state["parts"]))
            try:
                self.writer = pq.ParquetWriter(os.path.join(self.dir, name), self.schema)
            except OSError as exc:
                raise self._failed(exc, self.dir) from None
            self.writer_name = name
        table = pa.concat_tables([t if t.schema == self.schema else t.cast(self.schema)
                                  for t in self.pending])  # a null column gets its type
        try:
            self.writer.write_table(table, row_group_size=self.row_group_rows)
        except OSError as exc:
            raise self._failed(exc, self.dir) from None
        self.pending, self.pending_rows = [], 0

    def _fix_schema(self) -> None:
        import pyarrow as pa

        self.types = ["string" if t == AUTO else t for t in self.types]
        self.schema = pa.schema([(n, _arrow_type(t)) for n, t in zip(self.names, self.types)])

    def _close_part(self) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        path = os.path.join(self.dir, self.writer_name)
        try:
            writer.close()
            fsync_path(path)
            self.state["parts"] = self.state["parts"] + [(self.writer_name, *file_crc(path))]
        except OSError as exc:
            raise self._failed(exc, path) from None

    # --- the run -----------------------------------------------------------------

    def write(self, batches: Iterator[Batch]) -> None:
        self._resume()
        try:
            for batch in batches:
                if batch:
                    self._accept(batch)
                    if self.pending_rows >= self.row_group_rows:
                        self._flush()
            self._flush()
            self._close_part()
            self._commit()
        finally:
            if self.writer is not None:  # stopped: this part is past the checkpoint
                try:
                    self.writer.close()
                except OSError:
                    pass
                self.writer = None

    def _commit(self) -> None:
        """Merge the parts into row groups of `row_group_rows` rows, then rename."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.schema is None:
            self._fix_schema()
        merged = os.path.join(self.dir, MERGED)
        size = self.row_group_rows
        try:
            with pq.ParquetWriter(merged, self.schema) as out:
                held: list[Any] = []
                rows = 0
                for name, _, _ in self.state["parts"]:
                    with pq.ParquetFile(os.path.join(self.dir, name)) as part:
                        for rb in part.iter_batches(size):  # < 2 * size rows held
                            held.append(rb)
                            rows += rb.num_rows
                            if rows >= size:
                                table = pa.Table.from_batches(held, schema=self.schema)
                                out.write_table(table.slice(0, size), row_group_size=size)
                                held = table.slice(size).to_batches()
                                rows -= size
                if rows:
                    table = pa.Table.from_batches(held, schema=self.schema)
                    out.write_table(table, row_group_size=size)
            fsync_path(merged)
            os.replace(merged, self.path)
            fsync_path(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            raise self._failed(exc, self.path, "commit") from None
        shutil.rmtree(self.dir, ignore_errors=True)


def _content(rows: list[tuple[Any, ...]], crc: int) -> int:
    """The CRC-32 of rows as JSON text, each followed by a comma, after conversion to
    the column types: what a finished file is checked against (its rows read back are
    the same values). Batch boundaries do not change it."""
    if not rows:
        return crc
    return zlib.crc32(_encoder.encode(rows)[1:-1] + b",", crc)
