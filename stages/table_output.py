"""What the database outputs (sqlite-output, postgres-output) share: columns, values,
insert or upsert, and exactly-once commits keyed by the job.

Each commit writes the pending rows and, in the same transaction, the number of rows the
job (config and input: pipeline.engine.resume.job_key) has committed to the table, in
the table `sluice_offsets (job, tbl, rows)`. Where a run resumes (a checkpoint), reruns
after a kill, or reruns a finished job, insert mode skips as many rows as the database
holds for the job: what follows is what an uninterrupted run writes next. Upsert mode
writes every row again: the same rows replace themselves.

A dialect (subclass) says how to connect, inspect and create a table, and write rows.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterator

from pipeline import Batch, Option, Output
from pipeline.columns import Columns
from pipeline.errors import SluiceError

from .csv_output import columns_problem
from .fields import MISSING, getter

OFFSETS = "sluice_offsets"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
INT64 = (-(1 << 63), (1 << 63) - 1)


def names_problem(options: dict[str, Any], types: tuple[str, ...]) -> str | None:
    """What is wrong with `table`, `columns`, `mode` and `key`, or None."""
    table = options.get("table")
    if not isinstance(table, str) or not _NAME.match(table):
        return f"`table` must be a plain SQL name (letters, digits, _); got {table!r}"
    cols = options.get("columns")
    names = list(cols) if isinstance(cols, (list, dict)) else []
    if not names:
        return "`columns` must be a non-empty list of names, or {name: SQL type}"
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            return f"column names must be plain SQL names (letters, digits, _); got {name!r}"
    if isinstance(cols, dict):
        for name, kind in cols.items():
            if not isinstance(kind, str) or kind.upper() not in types:
                return (f"column {name!r}: the type must be one of {', '.join(types)}; "
                        f"got {kind!r}")
    if len(set(names)) != len(names):
        return "`columns` names a column twice"
    key = options.get("key")
    if options.get("mode", "insert") == "upsert":
        if not isinstance(key, list) or not key:
            return "`mode: upsert` needs `key`: the columns that identify a row"
        missing = [k for k in key if k not in names]
        if missing:
            return f"`key` column {missing[0]!r} is not among `columns`"
    elif key is not None:
        return "`key` is only for `mode: upsert`"
    return None


def sql_value(value: Any) -> Any:
    """A record's value as a database stores it: text, numbers and null as they are,
    a bool as itself, an array or object (or an int beyond 64 bits) as its JSON text."""
    cls = value.__class__
    if cls is str or cls is float or cls is bool or value is None:
        return value
    if cls is int:
        return value if INT64[0] <= value <= INT64[1] else str(value)
    if value is MISSING:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


MODE = Option("mode", str, "insert", "insert: add every row; upsert: replace the row with "
                                     "the same `key`", choices=("insert", "upsert"))
KEY = Option("key", list, None, "with mode: upsert, the columns that identify a row")
BATCH_ROWS = Option("batch_rows", int, 10_000, "rows per transaction at most",
                    check=lambda v: None if 1 <= v <= 10_000_000 else
                    f"must be from 1 to 10,000,000; got {v!r}")


class TableOutput(Output):
    """Base of the database outputs; see the module docstring."""

    accepts = ("object", "site-event", "summary-row", "count-row")
    TYPES: tuple[str, ...] = ()
    appends = True  # in insert mode, rows are added, never replaced (see check_follow)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        problem = names_problem(options, cls.TYPES)
        return f"stage {cls.name!r}: {problem}" if problem else None

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        return columns_problem(list(options.get("columns") or []), given, kind)

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.names = list(self.columns)
        self.types = ({n: t.upper() for n, t in self.columns.items()}
                      if isinstance(self.columns, dict) else {})
        self.getters = [getter(n) for n in self.names]
        self.restored = 0       # rows committed as of the checkpoint resumed from
        self.done_rows = 0      # rows this job has committed to the table
        self.pending: list[tuple[Any, ...]] = []
        self.conn: Any = None
        self.job = ""

    # -- state ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, int]:
        if self.conn is not None:
            self._commit()
        return {"rows": self.done_rows}

    def restore(self, state: dict[str, int]) -> None:
        self.restored = self.done_rows = state["rows"]

    # -- what a dialect provides ------------------------------------------------------
    def where(self) -> str:
        """`sqlite-output: table 't' in out.db`: the start of its error lines."""
        raise NotImplementedError

    def connect(self) -> Any:
        raise NotImplementedError

    def prepare(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """Create the table and sluice_offsets if missing (column types from the
        config, or from `rows`); check an existing table (SluiceError if it does not
        fit)."""
        raise NotImplementedError

    def position(self, conn: Any) -> int:
        """Rows this job has committed to the table."""
        raise NotImplementedError

    def commit_rows(self, conn: Any, rows: list[tuple[Any, ...]], position: int) -> None:
        """The rows and the job's new position, in one transaction."""
        raise NotImplementedError

    def close_connection(self, conn: Any) -> None:
        conn.close()

    # -- writing --------------------------------------------------------------------
    def not_fitting(self, have: list[str], unique: bool) -> str | None:
        """Why an existing table with columns `have` (and, for upsert, a unique index
        on `key` or not) cannot take the rows, or None."""
        missing = [n for n in self.names if n not in have]
        if missing:
            return (f"{self.where()} has columns ({', '.join(have)}), not "
                    f"{', '.join(repr(m) for m in missing)}: drop the table, add the column, "
                    f"or name another `table`")
        if self.mode == "upsert" and not unique:
            return (f"{self.where()} has no unique index on ({', '.join(self.key)}), which "
                    f"mode: upsert needs: CREATE UNIQUE INDEX ... ON {self.table} "
                    f"({', '.join(self.key)}), or name another `table`")
        return None

    def rows_of(self, batch: Any) -> list[tuple[Any, ...]]:
        if isinstance(batch, Columns):
            batch = batch.records()
        if batch and isinstance(batch[0], (tuple, list)):
            return [tuple(map(sql_value, r)) for r in batch]
        return [tuple(sql_value(g(r)) for g in self.getters) for r in batch]

    def _commit(self) -> None:
        if not self.pending:
            return
        rows, self.pending = self.pending, []
        self.commit_rows(self.conn, rows, self.done_rows + len(rows))
        self.done_rows += len(rows)

    def write(self, batches: Iterator[Batch]) -> None:
        self.job = getattr(self.ctx, "job", "") or "standalone"
        self.conn = conn = self.connect()
        prepared = False
        try:
            skip = 0
            for batch in batches:
                rows = self.rows_of(batch)
                if not prepared:
                    skip = self._start(conn, rows)
                    prepared = True
                if skip:
                    cut = min(skip, len(rows))
                    rows, skip = rows[cut:], skip - cut
                self.pending += rows
                if len(self.pending) >= self.batch_rows:
                    self._commit()
            if not prepared:
                self._start(conn, [])
            self._commit()
        finally:
            conn, self.conn = self.conn, None  # (a dialect may have opened another)
            self.close_connection(conn)

    def _start(self, conn: Any, rows: list[tuple[Any, ...]]) -> int:
        """Prepare the table; how many rows to skip (see the module docstring)."""
        self.prepare(conn, rows)
        done = self.position(conn)
        if self.mode == "upsert":  # idempotent: every row again, the last one wins
            self.done_rows = 0
            return 0
        if done < self.restored:
            raise SluiceError(
                f"{self.where()}: the database holds {done:,} rows of this job, fewer than "
                f"the {self.restored:,} the checkpoint recorded (a row of {OFFSETS} or the "
                f"table was changed); rerun with --fresh")
        self.done_rows = done
        return done - self.restored

    def upsert_clause(self, quote: Any = lambda n: n) -> str:
        rest = [n for n in self.names if n not in self.key]
        return f" ON CONFLICT ({', '.join(map(quote, self.key))}) DO " + (
            "UPDATE SET " + ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in rest)
            if rest else "NOTHING")
