#!/usr/bin/env python3
"""The summary job as one DuckDB SQL query: the benchmark's yardstick.

    python test_scripts/duckdb_summary.py LOG > summary.txt

Same semantics as configs/summary.md on well-formed input (the benchmark's generated
logs have no broken lines); its looser validation is not a reference for bad input.
"""
from __future__ import annotations

import sys

QUERY = """
WITH ev AS (
    SELECT row_number() OVER () AS pos, id, "from" AS frm, type,
           CAST(site_id AS VARCHAR) AS site, "timestamp" AS ts, data->>'status' AS status
    FROM read_json(?, format = 'newline_delimited', ignore_errors = true,
                   columns = {'id': 'VARCHAR', 'from': 'VARCHAR', 'type': 'VARCHAR',
                              'site_id': 'VARCHAR', 'timestamp': 'DOUBLE', 'data': 'JSON'})
),
valid AS (
    SELECT * FROM ev
    WHERE id <> '' AND frm <> '' AND site <> '' AND isfinite(ts)
      AND (type = 'message' OR (type = 'status' AND status IN ('online', 'offline')))
),
firsts AS (
    SELECT * FROM valid QUALIFY row_number() OVER (PARTITION BY id ORDER BY pos) = 1
),
statuses AS (
    SELECT site, frm, ts, pos, (status = 'online')::INT AS is_on,
           coalesce(lag((status = 'online')::INT)
                    OVER (PARTITION BY site, frm ORDER BY ts, pos), 0) AS was_on
    FROM firsts WHERE type = 'status'
),
counts AS (
    SELECT site, ts, pos,
           sum(is_on - was_on) OVER (PARTITION BY site ORDER BY ts, pos
                                     ROWS UNBOUNDED PRECEDING) AS online
    FROM statuses
),
timeline AS (
    SELECT site, ts, 0 AS k, pos, online FROM counts
    UNION ALL
    SELECT site, ts, 1 AS k, pos, NULL FROM firsts WHERE type = 'message'
),
messages AS (
    -- statuses sort before messages at the same time (k), then file order
    SELECT site, k,
           coalesce(last_value(online IGNORE NULLS) OVER (
               PARTITION BY site ORDER BY ts, k, pos ROWS UNBOUNDED PRECEDING), 0) > 0 AS chat
    FROM timeline
)
SELECT f.site,
       coalesce(c.chats, 0), coalesce(c.emails, 0),
       count(DISTINCT f.frm) FILTER (WHERE f.type = 'status'),
       count(DISTINCT f.frm) FILTER (WHERE f.type = 'message')
FROM firsts f
LEFT JOIN (SELECT site, count(*) FILTER (WHERE chat) AS chats,
                  count(*) FILTER (WHERE NOT chat) AS emails
           FROM messages WHERE k = 1 GROUP BY site) c ON c.site = f.site
GROUP BY f.site, c.chats, c.emails
"""


def main(argv: list[str] | None = None) -> int:
    import duckdb

    args = sys.argv[1:] if argv is None else argv
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    rows = con.execute(QUERY, [args[0]]).fetchall()
    sys.stdout.write("".join(f"{s},messages={m},emails={e},operators={o},visitors={v}\n"
                             for s, m, e, o, v in sorted(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
