"""sqlite-output: rows, types, upsert, errors that say what to do, and exactly once:
killed (SIGKILL) at random moments and rerun, the tables equal an uninterrupted run's
row for row, for a plain chain, a fork with an aggregate branch, and 2 workers."""
from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, cli

MAIN = str(ROOT / "main.py")


def records(n, seed):
    rng = random.Random(seed)
    return [{"id": i, "site": f"s{rng.randint(0, 30)}", "n": rng.randint(0, 10**6),
             "ok": rng.random() < 0.5, "tags": [rng.randint(0, 3)]} for i in range(n)]


def write_log(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def table(db, name):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT * FROM {name} ORDER BY rowid").fetchall()
    finally:
        conn.close()


PLAIN = """pipeline:
  - file-input: {path: in.jsonl, block_size: 65536}
  - json-decode: {schema: object}
  - where: {if: "n % 3 <> 0"}
  - sqlite-output: {path: out.db, table: rows, columns: [id, site, n, ok, tags],
                    batch_rows: 700}
"""
FORK = """pipeline:
  - file-input: {path: in.jsonl, block_size: 65536}
  - json-decode: {schema: object}
  - fork:
      raw:
        - sqlite-output: {path: out.db, table: rows, columns: [id, site, n]}
      sites:
        - aggregate: {by: [site], metrics: {records: count, total: sum(n)}}
        - sqlite-output:
            path: out.db
            table: sites
            columns: {site: TEXT, records: INTEGER, total: INTEGER}
            mode: upsert
            key: [site]
"""


def run(tmp_path, cfg_text, *extra, env=None):
    (tmp_path / "p.yaml").write_text(cfg_text)
    return cli("-c", "p.yaml", "--state-dir", "s", *extra, cwd=tmp_path, env=env)


def test_rows_and_values_as_sqlite_stores_them(tmp_path):
    write_log(tmp_path / "in.jsonl", [
        {"id": 1, "site": "a", "n": 2**70, "ok": True, "tags": [1, {"x": "é"}]},
        {"id": 2, "n": 1.5, "ok": False, "tags": None}])
    p = run(tmp_path, PLAIN.replace('if: "n % 3 <> 0"', "if: 'true'"))
    assert p.returncode == 0, p.stderr
    assert table(tmp_path / "out.db", "rows") == [
        (1, "a", str(2**70), 1, '[1,{"x":"é"}]'), (2, None, 1.5, 0, None)]


def test_a_finished_job_rerun_adds_nothing_and_upsert_replaces(tmp_path):
    write_log(tmp_path / "in.jsonl", records(3000, 1))
    p = run(tmp_path, FORK, "-w", "1")
    assert p.returncode == 0, p.stderr
    db = tmp_path / "out.db"
    first = (table(db, "rows"), table(db, "sites"))
    assert len(first[0]) == 3000 and len(first[1]) == 31
    for extra in ((), ("--fresh",)):  # resumed as finished, and started over
        assert run(tmp_path, FORK, *extra).returncode == 0
        assert (table(db, "rows"), table(db, "sites")) == first
    offsets = sqlite3.connect(db).execute("SELECT tbl, rows FROM sluice_offsets "
                                          "ORDER BY tbl").fetchall()
    assert offsets == [("rows", 3000), ("sites", 31)]
    # the input grew: the same job goes on (its 10 new rows); upsert replaces the sums
    grown = records(3000, 1) + records(10, 2)
    write_log(tmp_path / "in.jsonl", grown)
    assert run(tmp_path, FORK).returncode == 0
    assert table(db, "rows") == first[0] + [(r["id"], r["site"], r["n"]) for r in grown[3000:]]
    sites = {s: sum(r["n"] for r in grown if r["site"] == s) for _, s, _ in first[0]}
    assert sorted((s, t) for s, _, t in table(db, "sites")) == sorted(sites.items())
    # another job (the config changed) writes its rows again: insert adds, upsert replaces
    assert run(tmp_path, FORK.replace("total: sum(n)}", "total: sum(n), x: count}")
               ).returncode == 0
    assert len(table(db, "rows")) == 2 * 3010 and len(table(db, "sites")) == 31


def kill_as_rows_arrive(cwd, workers, count, total, fractions=(0.2, 0.5, 0.8)):
    """Run the job again and again, SIGKILLing it once `count()` rows reach each of the
    `fractions` of `total` (mid-write, however fast the machine), then to its end.
    Returns the number of kills."""
    kills = 0
    for fraction in (*fractions, None):
        proc = subprocess.Popen([sys.executable, MAIN, "-c", "p.yaml", "--state-dir", "s",
                                 "-w", workers, "--checkpoint-every", "5000", "-q"],
                                cwd=cwd, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while fraction is not None and proc.poll() is None and time.monotonic() < deadline:
            try:
                if count() >= fraction * total:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    break
            except Exception:  # noqa: BLE001 (the table is not there yet)
                pass
            time.sleep(0.01)
        _, err = proc.communicate(timeout=120)
        if fraction is None:
            assert proc.returncode == 0, err.decode()
    return kills


def row_count(db, name):
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("cfg_text, workers", [(PLAIN, "1"), (FORK, "2")])
def test_killed_as_rows_arrive_the_tables_hold_each_row_once(tmp_path, cfg_text, workers):
    write_log(tmp_path / "in.jsonl", records(50_000, 3))
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "in.jsonl").write_bytes((tmp_path / "in.jsonl").read_bytes())
    assert run(ref, cfg_text, "-w", workers).returncode == 0
    names = ["rows"] + (["sites"] if cfg_text is FORK else [])
    want = {name: table(ref / "out.db", name) for name in names}
    (tmp_path / "p.yaml").write_text(cfg_text)
    kills = kill_as_rows_arrive(tmp_path, workers, lambda: row_count(tmp_path / "out.db",
                                                                     "rows"),
                                len(want["rows"]))
    assert kills >= 3
    for name in names:
        assert table(tmp_path / "out.db", name) == want[name], name


@pytest.mark.parametrize("setup, cfg_change, message", [
    ("CREATE TABLE rows (id INTEGER, site TEXT)", None,
     "sluice: error: sqlite-output: table 'rows' in out.db has columns (id, site), not 'n', "
     "'ok', 'tags': drop the table, add the column, or name another `table`"),
    ("CREATE TABLE sites (site TEXT, records INTEGER, total INTEGER)", "upsert",
     "sluice: error: sqlite-output: table 'sites' in out.db has no unique index on (site), "
     "which mode: upsert needs: CREATE UNIQUE INDEX ... ON sites (site), or name another "
     "`table`"),
])
def test_a_table_that_does_not_fit_is_one_line_and_exit_2(tmp_path, setup, cfg_change,
                                                          message):
    write_log(tmp_path / "in.jsonl", records(10, 1))
    conn = sqlite3.connect(tmp_path / "out.db")
    conn.execute(setup)
    conn.commit()
    conn.close()
    text = PLAIN if cfg_change is None else FORK.replace("table: rows", "table: other")
    p = run(tmp_path, text)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == message


@pytest.mark.parametrize("options, problem", [
    ("{path: o.db, table: t, columns: [a], mode: upsert}",
     "`mode: upsert` needs `key`: the columns that identify a row"),
    ("{path: o.db, table: 'drop table', columns: [a]}",
     "`table` must be a plain SQL name (letters, digits, _); got 'drop table'"),
    ("{path: o.db, table: t, columns: {a: VARCHAR}}",
     "column 'a': the type must be one of INTEGER, REAL, TEXT, BLOB, NUMERIC, ANY; got "
     "'VARCHAR'"),
    ("{path: o.db, table: t, columns: [a], mode: upsert, key: [b]}",
     "`key` column 'b' is not among `columns`"),
])
def test_config_mistakes_name_the_option(tmp_path, options, problem):
    p = run(tmp_path, "pipeline:\n  - file-input: {path: in.jsonl}\n"
                      "  - json-decode: {schema: object}\n"
                      f"  - sqlite-output: {options}\n")
    assert p.returncode == 2
    assert p.stderr.strip() == f"sluice: error: p.yaml:4: stage 'sqlite-output': {problem}"


def test_a_folder_that_does_not_exist_is_one_line(tmp_path):
    write_log(tmp_path / "in.jsonl", records(3, 1))
    p = run(tmp_path, PLAIN.replace("path: out.db", "path: nowhere/out.db"))
    assert p.returncode == 2
    assert p.stderr.strip() == (f"sluice: error: sqlite-output: table 'rows' in "
                                f"nowhere/out.db: the folder {tmp_path / 'nowhere'} does "
                                f"not exist")


FOLLOW = """pipeline:
  - file-input: {path: in.jsonl}
  - json-decode: {schema: object}
  - fork:
      windows:
        - count: {field: site, window: {field: t, size: 10, allowed_lateness: 5}}
        - sqlite-output: {path: out.db, table: windows, columns: [ws, we, site, n]}
      totals:
        - aggregate: {by: [site], metrics: {n: count}}
        - sqlite-output: {path: out.db, table: totals, columns: [site, n], mode: upsert,
                          key: [site]}
"""


def test_a_followed_run_inserts_each_window_once_and_upserts_totals_across_kills(tmp_path):
    """Emissions every 0.2 s, SIGKILL and SIGTERM mid-stream: each window is a row once
    (insert), the totals are the whole log's (upsert)."""
    rng = random.Random(8)
    recs = [{"t": i // 20 + rng.choice([0, 0, -3]), "site": f"s{rng.randint(0, 4)}"}
            for i in range(3000)]
    log = tmp_path / "in.jsonl"
    log.write_text("")
    (tmp_path / "p.yaml").write_text(FOLLOW)

    def start():
        return subprocess.Popen([sys.executable, MAIN, "-c", "p.yaml", "--state-dir", "s",
                                 "--follow", "--emit-every", "0.2", "--checkpoint-every",
                                 "400"], cwd=tmp_path, stderr=subprocess.PIPE)
    proc = start()
    for k in range(0, 3000, 250):
        with open(log, "a") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in recs[k:k + 250]))
        time.sleep(0.3)
        if k in (750, 1750):
            time.sleep(1.0)
            proc.send_signal(signal.SIGKILL if k == 750 else signal.SIGTERM)
            proc.communicate(timeout=30)
            proc = start()
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    latest, counts = -1, {}
    for r in recs:  # the followed answer, the plain way (none is late: 3 s < 5 s)
        counts[(r["t"] // 10 * 10, r["site"])] = counts.get((r["t"] // 10 * 10, r["site"]), 0) + 1
        latest = max(latest, r["t"])
    closed = sorted((s, s + 10, site, n) for (s, site), n in counts.items()
                    if s + 10 <= latest - 5)
    assert sorted(table(tmp_path / "out.db", "windows")) == closed
    totals = {}
    for r in recs:
        totals[r["site"]] = totals.get(r["site"], 0) + 1
    assert dict(table(tmp_path / "out.db", "totals")) == totals


def test_follow_refuses_inserting_a_result_that_changes(tmp_path):
    (tmp_path / "in.jsonl").write_text("")
    (tmp_path / "p.yaml").write_text(FOLLOW.replace(", mode: upsert,\n"
                                                    "                          key: [site]",
                                                    ""))
    p = cli("-c", "p.yaml", "--follow", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == (
        "sluice: error: --follow: sqlite-output (line 10) inserts rows, and aggregate (line 9) "
        "shows a result that changes while the log grows: each emission would insert it "
        "again; give sqlite-output `mode: upsert` and `key`, or aggregate a `window` (a "
        "window's rows never change)")
