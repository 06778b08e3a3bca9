#!/usr/bin/env python3
"""Benchmark the summary job against DuckDB on the same generated log, in one run.

    python test_scripts/benchmark.py                       # 10M lines, 2 workers
    python test_scripts/benchmark.py --sizes 1M,5M,10M,20M

For each size it generates (or reuses) a log with generate.py, then runs in turn:

    sluice      python main.py -c configs/summary.yaml -f LOG -w N          (checkpoints on)
    sluice-nock the same with --no-checkpoint
    sluice-dask the same on a Dask LocalCluster, with --executor dask   (if asked)
    duckdb      test_scripts/duckdb_summary.py LOG                          (one SQL query)

and checks that the three outputs are byte-identical. It prints wall and CPU seconds,
peak RSS of the whole process tree (sampled from /proc, workers included), lines/s,
and ratios against DuckDB measured in the same run. Exit 1 if outputs differ.
"""
from __future__ import annotations

import argparse
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


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants right now."""
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
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(cmd: list[str], stdout_path: str) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, cwd=ROOT)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
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
    return {"wall": wall, "cpu": cpu, "rss": peak[0], "stderr": err.decode()}


def ensure_log(path: str, lines: int, seed: int) -> None:
    if os.path.exists(path):
        return
    print(f"generating {lines:,} lines into {path} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "test_scripts", "generate.py"),
                    "--lines", str(lines), "--seed", str(seed), "-o", path + ".tmp"],
                   check=True)
    os.replace(path + ".tmp", path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10M", help="comma-separated line counts: 1M,5M,10M")
    p.add_argument("--input", help="use this log instead of generating one (one size)")
    p.add_argument("--workdir", default="/tmp/sluice-bench", help="generated logs and state")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-duckdb", action="store_true", help="skip the DuckDB run")
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="dask: also run on a Dask LocalCluster (2 workers) and report its "
                        "overhead against the local workers")
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    main_py = os.path.join(ROOT, "main.py")
    config = os.path.join(ROOT, "configs", "summary.yaml")
    rows = []
    failed = False
    sizes = [None] if args.input else [parse_size(s) for s in args.sizes.split(",")]
    for size in sizes:
        log = args.input or os.path.join(args.workdir, f"log-{size}-s{args.seed}.jsonl")
        if size is not None:
            ensure_log(log, size, args.seed)
        lines = sum(block.count(b"\n") for block in iter(
            lambda fh=open(log, "rb"): fh.read(1 << 24), b""))
        state = os.path.join(args.workdir, "state")
        shutil.rmtree(state, ignore_errors=True)
        base = [sys.executable, main_py, "-c", config, "-f", log, "--state-dir", state,
                "-w", str(args.workers)]
        runs = {"sluice": base, "sluice-nock": base + ["--no-checkpoint"]}
        if args.executor == "dask":
            runs["sluice-dask"] = base + ["--executor", "dask", "--fresh"]
        if not args.no_duckdb:
            runs["duckdb"] = [sys.executable, os.path.join(ROOT, "test_scripts",
                                                           "duckdb_summary.py"), log]
        results = {}
        outputs = {}
        for name, cmd in runs.items():
            out = os.path.join(args.workdir, f"out-{name}.txt")
            results[name] = measure(cmd, out)
            with open(out, "rb") as fh:
                outputs[name] = fh.read()
            if name == "sluice":
                results[name]["state"] = sum(
                    os.path.getsize(os.path.join(r, f))
                    for r, _, fs in os.walk(state) for f in fs)
        same = len(set(outputs.values())) == 1
        failed |= not same
        for name, r in results.items():
            rows.append((lines, name, r, results.get("duckdb"), same))
        if "sluice-dask" in results:
            ratio = results["sluice-dask"]["wall"] / results["sluice"]["wall"]
            print(f"{lines:,} lines: dask overhead {100 * (ratio - 1):+.1f}% "
                  f"(dask/local wall {ratio:.2f})", file=sys.stderr)
        if "sluice" in results:
            ck = results["sluice"]["wall"] / results["sluice-nock"]["wall"]
            print(f"{lines:,} lines: checkpoint overhead {100 * (ck - 1):+.1f}% "
                  f"(on/off {ck:.2f}), state dir {results['sluice']['state'] / 1e6:.0f} MB",
                  file=sys.stderr)
    print(f"{'lines':>12} {'run':<12} {'wall s':>7} {'cpu s':>7} {'peak RSS MB':>11} "
          f"{'lines/s':>10} {'wall/duckdb':>11} {'rss/duckdb':>10} {'identical':>9}")
    for lines, name, r, duck, same in rows:
        wr = f"{r['wall'] / duck['wall']:.2f}" if duck else "-"
        rr = f"{r['rss'] / duck['rss']:.2f}" if duck else "-"
        print(f"{lines:>12,} {name:<12} {r['wall']:>7.1f} {r['cpu']:>7.1f} "
              f"{r['rss'] / 2**20:>11.0f} {lines / r['wall']:>10,.0f} {wr:>11} {rr:>10} "
              f"{'yes' if same else 'NO':>9}")
    print(f"machine: {os.cpu_count()} CPUs, workers={args.workers}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
