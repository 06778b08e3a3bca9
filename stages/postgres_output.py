"""postgres-output: rows into a PostgreSQL table (psycopg 3), exactly once across kills,
resumes and lost connections."""
from __future__ import annotations

import json
import time
from typing import Any

from pipeline import Option
from pipeline.errors import SluiceError

from .table_output import BATCH_ROWS, KEY, MODE, OFFSETS, TableOutput

RETRY_KEYS = ("attempts", "max_seconds")


def _retry_problem(value: Any) -> str | None:
    if not isinstance(value, dict) or any(k not in RETRY_KEYS for k in value):
        return f"must be {{attempts: N, max_seconds: S}}; got {value!r}"
    attempts, most = value.get("attempts", 5), value.get("max_seconds", 30)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 100:
        return f"`attempts` must be a whole number from 1 to 100; got {attempts!r}"
    if not isinstance(most, (int, float)) or isinstance(most, bool) or not 0 < most <= 3600:
        return f"`max_seconds` must be a number of seconds, above 0, at most 3600; got {most!r}"
    return None


def masked(dsn: str) -> str:
    """A DSN as it may be shown: its parts, the password as ***."""
    from psycopg.conninfo import conninfo_to_dict
    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 (psycopg.ProgrammingError: not a DSN)
        return "<a DSN that cannot be read>"
    if "password" in parts:
        parts["password"] = "***"
    return " ".join(f"{k}={v}" for k, v in parts.items())


def _lost(exc: BaseException) -> bool:
    """Whether an error means the connection is gone (try again), not a refused write."""
    import psycopg
    return isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, (psycopg.errors.QueryCanceled,))


