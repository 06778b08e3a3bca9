"""sqlite-output: rows into a SQLite table, exactly once across kills and resumes."""
from __future__ import annotations

import os
import sqlite3
from typing import Any

from pipeline import Option, a_path
from pipeline.errors import PathError, SluiceError

from .table_output import BATCH_ROWS, KEY, MODE, OFFSETS, TableOutput


def _q(name: str) -> str:
    """A name quoted for SQL: a column may be called `from` or `order`."""
    return '"' + name + '"'


class SqliteOutput(TableOutput):
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
    TYPES = ("INTEGER", "REAL", "TEXT", "BLOB", "NUMERIC", "ANY")
    options = (
        Option("path", str, doc="the SQLite database file (created if missing)",
               check=a_path),
        Option("table", str, doc="the table (created if missing)"),
        Option("columns", (list, dict), doc="column names in order, or {name: SQL type}"),
        MODE, KEY, BATCH_ROWS,
    )

    @classmethod
    def destinations(cls, options: dict[str, Any]) -> list[str]:
        return [f"{options.get('path')}#{options.get('table')}"]

    def describe(self) -> str:
        return f"{self.name}({self.path}, table {self.table})"

    def where(self) -> str:
        return f"sqlite-output: table {self.table!r} in {self.path}"

    def connect(self) -> sqlite3.Connection:
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise PathError(f"{self.where()}: the folder {folder} does not exist")
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)  # (checkpoints: another thread)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise PathError(f"{self.where()}: cannot open the database: {exc}") from None
        return conn

    def prepare(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {OFFSETS} (job TEXT NOT NULL, "
                         f"tbl TEXT NOT NULL, rows INTEGER NOT NULL, PRIMARY KEY (job, tbl))")
            have = [r[1] for r in conn.execute(f"PRAGMA table_info({_q(self.table)})")]
            if not have:
                cols = ", ".join(f"{_q(n)} {self.types.get(n, '')}".rstrip()
                                 for n in self.names)
                key = (f", PRIMARY KEY ({', '.join(map(_q, self.key))})"
                       if self.mode == "upsert" else "")
                conn.execute(f"CREATE TABLE {_q(self.table)} ({cols}{key})")
                return
            problem = self.not_fitting(have, self.mode != "upsert" or self._unique(conn))
        except sqlite3.Error as exc:
            raise SluiceError(f"{self.where()}: {exc}") from None
        if problem:
            raise SluiceError(problem)

    def _unique(self, conn: sqlite3.Connection) -> bool:
        for row in conn.execute(f"PRAGMA index_list({_q(self.table)})"):
            if row[2]:  # unique
                cols = {r[2] for r in conn.execute(f"PRAGMA index_info({_q(row[1])})")}
                if cols == set(self.key):
                    return True
        return False

    def position(self, conn: sqlite3.Connection) -> int:
        row = conn.execute(f"SELECT rows FROM {OFFSETS} WHERE job = ? AND tbl = ?",
                           (self.job, self.table)).fetchone()
        return row[0] if row else 0

    def commit_rows(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]],
                    position: int) -> None:
        cols = ", ".join(map(_q, self.names))
        sql = (f"INSERT INTO {_q(self.table)} ({cols}) "
               f"VALUES ({', '.join('?' * len(self.names))})")
        if self.mode == "upsert":
            sql += self.upsert_clause(_q)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute(f"INSERT INTO {OFFSETS} (job, tbl, rows) VALUES (?, ?, ?) "
                         f"ON CONFLICT (job, tbl) DO UPDATE SET rows = excluded.rows",
                         (self.job, self.table, position))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise SluiceError(f"{self.where()}: cannot write: {exc}; nothing of this "
                              f"batch was written, rerun to resume") from None
