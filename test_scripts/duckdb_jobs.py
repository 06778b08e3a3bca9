#!/usr/bin/env python3
"""Sluice's framework benchmark jobs as DuckDB queries: the yardstick for benchmark.py.

    python test_scripts/duckdb_jobs.py JOB LOG OUT

JOB is one of:

    aggregate   the first record of each id (file order), grouped by (site_id, type):
                count, count of distinct senders, min and max timestamp; CSV
    count       the first record of each id, counted by type; CSV
    filter      the messages, reshaped as configs/mutate.yaml does; JSON lines
    where-if    the messages of senders whose name starts with visitor1; JSON lines
    compute     every record with its hour of the day and whether it is a status
    stats       per site: count, avg(timestamp), quantile_disc(timestamp, 0.95); CSV
    route       statuses to OUT.statuses, else the messages of visitor1* senders to
                OUT.visitors, else the rest to OUT.rest (the log is read once)

It writes OUT the way the Sluice pipeline does (a CSV with a header, or JSON lines in
file order), so both sides pay for writing their answer. Same semantics as the Sluice
pipelines on well-formed input (the generated logs); not a reference for bad input.
"""
from __future__ import annotations

import sys

SOURCE = """read_json(?, format = 'newline_delimited', ignore_errors = true,
                   columns = {'id': 'VARCHAR', 'from': 'VARCHAR', 'type': 'VARCHAR',
                              'site_id': 'JSON', 'timestamp': 'JSON'})"""
FIRSTS = f"""
WITH ev AS (SELECT row_number() OVER () AS pos, * FROM {SOURCE}),
firsts AS (SELECT * FROM ev QUALIFY row_number() OVER (PARTITION BY id ORDER BY pos) = 1)
"""
QUERIES = {
    "aggregate": FIRSTS + """
SELECT site_id->>'$' AS site_id, type, count(*) AS records,
       count(DISTINCT "from") AS senders, min(CAST("timestamp" AS DOUBLE)) AS first,
       max(CAST("timestamp" AS DOUBLE)) AS last
FROM firsts GROUP BY site_id, type ORDER BY site_id, type""",
    "count": FIRSTS + """
SELECT type, count(*) AS count FROM firsts GROUP BY type ORDER BY type""",
    "filter": f"""
SELECT id, "from" AS sender, type, site_id->>'$' AS site_id, "timestamp",
       'chat-log' AS source
FROM {SOURCE} WHERE type = 'message'""",
    "where-if": f"""
SELECT * FROM {SOURCE.replace("'timestamp': 'JSON'", "'timestamp': 'JSON', 'data': 'JSON'")}
WHERE type = 'message' AND starts_with("from", 'visitor1')""",
    "stats": f"""
SELECT site_id->>'$' AS site_id, count(*) AS records,
       avg(CAST("timestamp" AS DOUBLE)) AS mean,
       quantile_disc(CAST("timestamp" AS DOUBLE), 0.95) AS p95
FROM {SOURCE} GROUP BY site_id ORDER BY site_id""",
    "compute": f"""
SELECT *, floor(CAST("timestamp" AS DOUBLE) / 3600) % 24 AS hour, type = 'status' AS is_status
FROM {SOURCE.replace("'timestamp': 'JSON'", "'timestamp': 'JSON', 'data': 'JSON'")}""",
    "route": f"""
SELECT row_number() OVER () AS pos, *
FROM {SOURCE.replace("'timestamp': 'JSON'", "'timestamp': 'JSON', 'data': 'JSON'")}""",
}
ROUTES = [  # route's branches, in order (mode first): each takes what the ones before left
    (".statuses", "type = 'status'"),
    (".visitors", "type IS DISTINCT FROM 'status' AND starts_with(\"from\", 'visitor1')"),
    (".rest", "type IS DISTINCT FROM 'status' AND "
              "NOT coalesce(starts_with(\"from\", 'visitor1'), false)"),
]


def main(argv: list[str] | None = None) -> int:
    import duckdb

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in QUERIES:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    job, log, out = args
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    fmt = "FORMAT CSV, HEADER" if job in ("aggregate", "count", "stats") else "FORMAT JSON"
    query = QUERIES[job].replace("?", "$log")
    if job == "route":  # read once, then each branch's records to its file, in order
        con.execute(f"CREATE TEMP TABLE ev AS {query}", {"log": log})
        for suffix, where in ROUTES:
            target = (out + suffix).replace("'", "''")
            con.execute(f"COPY (SELECT * EXCLUDE (pos) FROM ev WHERE {where} ORDER BY pos) "
                        f"TO '{target}' ({fmt})")
        return 0
    target = out.replace("'", "''")
    con.execute(f"COPY ({query}) TO '{target}' ({fmt})", {"log": log})
    return 0


if __name__ == "__main__":
    sys.exit(main())
