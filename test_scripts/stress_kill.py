#!/usr/bin/env python3
"""SIGKILL the summary job at random moments; every eventual output must be exact.

    python test_scripts/stress_kill.py --lines 1000000 --kills 50

It generates a log (or takes --input), runs the job once without checkpoints for the
expected stdout and dead-letter file, then repeatedly starts the job with a random
--checkpoint-every and kills it with SIGKILL after a random delay. Each attempt resumes
from whatever the last one left. Whenever an attempt runs to the end, its stdout and
dead-letter file are compared with the expected ones and the next attempt starts over
with --fresh. After the last kill the job runs to the end and is compared once more.

Bounded: every attempt has a timeout and the whole run stops after --max-seconds.
Exit 0 when every comparison matched, 1 on any difference, 2 on a setup error.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "main.py")
CONFIG = os.path.join(ROOT, "configs", "summary.yaml")


def job(path: str, state: str, *extra: str) -> list[str]:
    return [sys.executable, MAIN, "-c", CONFIG, "-f", path, "--state-dir", state, *extra]


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return b""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", help="log to use (default: generate one)")
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, help="pass -w N to the job")
    p.add_argument("--max-seconds", type=float, default=1800)
    p.add_argument("--workdir", help="where to keep files (default: a temp dir)")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.max_seconds
    work = args.workdir or tempfile.mkdtemp(prefix="sluice-stress-")
    os.makedirs(work, exist_ok=True)
    path = args.input
    if path is None:
        path = os.path.join(work, "log.jsonl")
        subprocess.run([sys.executable, os.path.join(ROOT, "test_scripts", "generate.py"),
                        "--lines", str(args.lines), "--seed", str(args.seed),
                        "--mixed-site-ids", "--conflicting-dups", "--bad-rate", "0.001",
                        "-o", path], check=True)
    extra = ["-w", str(args.workers)] if args.workers else []
    ref_state = os.path.join(work, "reference")
    t0 = time.monotonic()
    ref = subprocess.run(job(path, ref_state, "--no-checkpoint", *extra), capture_output=True,
                         timeout=max(deadline - time.monotonic(), 1))
    if ref.returncode != 0:
        print(f"stress: the uninterrupted run failed: {ref.stderr.decode()}", file=sys.stderr)
        return 2
    full_time = time.monotonic() - t0
    expected_dead = read(os.path.join(ref_state, "dead_letter.jsonl"))
    state = os.path.join(work, "state")
    dead = os.path.join(state, "dead_letter.jsonl")
    lines_total = sum(1 for _ in open(path, "rb"))
    kills = completed = failures = 0
    fresh = True

    def check(out: bytes, label: str) -> None:
        nonlocal failures
        problems = []
        if out != ref.stdout:
            problems.append("stdout differs")
        if read(dead) != expected_dead:
            problems.append("dead-letter file differs")
        if problems:
            failures += 1
            keep = os.path.join(work, f"failure-{failures}.txt")
            with open(keep, "wb") as fh:
                fh.write(out)
            print(f"stress: {label}: {', '.join(problems)} (stdout kept in {keep})")

    while kills < args.kills and time.monotonic() < deadline:
        every = rng.choice([rng.randint(500, 5_000), rng.randint(5_000, max(lines_total // 4, 5_001))])
        cmd = job(path, state, "--checkpoint-every", str(every), *extra) + (["--fresh"] if fresh else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        delay = rng.uniform(0.05, full_time * 1.1)
        try:
            out, err = proc.communicate(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL
            proc.communicate()
            kills += 1
            fresh = False
            continue
        if proc.returncode != 0:
            print(f"stress: attempt failed with exit {proc.returncode}: {err.decode()}")
            failures += 1
            break
        completed += 1
        check(out, f"run {completed} (after {kills} kills)")
        fresh = True
    final = subprocess.run(job(path, state, *extra), capture_output=True,
                           timeout=max(deadline - time.monotonic(), 60))
    completed += 1
    check(final.stdout, "final run")
    print(f"stress: {kills} kills, {completed} completed runs compared, {failures} failures "
          f"({lines_total:,} lines, uninterrupted run {full_time:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
