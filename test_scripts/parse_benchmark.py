#!/usr/bin/env python3
"""Benchmark text parsing: grok and dissect (then date) over a generated access log.

    python test_scripts/parse_benchmark.py                     # 1M lines, 3 runs each
    python test_scripts/parse_benchmark.py --lines 20000 --runs 1

It generates (or reuses) an nginx combined log (test_scripts/generate_access.py, 1% of
lines no pattern matches) and runs, alternating, with default settings:

    grok            file-input -> grok %{COMBINEDAPACHELOG} -> date -> JSON lines to a file
    dissect         file-input -> dissect (the same layout)  -> date -> JSON lines to a file
    grok-window     ... grok -> date -> aggregate requests and distinct clients per
                    1-minute window and status -> CSV
    dissect-window  ... dissect -> date -> the same aggregate -> CSV

Prints each job's walls, lines/s and input MiB/s (median run), peak RSS summed over all
its processes, and the published regex-parsing figures of Logstash (4.6 MiB/s) and
Vector (13.2 MiB/s, vector-test-harness `regex_parsing_performance`) beside them; those
were measured on other machines, so they are a yardstick, not a ratio of this run.
Both parsers must write the same records (the fields both parse), and the same windows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import ROOT, measure  # noqa: E402

PUBLISHED = {"Logstash": 4.6, "Vector": 13.2}  # MiB/s, regex parsing
DATE = '  - date: {field: timestamp, formats: ["%d/%b/%Y:%H:%M:%S %z"]}\n'
PARSERS = {
    "grok": '  - grok: {match: "%{COMBINEDAPACHELOG}"}\n',
    "dissect": ("  - dissect: {pattern: '%{clientip} %{ident} %{auth} [%{timestamp}] "
                "\"%{verb} %{request} HTTP/%{httpversion}\" %{response} %{bytes} "
                "\"%{referrer}\" \"%{agent}\"'}\n"),
}
WINDOWED = ("  - aggregate:\n      by: [response]\n      window: {field: timestamp, size: 1m}\n"
            "      metrics: {requests: count, clients: count_distinct(clientip)}\n"
            "  - csv-output: {path: OUT, columns: [window_start, window_end, response, "
            "requests, clients]}\n")
JOBS = {**{name: (stage, "jsonl") for name, stage in PARSERS.items()},
        **{f"{name}-window": (stage, "csv") for name, stage in PARSERS.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/sluice-parse-bench")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    log = os.path.join(args.workdir, f"access-{args.lines}.log")
    if not os.path.exists(log):
        subprocess.run([sys.executable, os.path.join(ROOT, "test_scripts", "generate_access.py"),
                        "--lines", str(args.lines), "--bad-every", "100", "-o", log + ".tmp"],
                       check=True)
        os.replace(log + ".tmp", log)
    size = os.path.getsize(log)
    runs: dict[str, list[dict]] = {job: [] for job in JOBS}
    outs = {}
    for _ in range(args.runs):
        for job, (stage, kind) in JOBS.items():
            config = os.path.join(args.workdir, f"{job}.yaml")
            outs[job] = out = os.path.join(args.workdir, f"{job}.{kind}")
            ending = (WINDOWED.replace("OUT", json.dumps(out)) if kind == "csv" else
                      f"  - jsonl-output: {{path: {json.dumps(out)}}}\n")
            with open(config, "w", encoding="utf-8") as fh:
                fh.write(f"pipeline:\n  - file-input: {{path: {json.dumps(log)}}}\n{stage}{DATE}"
                         f"{ending}")
            runs[job].append(measure([sys.executable, os.path.join(ROOT, "main.py"), "-c", config,
                                      "--state-dir", os.path.join(args.workdir, "state"),
                                      "--fresh", "-q"], os.devnull))
    same = _fields(outs["grok"]) == _fields(outs["dissect"])
    with open(outs["grok-window"], "rb") as a, open(outs["dissect-window"], "rb") as b:
        windows = a.read()
        same_windows = windows == b.read() and windows.count(b"\n") > 1
    print(f"{args.lines:,} access-log lines, {size / 2**20:.1f} MiB, {args.runs} runs each")
    print(f"{'job':<15} {'walls s':<20} {'lines/s':>10} {'MiB/s':>7} {'peak RSS MB':>12}")
    for job, rs in runs.items():
        walls = sorted(r["wall"] for r in rs)
        mid = walls[len(walls) // 2]
        print(f"{job:<15} {' '.join(f'{w:.1f}' for w in walls):<20} {args.lines / mid:>10,.0f} "
              f"{size / mid / 2**20:>7.1f} {max(r['rss'] for r in rs) / 2**20:>12.0f}")
    print("published, other machines: " + ", ".join(f"{k} {v} MiB/s" for k, v in PUBLISHED.items()))
    print(f"grok and dissect gave the same windows: {'yes' if same_windows else 'NO'}")
    print(f"grok and dissect wrote the same records: {'yes' if same else 'NO'}")
    return 0 if same and same_windows else 1


def _fields(path: str) -> list[tuple]:
    keys = ("clientip", "timestamp", "verb", "request", "response", "agent")
    with open(path, "rb") as fh:
        return [tuple(r.get(k) for k in keys) for r in map(json.loads, fh)]


if __name__ == "__main__":
    sys.exit(main())
