#!/usr/bin/env python3
"""Benchmark Sluice's jobs against DuckDB on the same generated log, in one run.

    python test_scripts/benchmark.py                            # 1M, 10M; realistic log
    python test_scripts/benchmark.py --sizes 1M,10M,50M --executor dask
    python test_scripts/benchmark.py --jobs aggregate,count,filter --sizes 1M --pairs 3

`--jobs` picks what is measured (default: summary):

    summary     configs/summary.yaml                against test_scripts/duckdb_summary.py
    aggregate   configs/aggregate.yaml: dedupe by id, aggregate by [site_id, type] with
                count, count_distinct(from), min/max(timestamp), CSV out
    count       configs/count_by_type.yaml: dedupe by id, count by type, CSV out
    filter      where type is message, mutate (configs/mutate.yaml's reshaping), JSON
                lines to a file: reported as input MB/s too
    where-if    `where: {if: ...}`: the messages of visitors whose name starts with
                visitor1, JSON lines to a file
    compute     `mutate: {compute: ...}`: each record's hour of the day and whether it
                is a status, JSON lines to a file
    route       `route` to three JSON-lines files: statuses, messages of visitor1*
                senders, the rest (default)
    stats       aggregate by site_id: count, avg(timestamp), percentile(timestamp, 95),
                CSV out (p95 compared within 1%: exact up to 1,024 values a site)

Each framework job (aggregate, count, filter, where-if, compute, route, stats) is a Sluice run with default settings
against DuckDB answering the same question (a query from test_scripts/duckdb_jobs.py
writing the same kind of file), in --pairs alternating pairs (Sluice, DuckDB, Sluice,
...); its ratio is the median of the pairs' ratios, and every output is compared with
DuckDB's (rows, numbers as numbers).

For each size it generates (or reuses) a log with generate.py: by default a realistic
one, 3,000,000 distinct visitors over 2,000 sites (`--visitors`, `--sites`). Then it runs,
one after another:

    sluice      python main.py -c configs/summary.yaml -f LOG      (default settings)
    sluice-nock the same with --no-checkpoint
    sluice-dask the same with --executor dask (a LocalCluster)     (with --executor dask)
    duckdb      test_scripts/duckdb_summary.py LOG                 (one SQL query)

It samples the resident memory of every process of each run from /proc every 50 ms
and reports the peak of their sum (for Dask also the client's own peak and the largest
worker's), wall and CPU seconds, lines/s, and ratios measured in the same run: wall
against DuckDB, checkpoints on against off, and each size's wall against the previous
size's. Outputs must be byte-identical to each other, and to tests/reference.py up to
--reference-max lines. Exit 1 on any difference.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.sysconf("SC_PAGE_SIZE")


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if text[-1:] in "KM" else text) * mult)


def tree(root: int) -> dict[int, int]:
    """Resident bytes of `root` and of each of its descendants, right now."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                out[pid] = int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return out


def tree_rss(root: int) -> int:
    return sum(tree(root).values())


def measure(cmd: list[str], stdout_path: str) -> dict[str, float]:
    """Run cmd; wall, CPU, peak of the summed RSS, and per-process peaks."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, cwd=ROOT)
        peak = [0]
        each: dict[int, int] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                now = tree(proc.pid)
                peak[0] = max(peak[0], sum(now.values()))
                for pid, rss in now.items():
                    each[pid] = max(each.get(pid, 0), rss)
                done.wait(0.05)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        _, err = proc.communicate()
        done.set()
        t.join()
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: {' '.join(cmd)} failed:\n{err.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    others = [v for pid, v in each.items() if pid != proc.pid]
    return {"wall": wall, "cpu": cpu, "rss": peak[0], "stderr": err.decode(),
            "main": each.get(proc.pid, 0), "largest_other": max(others, default=0),
            "processes": len(each)}


def ensure_log(path: str, lines: int, seed: int, visitors: int, sites: int) -> None:
    if os.path.exists(path):
        return
    print(f"generating {lines:,} lines into {path} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "test_scripts", "generate.py"),
                    "--lines", str(lines), "--seed", str(seed), "--visitors", str(visitors),
                    "--sites", str(sites), "-o", path + ".tmp"], check=True)
    os.replace(path + ".tmp", path)


def reference_output(log: str) -> bytes:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from reference import summarize

    with open(log, "rb") as fh:
        return summarize(fh.read()).encode()


FRAMEWORK = {  # job: (config, where Sluice writes, what the output holds)
    "aggregate": ("configs/aggregate.yaml", "-", "csv"),
    "count": ("configs/count_by_type.yaml", "-", "csv"),
    "filter": (None, "out.jsonl", "ids"),
    "where-if": (None, "out.jsonl", "ids"),
    "compute": (None, "out.jsonl", "computed"),
    "route": (None, "out.jsonl", "routed"),
    "stats": (None, "-", "stats"),
}
CONFIGS = {  # the framework jobs whose config is written here, with the log and output
    "where-if": """\