class PostgresOutput(TableOutput):
    """Write records as rows of a PostgreSQL table (psycopg 3).

        - postgres-output:
            dsn: "host=127.0.0.1 port=5432 dbname=logs user=sluice"   # or postgresql://...
            table: per_minute
            columns: {window_start: BIGINT, response: TEXT, requests: BIGINT}
            mode: upsert            # or insert (the default)
            key: [window_start, response]
            retry: {attempts: 5, max_seconds: 30}

    As sqlite-output (see stages/table_output.py): columns by name or position, insert
    or upsert, and exactly once through the table `sluice_offsets`, written in the same
    transaction as the rows. A list of `columns` creates a missing table with types from
    the first batch's values: BOOLEAN if all are bools, NUMERIC if all are numbers, else
    TEXT. A value for a text column that is not text goes in as its JSON text (true,
    1.5, [1,2]), as csv-output writes it. Rows go in by COPY; upsert copies them to a temporary table and inserts
    from it with ON CONFLICT, the last row of a key in a batch winning.

    A connection lost while writing is opened again, up to `retry.attempts` times,
    waiting 0.5 s, then twice as long each time, at most `retry.max_seconds` in all;
    the job's position in `sluice_offsets` says whether the interrupted commit went
    through, so nothing is written twice or lost. Then the run stops (exit 2): a rerun
    resumes.
    """

    name = "postgres-output"
    TYPES = ("TEXT", "BIGINT", "INTEGER", "SMALLINT", "DOUBLE PRECISION", "REAL", "NUMERIC",
             "BOOLEAN", "JSONB", "JSON", "TIMESTAMPTZ", "DATE", "BYTEA")
    options = (
        Option("dsn", str, doc="libpq connection string or postgresql:// URI"),
        Option("table", str, doc="the table (created if missing), in the current schema"),
        Option("columns", (list, dict), doc="column names in order, or {name: SQL type}"),
        MODE, KEY, BATCH_ROWS,
        Option("retry", dict, None, "on a lost connection: {attempts: 5, max_seconds: 30}",
               check=_retry_problem),
    )
    loads = ("psycopg",)
    text_at: list[int] = []  # the text columns' positions (see prepare)

    @classmethod
    def destinations(cls, options: dict[str, Any]) -> list[str]:
        return [f"postgres:{options.get('dsn')}#{options.get('table')}"]

    def describe(self) -> str:
        return f"{self.name}({self.table})"

    def where(self) -> str:
        return f"postgres-output: table {self.table!r} at {masked(self.dsn)}"

    def _id(self, name: str) -> Any:
        from psycopg import sql
        return sql.Identifier(name)

    # -- connecting -------------------------------------------------------------------
    def connect(self) -> Any:
        import psycopg
        try:
            return psycopg.connect(self.dsn, autocommit=False, connect_timeout=10)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = first.removeprefix("connection failed: ")
            raise SluiceError(f"{self.where()}: cannot connect: {first}; check that the "
                              f"server runs and `dsn` (host, port, user, password, dbname) "
                              f"is right") from None
        except Exception as exc:  # noqa: BLE001 (a DSN psycopg cannot parse)
            raise SluiceError(f"{self.where()}: cannot connect: {exc}") from None

    def _reconnect(self, why: BaseException) -> None:
        """After a lost connection: open another, waiting longer each time; SluiceError
        once the attempts or the seconds run out."""
        retry = self.retry or {}
        attempts, most = retry.get("attempts", 5), retry.get("max_seconds", 30)
        start, wait = time.monotonic(), 0.5
        for attempt in range(attempts):
            time.sleep(min(wait, max(0.0, start + most - time.monotonic())))
            wait *= 2
            try:
                self.close_connection(self.conn)
                self.conn = self.connect()
                return
            except SluiceError:
                if time.monotonic() - start >= most or attempt == attempts - 1:
                    break
        first = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
        raise SluiceError(f"{self.where()}: lost the connection ({first}) and could not "
                          f"open it again ({attempts} attempts, {most} s); nothing was lost: "
                          f"rerun to resume")

    def close_connection(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 (closing a broken connection)
            pass

    # -- the table ----------------------------------------------------------------------
    def prepare(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        import psycopg
        from psycopg import sql
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {OFFSETS} (job TEXT NOT NULL, "
                         f"tbl TEXT NOT NULL, \"rows\" BIGINT NOT NULL, PRIMARY KEY (job, tbl))")
            found = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE "
                "table_schema = current_schema() AND table_name = %s ORDER BY "
                "ordinal_position", (self.table,)).fetchall()
            have = [name for name, _ in found]
            kinds = dict(found)
            if not have:
                types = [self.types.get(n) or _inferred(rows, i)
                         for i, n in enumerate(self.names)]
                cols = sql.SQL(", ").join(sql.SQL("{} {}").format(self._id(n), sql.SQL(t))
                                          for n, t in zip(self.names, types))
                key = (sql.SQL(", PRIMARY KEY ({})").format(
                    sql.SQL(", ").join(map(self._id, self.key)))
                    if self.mode == "upsert" else sql.SQL(""))
                conn.execute(sql.SQL("CREATE TABLE {} ({}{})").format(
                    self._id(self.table), cols, key))
                conn.commit()
                self.text_at = [i for i, t in enumerate(types) if t.upper() == "TEXT"]
                return
            self.text_at = [i for i, n in enumerate(self.names)
                            if kinds.get(n) in ("text", "character varying", "character")]
            unique = self.mode != "upsert" or self._unique(conn)
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            raise SluiceError(f"{self.where()}: {str(exc).strip().splitlines()[0]}") from None
        problem = self.not_fitting(have, unique)
        if problem:
            raise SluiceError(problem)

    def _unique(self, conn: Any) -> bool:
        rows = conn.execute(
            "SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a ON "
            "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = "
            "to_regclass(quote_ident(%s)) AND i.indisunique GROUP BY i.indexrelid",
            (self.table,)).fetchall()
        return any(set(r[0]) == set(self.key) for r in rows)

    def position(self, conn: Any) -> int:
        row = conn.execute(f"SELECT \"rows\" FROM {OFFSETS} WHERE job = %s AND tbl = %s",
                           (self.job, self.table)).fetchone()
        conn.commit()
        return row[0] if row else 0

    # -- writing ----------------------------------------------------------------------
    def commit_rows(self, conn: Any, rows: list[tuple[Any, ...]], position: int) -> None:
        import psycopg
        while True:
            try:
                self._transaction(self.conn, rows, position)
                return
            except psycopg.Error as exc:
                if not _lost(exc):
                    try:
                        self.conn.rollback()
                    except psycopg.Error:
                        pass
                    first = str(exc).strip().splitlines()[0]
                    raise SluiceError(f"{self.where()}: cannot write: {first}; nothing of "
                                      f"this batch was written") from None
                self._reconnect(exc)
                if self.mode == "insert" and self.position(self.conn) == position:
                    return  # the commit went through before the connection was lost

    def _transaction(self, conn: Any, rows: list[tuple[Any, ...]], position: int) -> None:
        from psycopg import sql
        cols = sql.SQL(", ").join(map(self._id, self.names))
        with conn.cursor() as cur:
            if self.mode == "insert":
                target = self._id(self.table)
            else:
                cur.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS sluice_staging "
                                    "(LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                                    ).format(self._id(self.table)))
                target = sql.Identifier("sluice_staging")
                rows = _last_per_key(rows, [self.names.index(k) for k in self.key])
            if self.text_at:
                rows = _texts(rows, self.text_at)
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, cols)) as copy:
                for row in rows:
                    copy.write_row(row)
            if self.mode == "upsert":
                cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM sluice_staging" +
                                    self.upsert_clause(lambda n: '"' + n + '"')).format(
                    self._id(self.table), cols, cols))
            cur.execute(f"INSERT INTO {OFFSETS} (job, tbl, \"rows\") VALUES (%s, %s, %s) "
                        f"ON CONFLICT (job, tbl) DO UPDATE SET \"rows\" = excluded.\"rows\"",
                        (self.job, self.table, position))
        conn.commit()


def _inferred(rows: list[tuple[Any, ...]], i: int) -> str:
    """A column's type from its values in the first batch: BOOLEAN if all are bools,
    NUMERIC if all are numbers (exact for ints and floats alike: a float after a run of
    ints still fits), else TEXT (a value of another type as its JSON text)."""
    kinds = {type(row[i]) for row in rows if row[i] is not None}
    if kinds == {bool}:
        return "BOOLEAN"
    if kinds and kinds <= {int, float}:
        return "NUMERIC"
    return "TEXT"


def _texts(rows: list[tuple[Any, ...]], at: list[int]) -> list[tuple[Any, ...]]:
    """Rows with the values of text columns `at` that are not text as their JSON text
    (true, 1.5), as the file outputs write them."""
    out = []
    for row in rows:
        row = list(row)
        for i in at:
            v = row[i]
            if v is not None and v.__class__ is not str:
                row[i] = json.dumps(v)
        out.append(tuple(row))
    return out


def _last_per_key(rows: list[tuple[Any, ...]], at: list[int]) -> list[tuple[Any, ...]]:
    """One row per key, the last one given (ON CONFLICT cannot touch a row twice)."""
    last: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        last[tuple(row[i] for i in at)] = row
    return list(last.values())
