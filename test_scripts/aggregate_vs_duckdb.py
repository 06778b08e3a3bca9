#!/usr/bin/env python3
"""Check the aggregate stage against a DuckDB GROUP BY on a generated log.

    python test_scripts/aggregate_vs_duckdb.py --lines 1000000
    python test_scripts/aggregate_vs_duckdb.py --log chat.jsonl --workers 1,3 --squeeze-kb 16

The pipeline: json-decode (site-event), `dedupe: {field: id}`, then `aggregate` by
(site_id, type) with count, count_distinct(from), min, max and sum of timestamp, written
as JSON lines. DuckDB computes the same over the first record of each id in file
order, with GROUP BY. Sluice runs once per worker count in --workers (and once more
each with SLUICE_TEST_BUCKET_KB set when --squeeze-kb is given, which forces tiny
buckets). Every run must equal DuckDB exactly:

- the groups and their order: site ids by value, integers before strings (typed JSON
  values: 123 and "123" are different sites), then type;
- counts and distinct counts;
- min and max as numbers;
- sum: an int equal to DuckDB's HUGEINT sum when the group has only integer
  timestamps, else a float equal to the exact sum of DuckDB's doubles (Python
  Fractions) rounded once.

Prints each run's wall time; exits 1 on any difference (listing the first ones),
0 when every run is equal.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
pipeline:
  - file-input:
      path: {path}
  - json-decode:
      schema: site-event
  - dedupe:
      field: id
  - aggregate:
      by: [site_id, type]
      metrics:
        records: count
        senders: count_distinct(from)
        first: min(timestamp)
        last: max(timestamp)
        total: sum(timestamp)
  - jsonl-output:
      path: "-"
"""

QUERY = """
WITH ev AS (
    SELECT row_number() OVER () AS pos, id, "from" AS frm, type, site_id, "timestamp" AS ts
    FROM read_json(?, format = 'newline_delimited',
                   columns = {'id': 'VARCHAR', 'from': 'VARCHAR', 'type': 'VARCHAR',
                              'site_id': 'JSON', 'timestamp': 'JSON'})
),
firsts AS (
    SELECT * FROM ev QUALIFY row_number() OVER (PARTITION BY id ORDER BY pos) = 1
)
SELECT CAST(site_id AS VARCHAR), type, count(*), count(DISTINCT frm),
       min(CAST(ts AS DOUBLE)), max(CAST(ts AS DOUBLE)),
       coalesce(sum(CAST(ts AS HUGEINT)) FILTER (WHERE json_type(ts) <> 'DOUBLE'), 0),
       list(CAST(ts AS DOUBLE)) FILTER (WHERE json_type(ts) = 'DOUBLE')
FROM firsts
GROUP BY site_id, type
"""


def duckdb_groups(log: str) -> list[dict[str, Any]]:
    """One dict per group, as aggregate should emit it, in aggregate's order."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    out = []
    for site, typ, n, senders, first, last, ints, floats in con.execute(QUERY, [log]).fetchall():
        if floats:
            total: Any = float(Fraction(int(ints)) + sum(map(Fraction, floats)))
        else:
            total = int(ints)
        out.append({"site_id": json.loads(site), "type": typ, "records": n,
                    "senders": senders, "first": first, "last": last, "total": total})
    out.sort(key=lambda g: (isinstance(g["site_id"], str), g["site_id"], g["type"]))
    return out


def sluice_groups(log: str, workers: int, squeeze_kb: int | None,
                  work: str) -> tuple[list[dict[str, Any]], float]:
    """aggregate's groups from one `python main.py` run, and its wall seconds."""
    config = os.path.join(work, "aggregate.yaml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(CONFIG.format(path=json.dumps(log)))
    env = dict(os.environ)
    env.pop("SLUICE_TEST_BUCKET_KB", None)
    if squeeze_kb:
        env["SLUICE_TEST_BUCKET_KB"] = str(squeeze_kb)
    state = os.path.join(work, f"state-w{workers}-k{squeeze_kb or 0}")
    start = time.perf_counter()
    p = subprocess.run([sys.executable, str(ROOT / "main.py"), "-c", config, "-f", log,
                        "-w", str(workers), "--state-dir", state, "-q"],
                       capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if p.returncode != 0:
        raise RuntimeError(f"sluice exited {p.returncode}: {p.stderr.strip()}")
    return [json.loads(line) for line in p.stdout.splitlines()], seconds


def differences(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> list[str]:
    """What differs, one line each (empty when equal)."""
    problems = []
    if len(expected) != len(got):
        problems.append(f"{len(got)} groups; DuckDB has {len(expected)}")
    for want, have in zip(expected, got):
        where = f"group ({want['site_id']!r}, {want['type']!r})"
        if list(have) != list(want):
            problems.append(f"{where}: fields {list(have)}; expected {list(want)}")
            continue
        for k, v in want.items():
            h = have[k]
            same = h == v and (k != "total" or type(h) is type(v))
            if k in ("site_id", "type") and type(h) is not type(v):
                same = False
            if not same:
                problems.append(f"{where}: {k} = {h!r}; DuckDB says {v!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000, help="lines to generate")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--log", help="use this log instead of generating one")
    p.add_argument("--workers", default="1,3", help="comma-separated worker counts")
    p.add_argument("--squeeze-kb", type=int, default=None,
                   help="also run each worker count with SLUICE_TEST_BUCKET_KB=N")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sluice-agg-") as work:
        log = args.log
        if log is None:
            log = os.path.join(work, "log.jsonl")
            t = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "test_scripts" / "generate.py"),
                            "--lines", str(args.lines), "--seed", str(args.seed),
                            "--mixed-site-ids", "--conflicting-dups", "-o", log], check=True)
            print(f"generated {args.lines:,} lines in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        expected = duckdb_groups(log)
        print(f"duckdb: {len(expected):,} groups in {time.perf_counter() - t:.1f} s")
        runs = [(int(w), None) for w in args.workers.split(",")]
        if args.squeeze_kb:
            runs += [(w, args.squeeze_kb) for w, _ in list(runs)]
        failed = False
        for workers, squeeze in runs:
            got, seconds = sluice_groups(log, workers, squeeze, work)
            problems = differences(expected, got)
            label = f"sluice -w {workers}" + (f", SLUICE_TEST_BUCKET_KB={squeeze}" if squeeze else "")
            print(f"{label}: {len(got):,} groups in {seconds:.1f} s: "
                  + ("equal" if not problems else f"{len(problems)} differences"))
            for line in problems[:20]:
                print("  " + line)
            failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
