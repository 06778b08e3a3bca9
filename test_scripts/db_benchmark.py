#!/usr/bin/env python3
"""Benchmark the database outputs: rows/s into SQLite and PostgreSQL.

    python test_scripts/db_benchmark.py                      # 1M rows, 3 runs each
    python test_scripts/db_benchmark.py --rows 20000 --runs 1

It generates (or reuses) a JSON-lines file of `--rows` records (id, site, n, ok) and
runs, alternating, with default settings (2 workers where the machine has them):

    sqlite-insert    file-input -> json-decode -> sqlite-output (insert: executemany)
    sqlite-upsert    ... -> sqlite-output (upsert on id)
    postgres-insert  ... -> postgres-output (insert: COPY)
    postgres-upsert  ... -> postgres-output (upsert on id: COPY to a temporary table,
                     INSERT ... ON CONFLICT)
    jsonl            ... -> jsonl-output (the same run to a file, for scale)

PostgreSQL is a throwaway server started from the binaries on the machine
(tests/pgserver.py), fsync off; each run writes a fresh database. Prints each job's
walls, rows/s (median run) and peak RSS summed over all its processes (the server
excluded), and checks that every table holds every row once.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import ROOT, measure  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests"))
from pgserver import Server  # noqa: E402

DECODE = "  - file-input: {path: IN}\n  - json-decode: {schema: object}\n"
COLUMNS = "{id: BIGINT, site: TEXT, n: BIGINT, ok: BOOLEAN}"
JOBS = {
    "sqlite-insert": "  - sqlite-output: {path: DB, table: t, columns: [id, site, n, ok]}\n",
    "sqlite-upsert": ("  - sqlite-output: {path: DB, table: t, columns: [id, site, n, ok], "
                      "mode: upsert, key: [id]}\n"),
    "postgres-insert": f"  - postgres-output: {{dsn: DSN, table: t, columns: {COLUMNS}}}\n",
    "postgres-upsert": (f"  - postgres-output: {{dsn: DSN, table: t, columns: {COLUMNS}, "
                        f"mode: upsert, key: [id]}}\n"),
    "jsonl": "  - jsonl-output: {path: OUT}\n",
}


def generate(path: str, rows: int) -> None:
    rng = random.Random(1)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        for i in range(rows):
            fh.write(json.dumps({"id": i, "site": f"site-{rng.randint(0, 999)}",
                                 "n": rng.randint(0, 10**9), "ok": rng.random() < 0.5}) + "\n")
    os.replace(path + ".tmp", path)


def count(job: str, target: str) -> int:
    if job.startswith("sqlite"):
        with sqlite3.connect(target) as conn:
            return conn.execute("SELECT count(DISTINCT id) FROM t").fetchone()[0]
    if job.startswith("postgres"):
        import psycopg
        with psycopg.connect(target) as conn:
            return conn.execute("SELECT count(DISTINCT id) FROM t").fetchone()[0]
    with open(target, "rb") as fh:
        return sum(1 for _ in fh)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/sluice-db-bench")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    data = os.path.join(args.workdir, f"rows-{args.rows}.jsonl")
    if not os.path.exists(data):
        generate(data, args.rows)
    server = Server().start()
    runs: dict[str, list[dict]] = {job: [] for job in JOBS}
    complete = True
    try:
        for _ in range(args.runs):
            for job, stage in JOBS.items():
                db = os.path.join(args.workdir, "out.db")
                for leftover in (db, db + "-wal", db + "-shm"):
                    if os.path.exists(leftover):
                        os.unlink(leftover)
                target = {"sqlite": db, "jsonl": os.path.join(args.workdir, "out.jsonl")}.get(
                    job.split("-")[0]) or server.create_database(f"b{uuid.uuid4().hex[:10]}")
                config = os.path.join(args.workdir, f"{job}.yaml")
                with open(config, "w", encoding="utf-8") as fh:
                    fh.write("pipeline:\n" + DECODE.replace("IN", json.dumps(data)) +
                             stage.replace("DB", json.dumps(db)).replace(
                                 "DSN", json.dumps(target)).replace("OUT", json.dumps(target)))
                runs[job].append(measure([sys.executable, os.path.join(ROOT, "main.py"),
                                          "-c", config, "--state-dir",
                                          os.path.join(args.workdir, "state"), "--fresh",
                                          "-q"], os.devnull))
                got = count(job, target)
                if got != args.rows:
                    print(f"{job}: {got:,} rows, not {args.rows:,}")
                    complete = False
    finally:
        server.stop()
    print(f"{args.rows:,} rows, {args.runs} runs each, default settings")
    print(f"{'job':<16} {'walls s':<20} {'rows/s':>10} {'peak RSS MB':>12}")
    for job, rs in runs.items():
        walls = sorted(r["wall"] for r in rs)
        mid = walls[len(walls) // 2]
        print(f"{job:<16} {' '.join(f'{w:.1f}' for w in walls):<20} {args.rows / mid:>10,.0f} "
              f"{max(r['rss'] for r in rs) / 2**20:>12.0f}")
    print(f"every table holds every row once: {'yes' if complete else 'NO'}")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