pipeline:
  - file-input: {{path: {log}}}
  - json-decode: {{schema: object}}
  - where: {{if: "type = 'message' AND starts_with(\\"from\\", 'visitor1')"}}
  - jsonl-output: {{path: {out}}}
""",
    "compute": """\
pipeline:
  - file-input: {{path: {log}}}
  - json-decode: {{schema: object}}
  - mutate:
      compute:
        hour: "floor(timestamp / 3600) % 24"
        is_status: "type = 'status'"
  - jsonl-output: {{path: {out}}}
""",
    "stats": """\
pipeline:
  - file-input: {{path: {log}}}
  - json-decode: {{schema: object}}
  - aggregate:
      by: [site_id]
      metrics: {{records: count, mean: avg(timestamp), p95: "percentile(timestamp, 95)"}}
  - csv-output: {{path: "-", columns: [site_id, records, mean, p95]}}
""",
    "route": """\
pipeline:
  - file-input: {{path: {log}}}
  - json-decode: {{schema: object}}
  - route:
      statuses:
        if: "type = 'status'"
        stages: [jsonl-output: {{path: {statuses}}}]
      visitors:
        if: "starts_with(\\"from\\", 'visitor1')"
        stages: [jsonl-output: {{path: {visitors}}}]
      default: [jsonl-output: {{path: {rest}}}]
""",
}
FILTER_CONFIG = """\
pipeline:
  - file-input: {{path: {log}}}
  - json-decode: {{schema: object}}
  - where: {{field: type, equals: message}}
  - mutate:
      rename: {{from: sender, data.status: status}}
      remove: [data]
      set: {{source: chat-log}}
      convert: {{site_id: str}}
  - jsonl-output: {{path: {out}}}
