"""sqlite-output: rows into a SQLite table, exactly once across kills and resumes."""
from __future__ import annotations

import json
import os
import re
import sqlite3
from typing import Any, Iterator

from pipeline import Batch, Option, Output, a_path
from pipeline.columns import Columns
from pipeline.errors import PathError, SluiceError

from .csv_output import columns_problem
from .fields import MISSING, getter

OFFSETS = "sluice_offsets"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
TYPES = ("INTEGER", "REAL", "TEXT", "BLOB", "NUMERIC", "ANY")
INT64 = (-(1 << 63), (1 << 63) - 1)


def _names_problem(options: dict[str, Any]) -> str | None:
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
            if not isinstance(kind, str) or kind.upper() not in TYPES:
                return (f"column {name!r}: the type must be one of {', '.join(TYPES)}; "
                        f"got {kind!r}")
    if len(set(names)) != len(names):
        return "`columns` names a column twice"
    key = options.get("key")
    mode = options.get("mode", "insert")
    if mode == "upsert":
        if not isinstance(key, list) or not key:
            return "`mode: upsert` needs `key`: the columns that identify a row"
        missing = [k for k in key if k not in names]
        if missing:
            return f"`key` column {missing[0]!r} is not among `columns`"
    elif key is not None:
        return "`key` is only for `mode: upsert`"
    return None


