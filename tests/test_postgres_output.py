"""postgres-output against a real PostgreSQL server (tests/pgserver.py: initdb and pg_ctl
in a temporary directory, 127.0.0.1): rows and inferred types, upsert, errors that name
the DSN (password masked), a connection killed mid-run, and SIGKILL at random moments:
the tables equal an uninterrupted run's, row for row."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from conftest import ROOT, cli, generate
from pgserver import wait_gone
from pipeline import Batch
from pipeline.errors import SluiceError
from pipeline.testing import Context
from stages.postgres_output import PostgresOutput, masked
from test_sqlite_output import FORK, PLAIN, kill_as_rows_arrive, records, write_log

MAIN = str(ROOT / "main.py")


@pytest.fixture
def server(pg):
    return pg


@pytest.fixture
def dsn(server):
    return server.create_database(f"t{uuid.uuid4().hex[:12]}")


def to_postgres(text, dsn):
    return (text.replace("sqlite-output: {path: out.db,", f"postgres-output: {{dsn: '{dsn}',")
            .replace("sqlite-output:\n            path: out.db",
                     f"postgres-output:\n            dsn: '{dsn}'")
            .replace("TEXT, records: INTEGER, total: INTEGER", "TEXT, records: BIGINT, "
                                                              "total: BIGINT"))


def table(dsn, name, order="ctid"):
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT * FROM {name} ORDER BY {order}").fetchall()


def run(tmp_path, text, *extra):
    (tmp_path / "p.yaml").write_text(text)
    return cli("-c", "p.yaml", "--state-dir", "s", *extra, cwd=tmp_path)


def test_rows_with_types_inferred_and_a_rerun_adds_nothing(tmp_path, dsn):
    write_log(tmp_path / "in.jsonl", [
        {"id": 1, "site": "a", "n": 2**70, "ok": True, "tags": [1, {"x": "é"}]},
        {"id": 2, "n": 3, "ok": False, "tags": None}])
    text = to_postgres(PLAIN.replace('if: "n % 3 <> 0"', "if: 'true'"), dsn)
    p = run(tmp_path, text)
    assert p.returncode == 0, p.stderr
    assert table(dsn, "rows", "id") == [(1, "a", str(2**70), True, '[1,{"x":"é"}]'),
                                        (2, None, "3", False, None)]  # n: TEXT, from 2**70
    with psycopg.connect(dsn) as conn:
        types = conn.execute("SELECT data_type FROM information_schema.columns WHERE "
                             "table_name = 'rows' ORDER BY ordinal_position").fetchall()
    assert [t for (t,) in types] == ["numeric", "text", "text", "boolean", "text"]
    assert run(tmp_path, text, "--fresh").returncode == 0
    assert len(table(dsn, "rows")) == 2


def test_a_fork_with_upsert_and_a_grown_input(tmp_path, dsn):
    write_log(tmp_path / "in.jsonl", records(3000, 1))
    text = to_postgres(FORK, dsn)
    assert run(tmp_path, text, "-w", "2").returncode == 0
    grown = records(3000, 1) + records(10, 2)
    write_log(tmp_path / "in.jsonl", grown)
    p = run(tmp_path, text)
    assert p.returncode == 0, p.stderr
    assert table(dsn, "rows", "ctid") == [(r["id"], r["site"], r["n"]) for r in grown]
    sums = {}
    for r in grown:
        sums[r["site"]] = sums.get(r["site"], 0) + r["n"]
    assert dict((s, t) for s, _, t in table(dsn, "sites")) == sums


@pytest.mark.parametrize("cfg_text, workers", [(PLAIN, "1"), (FORK, "2")])
def test_killed_as_rows_arrive_the_tables_hold_each_row_once(tmp_path, dsn, server,
                                                             cfg_text, workers):
    write_log(tmp_path / "in.jsonl", records(50_000, 5))
    ref_dsn = server.create_database(f"r{uuid.uuid4().hex[:12]}")
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "in.jsonl").write_bytes((tmp_path / "in.jsonl").read_bytes())
    assert run(ref, to_postgres(cfg_text, ref_dsn), "-w", workers).returncode == 0
    names = ["rows"] + (["sites"] if cfg_text is FORK else [])
    order = {"rows": "ctid", "sites": "site"}
    want = {name: table(ref_dsn, name, order[name]) for name in names}
    (tmp_path / "p.yaml").write_text(to_postgres(cfg_text, dsn))

    def count():
        with psycopg.connect(dsn) as conn:
            return conn.execute("SELECT count(*) FROM rows").fetchone()[0]
    kills = kill_as_rows_arrive(tmp_path, workers, count, len(want["rows"]))
    assert kills >= 3
    for name in names:
        assert table(dsn, name, order[name]) == want[name], name


def test_a_connection_killed_mid_run_is_opened_again_and_nothing_is_lost(dsn):
    out = PostgresOutput(dsn=dsn, table="t", columns={"i": "BIGINT"}, batch_rows=100)
    out.open(Context())
    killed = []

    def batches():
        for k in range(10):
            yield Batch([{"i": i} for i in range(k * 250, (k + 1) * 250)])
            if k in (3, 6):  # its backend goes away between two commits
                pid = out.conn.info.backend_pid
                with psycopg.connect(dsn, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                killed.append(pid)
    out.write(batches())
    assert len(killed) == 2
    assert [i for (i,) in table(dsn, "t", "i")] == list(range(2500))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT \"rows\" FROM sluice_offsets").fetchone() == (2500,)


def test_a_server_that_is_down_or_a_wrong_login_is_one_line_with_the_password_masked(
        tmp_path, server):
    write_log(tmp_path / "in.jsonl", records(3, 1))
    for dsn, why in [
        (f"host=127.0.0.1 port={server.port + 1} user=sluice password=hunter2 dbname=x",
         f'connection to server at "127.0.0.1", port {server.port + 1} failed: '
         f"Connection refused"),
        (server.dsn().replace("user=sluice", "user=nobody password=hunter2"),
         f'connection to server at "127.0.0.1", port {server.port} failed: FATAL:  role '
         f'"nobody" does not exist')]:
        p = run(tmp_path, to_postgres(PLAIN, dsn))
        assert p.returncode == 2
        assert p.stderr.strip() == (
            f"sluice: error: postgres-output: table 'rows' at {masked(dsn)}: cannot "
            f"connect: {why}; check that the server runs and `dsn` (host, port, user, "
            f"password, dbname) is right")
        assert "hunter2" not in p.stderr and "password=***" in p.stderr


def test_a_table_with_other_columns_is_one_line(tmp_path, dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE rows (id BIGINT, site TEXT)")
    write_log(tmp_path / "in.jsonl", records(3, 1))
    p = run(tmp_path, to_postgres(PLAIN, dsn))
    assert p.returncode == 2
    assert p.stderr.strip() == (f"sluice: error: postgres-output: table 'rows' at "
                                f"{masked(dsn)} has columns (id, site), not 'n', 'ok', "
                                f"'tags': drop the table, add the column, or name another "
                                f"`table`")


def test_the_server_stops_when_the_test_process_dies(tmp_path):
    """The watchdog stops a server whose tests were killed, and removes its files."""
    code = ("import sys; sys.path.insert(0, %r); from pgserver import Server; "
            "s = Server().start(); print(s.port, s.root, flush=True); import os; "
            "os._exit(0)") % str(ROOT / "tests")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    port, root = p.stdout.split()
    assert wait_gone(int(port), 15)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and __import__("os").path.exists(root):
        time.sleep(0.1)
    assert not __import__("os").path.exists(root)


def test_a_connection_that_cannot_be_opened_again_stops_with_nothing_lost(dsn):
    out = PostgresOutput(dsn=dsn, table="t", columns={"i": "BIGINT"}, batch_rows=100,
                         retry={"attempts": 2, "max_seconds": 1})
    out.open(Context())

    def batches():
        yield Batch([{"i": i} for i in range(250)])
        out.dsn = dsn.replace("port=", "port=1")  # the server moved away
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (out.conn.info.backend_pid,))
        yield Batch([{"i": i} for i in range(250, 500)])
    with pytest.raises(SluiceError) as caught:
        out.write(batches())
    assert str(caught.value).startswith(
        f"postgres-output: table 't' at {masked(out.dsn)}: lost the connection (")
    assert str(caught.value).endswith(") and could not open it again (2 attempts, 1 s); "
                                      "nothing was lost: rerun to resume")
    committed = [i for (i,) in table(dsn, "t", "i")]
    with psycopg.connect(dsn) as conn:
        position = conn.execute("SELECT \"rows\" FROM sluice_offsets").fetchone()[0]
    assert committed == list(range(position)) and position == 250  # the first batch


@pytest.mark.parametrize("before, columns", [
    ("  - json-decode: {}\n", "[id, type, site_id]"),
    ("  - json-decode: {schema: object}\n", "[id, timestamp]"),
    ("  - json-decode: {}\n  - count: {field: type}\n", "[value, n]"),
    ("  - json-decode: {}\n  - site-state-reducer: {}\n", "[site, m, e, o, v]"),
])
def test_it_takes_every_kind_of_record(tmp_path, dsn, before, columns):
    """site-event and object records by field name, count and summary rows by position
    (test_contracts runs sqlite-output, which shares this, with every neighbour)."""
    generate(tmp_path / "in.jsonl", 300, 3)
    p = run(tmp_path, "pipeline:\n  - file-input: {path: in.jsonl}\n" + before +
            f"  - postgres-output: {{dsn: '{dsn}', table: t, columns: {columns}}}\n")
    assert p.returncode == 0, p.stderr
    got = table(dsn, "t")
    assert got and all(len(row) == columns.count(",") + 1 for row in got)