"""


class Approx(float):
    """A number equal to any within `rel` of it (relative)."""

    def __new__(cls, value: float, rel: float) -> "Approx":
        number = super().__new__(cls, value)
        number.rel = rel
        return number

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and abs(other - self) <= self.rel * abs(self)

    __hash__ = float.__hash__


def framework_output(kind: str, path: str) -> list:
    """What a job's output file holds, comparable across Sluice and DuckDB: CSV rows
    (the header, then the rows sorted, numbers as floats), or the ids in order."""
    import csv

    if kind == "ids":
        with open(path, "rb") as fh:
            return [json.loads(line)["id"] for line in fh if line.strip()]
    if kind == "routed":  # the ids in each branch's file, in order
        return [framework_output("ids", path + suffix)
                for suffix in (".statuses", ".visitors", ".rest")]
    if kind == "stats":  # avg to 1e-12 (DuckDB sums doubles), p95 to 1% (beyond 1,024
        rows = framework_output("csv", path)  # values a site: Sluice's stated error)
        return rows[:1] + [[site, n, Approx(mean, 1e-12), Approx(p95, 0.01)]
                           for site, n, mean, p95 in rows[1:]]
    if kind == "computed":
        with open(path, "rb") as fh:
            return [(r["id"], r["hour"], r["is_status"]) for r in map(json.loads, fh)]

    def cell(text: str) -> object:
        try:
            return float(text)
        except ValueError:
            return text
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[:1] + sorted(([cell(c) for c in r] for r in rows[1:]), key=repr)


def run_framework(job: str, log: str, workdir: str, pairs: int, sluice_args: list[str],
                  lines: int) -> tuple[list, bool]:
    """`pairs` alternating Sluice and DuckDB runs of one job; (table rows, equal)."""
    config, target, kind = FRAMEWORK[job]
    out = {"sluice": os.path.join(workdir, f"{job}-sluice.out"),
           "duckdb": os.path.join(workdir, f"{job}-duckdb.out")}
    if config is None:
        config = os.path.join(workdir, f"{job}.yaml")
        with open(config, "w", encoding="utf-8") as fh:
            fh.write(CONFIGS.get(job, FILTER_CONFIG).format(
                log=json.dumps(log), out=json.dumps(out["sluice"]), **{
                    branch: json.dumps(out["sluice"] + "." + branch)
                    for branch in ("statuses", "visitors", "rest")}))
    else:
        config = os.path.join(ROOT, config)
    state = os.path.join(workdir, "state")
    sluice = [sys.executable, os.path.join(ROOT, "main.py"), "-c", config, "-f", log,
              "--state-dir", state, "--fresh", "-q", *sluice_args]
    duck = [sys.executable, os.path.join(ROOT, "test_scripts", "duckdb_jobs.py"), job, log,
            out["duckdb"]]
    runs: dict[str, list] = {"sluice": [], "duckdb": []}
    for _ in range(pairs):
        for name, cmd in (("sluice", sluice), ("duckdb", duck)):
            stdout = out[name] if (name == "sluice" and target == "-") else os.devnull
            runs[name].append(measure(cmd, stdout))
        shutil.rmtree(state, ignore_errors=True)
    same = framework_output(kind, out["sluice"]) == framework_output(kind, out["duckdb"])
    ratios = sorted(s["wall"] / d["wall"] for s, d in zip(runs["sluice"], runs["duckdb"]))
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else \
        (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
    size = os.path.getsize(log)
    rows = []
    for name, rs in runs.items():
        walls = sorted(r["wall"] for r in rs)
        rows.append((lines, f"{job}/{name}", walls, max(r["rss"] for r in rs),
                     size / walls[len(walls) // 2] / 2**20,
                     median if name == "sluice" else 1.0, ratios if name == "sluice" else [],
                     same))
    return rows, same


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", default="summary",
                   help="comma-separated: summary, aggregate, count, filter, where-if, "
                        "compute, route, stats")
    p.add_argument("--pairs", type=int, default=3,
                   help="alternating Sluice/DuckDB pairs for each framework job (>= 3)")
    p.add_argument("--sizes", default="1M,10M", help="comma-separated line counts: 1M,10M,50M")
    p.add_argument("--input", help="use this log instead of generating one (one size)")
    p.add_argument("--workdir", default="/tmp/sluice-bench", help="generated logs and state")
    p.add_argument("--visitors", type=int, default=3_000_000, help="distinct visitors")
    p.add_argument("--sites", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sluice-args", default="", help="extra flags for every sluice run")
    p.add_argument("--no-duckdb", action="store_true", help="skip the DuckDB runs")
    p.add_argument("--duckdb-max", default="20M",
                   help="skip DuckDB above this many lines (it needs ~270 MB a million)")
    p.add_argument("--reference-max", default="1M",
                   help="also compare with tests/reference.py up to this many lines")
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="dask: also run on a Dask LocalCluster")
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    main_py = os.path.join(ROOT, "main.py")
    config = os.path.join(ROOT, "configs", "summary.yaml")
    rows: list = []
    framework_rows: list = []
    jobs = list(dict.fromkeys(j.strip() for j in args.jobs.split(",") if j.strip()))
    unknown = set(jobs) - {"summary", *FRAMEWORK}
    if unknown or not jobs:
        p.error(f"--jobs: unknown job {sorted(unknown)[0] if unknown else ''!r}; "
                f"choose from summary, {', '.join(FRAMEWORK)}")
    if args.pairs < 1:
        p.error("--pairs must be at least 1")
    failed = False
    previous: tuple[int, float] | None = None
    sizes = [None] if args.input else [parse_size(s) for s in args.sizes.split(",")]
    for size in sizes:
        log = args.input or os.path.join(
            args.workdir, f"log-{size}-v{args.visitors}-s{args.sites}-seed{args.seed}.jsonl")
        if size is not None:
            ensure_log(log, size, args.seed, args.visitors, args.sites)
        lines = sum(block.count(b"\n") for block in iter(
            lambda fh=open(log, "rb"): fh.read(1 << 24), b""))
        for job in [j for j in jobs if j != "summary"]:
            got, same = run_framework(job, log, args.workdir, args.pairs,
                                      args.sluice_args.split(), lines)
            framework_rows += got
            failed |= not same
            if not same:
                print(f"{lines:,} lines: {job}: Sluice's output DIFFERS from DuckDB's",
                      file=sys.stderr)
        if "summary" not in jobs:
            continue
        state = os.path.join(args.workdir, "state")
        shutil.rmtree(state, ignore_errors=True)
        base = [sys.executable, main_py, "-c", config, "-f", log, "--state-dir", state,
                *args.sluice_args.split()]
        runs = {"sluice": base, "sluice-nock": base + ["--no-checkpoint"]}
        if args.executor == "dask":
            runs["sluice-dask"] = base + ["--executor", "dask", "--fresh"]
        if not args.no_duckdb and lines <= parse_size(args.duckdb_max):
            runs["duckdb"] = [sys.executable, os.path.join(ROOT, "test_scripts",
                                                           "duckdb_summary.py"), log]
        results, outputs = {}, {}
        for name, cmd in runs.items():
            out = os.path.join(args.workdir, f"out-{name}.txt")
            results[name] = measure(cmd, out)
            with open(out, "rb") as fh:
                outputs[name] = fh.read()
            if name == "sluice":
                results[name]["state"] = sum(
                    os.path.getsize(os.path.join(r, f))
                    for r, _, fs in os.walk(state) for f in fs)
        if lines <= parse_size(args.reference_max):
            outputs["reference.py"] = reference_output(log)
        same = len(set(outputs.values())) == 1
        if not same:
            print(f"{lines:,} lines: outputs DIFFER: " + ", ".join(
                f"{n}={hash(o) & 0xffff:04x}" for n, o in outputs.items()), file=sys.stderr)
        failed |= not same
        for name, r in results.items():
            rows.append((lines, name, r, results.get("duckdb"), same))
        s = results["sluice"]
        ck = s["wall"] / results["sluice-nock"]["wall"]
        print(f"{lines:,} lines: checkpoint overhead {100 * (ck - 1):+.1f}% (on/off "
              f"{ck:.2f}), state dir {s['state'] / 1e6:.0f} MB; compared: "
              f"{', '.join(outputs)}", file=sys.stderr)
        if "sluice-dask" in results:
            d = results["sluice-dask"]
            print(f"{lines:,} lines: dask/local wall {d['wall'] / s['wall']:.2f}; client "
                  f"peak {d['main'] / 2**20:.0f} MB, largest other process "
                  f"{d['largest_other'] / 2**20:.0f} MB, {d['processes']} processes",
                  file=sys.stderr)
        if previous is not None:
            print(f"{lines:,} lines: wall {s['wall'] / previous[1]:.2f}x that of "
                  f"{previous[0]:,} lines ({lines / previous[0]:.1f}x the lines)",
                  file=sys.stderr)
        previous = (lines, s["wall"])
    if framework_rows:
        print(f"{'lines':>12} {'job/run':<18} {'walls s':>20} {'peak RSS MB':>11} "
              f"{'input MB/s':>10} {'median wall/duckdb':>18} {'pair ratios':>18} {'same':>5}")
        for lines, name, walls, rss, mbs, median, ratios, same in framework_rows:
            print(f"{lines:>12,} {name:<18} {' '.join(f'{w:.1f}' for w in walls):>20} "
                  f"{rss / 2**20:>11.0f} {mbs:>10.1f} {median:>18.2f} "
                  f"{' '.join(f'{r:.2f}' for r in ratios):>18} {'yes' if same else 'NO':>5}")
    if not rows:
        print(f"machine: {os.cpu_count()} CPUs; log: {args.visitors:,} visitors, "
              f"{args.sites:,} sites")
        return 1 if failed else 0
    print(f"{'lines':>12} {'run':<12} {'wall s':>7} {'cpu s':>7} {'peak RSS MB':>11} "
          f"{'lines/s':>10} {'wall/duckdb':>11} {'rss/duckdb':>10} {'identical':>9}")
    for lines, name, r, duck, same in rows:
        wr = f"{r['wall'] / duck['wall']:.2f}" if duck else "-"
        rr = f"{r['rss'] / duck['rss']:.2f}" if duck else "-"
        print(f"{lines:>12,} {name:<12} {r['wall']:>7.1f} {r['cpu']:>7.1f} "
              f"{r['rss'] / 2**20:>11.0f} {lines / r['wall']:>10,.0f} {wr:>11} {rr:>10} "
              f"{'yes' if same else 'NO':>9}")
    print(f"machine: {os.cpu_count()} CPUs; log: {args.visitors:,} visitors, "
          f"{args.sites:,} sites")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