def sql_value(value: Any) -> Any:
    """A record's value as SQLite stores it: text, numbers and null as they are, a bool
    as 0/1, an array or object (or an int beyond 64 bits) as its JSON text."""
    cls = value.__class__
    if cls is str or cls is float or value is None:
        return value
    if cls is int:
        return value if INT64[0] <= value <= INT64[1] else str(value)
    if cls is bool:
        return int(value)
    if value is MISSING:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class SqliteOutput(Output):
    """Write records as rows of a SQLite table (the standard library's sqlite3).

        - sqlite-output:
            path: results.db
            table: per_minute
            columns: {window_start: INTEGER, response: TEXT, requests: INTEGER}
            mode: upsert            # or insert (the default)
            key: [window_start, response]

    `columns` names the columns, in order: a list (the table is created with untyped
    columns if it does not exist), or {name: type} (INTEGER, REAL, TEXT, BLOB, NUMERIC,
    ANY). An object record fills them by field name (a dotted name reads a nested
    field); a tuple record (count-row, summary-row) by position. An array or object
    value is stored as JSON text, a bool as 0 or 1, a missing field as NULL.

    Exactly once: rows are committed every `batch_rows` rows and at each checkpoint,
    and each commit also records, in the table `sluice_offsets` of the same database
    and the same transaction, how many rows this job (config and input) has committed
    to this table. In insert mode, a resumed run, a rerun after kill -9, or a rerun of
    a finished job skips as many rows as the database already holds for the job, so
    each row is inserted once; a job whose input file grew goes on after them. That
    suits rows whose earlier ones never change: a chain without a reducer, a fork's
    plain branch, windows. After a reducer whose results change as the input grows
    (aggregate or count without a window, dedupe), use `mode: upsert`: a row whose
    `key` columns match an existing row replaces its other columns, and every row is
    written again on a rerun (the same rows: the table ends the same). Another job
    (another config, or another input file) writes its rows too.
    """

    name = "sqlite-output"
    accepts = ("object", "site-event", "summary-row", "count-row")
    options = (
        Option("path", str, doc="the SQLite database file (created if missing)",
               check=a_path),
        Option("table", str, doc="the table (created if missing)"),
        Option("columns", (list, dict), doc="column names in order, or {name: SQL type}"),
        Option("mode", str, "insert", "insert: add every row; upsert: replace the row "
                                      "with the same `key`", choices=("insert", "upsert")),
        Option("key", list, None, "with mode: upsert, the columns that identify a row"),
        Option("batch_rows", int, 10_000, "rows per transaction at most",
               check=lambda v: None if 1 <= v <= 10_000_000 else
               f"must be from 1 to 10,000,000; got {v!r}"),
    )

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        problem = _names_problem(options)
        return f"stage 'sqlite-output': {problem}" if problem else None

    @classmethod
    def destinations(cls, options: dict[str, Any]) -> list[str]:
        return [f"{options.get('path')}#{options.get('table')}"]

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
        self.conn: sqlite3.Connection | None = None
        self.job = ""

    def describe(self) -> str:
        return f"{self.name}({self.path}, table {self.table})"

    # -- state ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, int]:
        if self.conn is not None:
            self._commit()
        return {"rows": self.done_rows}

    def restore(self, state: dict[str, int]) -> None:
        self.restored = self.done_rows = state["rows"]

    # -- writing --------------------------------------------------------------------
    def _where(self) -> str:
        return f"sqlite-output: table {self.table!r} in {self.path}"

    def _connect(self) -> sqlite3.Connection:
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise PathError(f"{self._where()}: the folder {folder} does not exist")
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)  # (checkpoints: another thread)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise PathError(f"{self._where()}: cannot open the database: {exc}") from None
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the table and sluice_offsets if missing; check the table's columns
        (and, for upsert, that `key` is unique) if it exists."""
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {OFFSETS} (job TEXT NOT NULL, "
                         f"tbl TEXT NOT NULL, rows INTEGER NOT NULL, PRIMARY KEY (job, tbl))")
            have = [r[1] for r in conn.execute(f"PRAGMA table_info({self.table})")]
            if not have:
                cols = ", ".join(f"{n} {self.types.get(n, '')}".rstrip() for n in self.names)
                key = f", PRIMARY KEY ({', '.join(self.key)})" if self.mode == "upsert" else ""
                conn.execute(f"CREATE TABLE {self.table} ({cols}{key})")
                return
            missing = [n for n in self.names if n not in have]
            if missing:
                raise SluiceError(
                    f"{self._where()} has columns ({', '.join(have)}), not "
                    f"{', '.join(repr(m) for m in missing)}: drop the table, add the "
                    f"column, or name another `table`")
            if self.mode == "upsert" and not self._unique(conn, set(self.key)):
                raise SluiceError(
                    f"{self._where()} has no unique index on ({', '.join(self.key)}), which "
                    f"mode: upsert needs: CREATE UNIQUE INDEX ... ON {self.table} "
                    f"({', '.join(self.key)}), or name another `table`")
        except sqlite3.Error as exc:
            raise SluiceError(f"{self._where()}: {exc}") from None

    def _unique(self, conn: sqlite3.Connection, key: set[str]) -> bool:
        for row in conn.execute(f"PRAGMA index_list({self.table})"):
            if row[2]:  # unique
                cols = {r[2] for r in conn.execute(f"PRAGMA index_info({row[1]})")}
                if cols == key:
                    return True
        return False

    def _position(self, conn: sqlite3.Connection) -> int:
        row = conn.execute(f"SELECT rows FROM {OFFSETS} WHERE job = ? AND tbl = ?",
                           (self.job, self.table)).fetchone()
        return row[0] if row else 0

    def _statement(self) -> str:
        cols = ", ".join(self.names)
        marks = ", ".join("?" * len(self.names))
        sql = f"INSERT INTO {self.table} ({cols}) VALUES ({marks})"
        if self.mode == "upsert":
            rest = [n for n in self.names if n not in self.key]
            sql += f" ON CONFLICT ({', '.join(self.key)}) DO " + (
                "UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in rest)
                if rest else "NOTHING")
        return sql

    def _rows(self, batch: Any) -> list[tuple[Any, ...]]:
        if isinstance(batch, Columns):
            batch = batch.records()
        if batch and isinstance(batch[0], (tuple, list)) and not isinstance(batch[0], dict):
            return [tuple(map(sql_value, r)) for r in batch]
        return [tuple(sql_value(g(r)) for g in self.getters) for r in batch]

    def _commit(self) -> None:
        """The pending rows and this job's new position, in one transaction."""
        conn = self.conn
        assert conn is not None
        if not self.pending:
            return
        rows, self.pending = self.pending, []
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(self._statement(), rows)
            conn.execute(f"INSERT INTO {OFFSETS} (job, tbl, rows) VALUES (?, ?, ?) "
                         f"ON CONFLICT (job, tbl) DO UPDATE SET rows = excluded.rows",
                         (self.job, self.table, self.done_rows + len(rows)))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise SluiceError(f"{self._where()}: cannot write: {exc}; nothing of this "
                              f"batch was written, rerun to resume") from None
        self.done_rows += len(rows)

    def write(self, batches: Iterator[Batch]) -> None:
        self.job = getattr(self.ctx, "job", "") or "standalone"
        self.conn = conn = self._connect()
        try:
            self._prepare(conn)
            done = self._position(conn)
            skip = done - self.restored
            if skip < 0:
                raise SluiceError(
                    f"{self._where()}: the database holds {done:,} rows of this job, fewer "
                    f"than the {self.restored:,} the checkpoint recorded (a row of "
                    f"{OFFSETS} or the table was changed); rerun with --fresh")
            self.done_rows = done
            if self.mode == "upsert":  # idempotent: every row again, the last one wins
                skip = self.done_rows = 0
            for batch in batches:
                rows = self._rows(batch)
                if skip:
                    cut = min(skip, len(rows))
                    rows, skip = rows[cut:], skip - cut
                self.pending += rows
                if len(self.pending) >= self.batch_rows:
                    self._commit()
            self._commit()
        finally:
            self.conn = None
            conn.close()
