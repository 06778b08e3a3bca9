#!/usr/bin/env python3
"""SIGKILL the summary job at random moments; every eventual output must be exact.

    python test_scripts/stress_kill.py --lines 1000000 --kills 50

It generates a log (or takes --input), runs the job once without checkpoints for the
expected stdout and dead-letter file, then repeatedly starts the job with a random
--checkpoint-every and kills it with SIGKILL after a random delay. Each attempt resumes
from whatever the last one left. Whenever an attempt runs to the end, its stdout and
dead-letter file are compared with the expected ones and the next attempt starts over
with --fresh. After the last kill the job runs to the end and is compared once more.

Each attempt runs in its own session and is killed as a whole process group. A process
of the attempt still alive after that (found by an environment token, wherever it went)
is a failure, reported with its pid and command line, and killed; it is never waited
on. Outputs go to files, not pipes, so nothing a stray process holds can hang this
script, and every wait has a timeout: the whole run ends within --max-seconds (plus one
attempt's timeout).

With --table T (repeatable), the pipeline writes a database and table T of the killed
runs must equal the uninterrupted run's, row for row, with no duplicates. The database
is --database sqlite:PATH (relative to the job's working directory, each run its own),
or --database postgres: a throwaway server (tests/pgserver.py) with one database for
the uninterrupted run and one for the killed ones, put in the config where it says DSN.

Exit 0 when every comparison matched and nothing survived, 1 otherwise, 2 on a setup
error.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
from typing import Any
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import TOKEN, kill_all, read, survivors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "main.py")
CONFIG = os.path.join(ROOT, "configs", "summary.yaml")


class Attempt:
    """One run of the job in its own session, with stdout and stderr in files."""

    count = 0

    def __init__(self, cmd: list[str], work: str, cwd: str):
        Attempt.count += 1
        self.token = f"{os.getpid()}-{Attempt.count}"
        self.out = os.path.join(work, "attempt.out")
        self.err = os.path.join(work, "attempt.err")
        os.makedirs(cwd, exist_ok=True)
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=cwd,
                                         env={**os.environ, TOKEN: self.token})

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> list[tuple[int, str]]:
        """SIGKILL the whole group; return whatever of the attempt is still alive."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(10)
        left = survivors(self.token)
        kill_all(left)
        return left


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", help="log to use (default: generate one)")
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, help="pass -w N to the job")
    p.add_argument("--memory-mb", type=int, help="pass --memory-mb N to the job")
    p.add_argument("--bucket-kb", type=int,
                   help="squeeze each bucket's memory to N KiB (SLUICE_TEST_BUCKET_KB), so "
                        "small inputs take the many-bucket and oversized-bucket paths")
    p.add_argument("--max-seconds", type=float, default=1800)
    p.add_argument("--attempt-timeout", type=float, default=600,
                   help="an attempt that runs longer than this is a failure")
    p.add_argument("--workdir", help="where to keep files (default: a temp dir)")
    p.add_argument("--command", default=f"{shlex.quote(sys.executable)} {shlex.quote(MAIN)}",
                   help="how to start Sluice (for testing this script itself)")
    p.add_argument("--config", default=CONFIG, help="the pipeline (default: the summary)")
    p.add_argument("--compare", nargs="*", default=[], metavar="FILE",
                   help="files the pipeline writes (relative to its working directory) "
                        "that must also match the uninterrupted run's")
    p.add_argument("--table", action="append", default=[], metavar="T",
                   help="a database table the pipeline writes, compared row for row")
    p.add_argument("--database", default=None, metavar="sqlite:PATH|postgres",
                   help="where --table is (see above)")
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
                        "-o", path], check=True, timeout=args.max_seconds)
    extra = ["-w", str(args.workers)] if args.workers else []
    if args.bucket_kb:
        os.environ["SLUICE_TEST_BUCKET_KB"] = str(args.bucket_kb)
    if args.memory_mb:
        extra += ["--memory-mb", str(args.memory_mb)]

    config = ref_config = os.path.abspath(args.config)
    server = None
    dsns: dict[str, str] = {}
    if args.database == "postgres":
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from pgserver import Server
        server = Server().start()
        text = open(config, encoding="utf-8").read()
        for name in ("ref", "run"):
            dsns[name] = server.create_database(f"stress_{name}")
            with open(os.path.join(work, f"{name}.yaml"), "w", encoding="utf-8") as fh:
                fh.write(text.replace("DSN", json.dumps(dsns[name])))
        ref_config, config = (os.path.join(work, f"{n}.yaml") for n in ("ref", "run"))

    def tables(which: str, cwd: str) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for t in args.table:
            if server is not None:
                import psycopg
                with psycopg.connect(dsns[which]) as conn:
                    out[t] = sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            else:
                import sqlite3
                db = os.path.join(cwd, (args.database or "sqlite:out.db").split(":", 1)[1])
                try:
                    with sqlite3.connect(db) as conn:
                        out[t] = sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                except sqlite3.Error as exc:
                    out[t] = [f"cannot read: {exc}"]
        return out

    def job(state: str, *more: str, cfg: str | None = None) -> list[str]:
        return [*shlex.split(args.command), "-c", cfg or config, "-f", path, "--state-dir",
                state, *extra, *more]

    failures = 0

    def fail(text: str) -> None:
        nonlocal failures
        failures += 1
        print(f"stress: {text}", flush=True)

    def finish(attempt: Attempt, label: str, timeout: float) -> int | None:
        """Wait for an attempt that should run to its end; None if it had to be killed."""
        code = attempt.wait(timeout)
        if code is None:
            left = attempt.kill()
            fail(f"{label} did not finish within {timeout:.0f} s; killed"
                 + "".join(f"\n  left alive: pid {pid}: {cmd}" for pid, cmd in left))
        else:
            left = survivors(attempt.token, grace=0.5)
            if left:
                kill_all(left)
                fail(f"{label} finished but left {len(left)} process(es) alive"
                     + "".join(f"\n  pid {pid}: {cmd}" for pid, cmd in left))
        return code

    ref_state = os.path.join(work, "reference")
    t0 = time.monotonic()
    ref_cwd, run_cwd = os.path.join(work, "ref-cwd"), os.path.join(work, "run-cwd")
    ref = Attempt(job(ref_state, "--no-checkpoint", cfg=ref_config), work, ref_cwd)
    if finish(ref, "the uninterrupted run", args.attempt_timeout) != 0:
        print(f"stress: the uninterrupted run failed: {read(ref.err).decode()}", file=sys.stderr)
        return 2
    full_time = time.monotonic() - t0
    expected = read(ref.out)
    expected_dead = read(os.path.join(ref_state, "dead_letter.jsonl"))
    expected_files = {f: read(os.path.join(ref_cwd, f)) for f in args.compare}
    expected_tables = tables("ref", ref_cwd)
    state = os.path.join(work, "state")
    dead = os.path.join(state, "dead_letter.jsonl")
    lines_total = expected_lines = sum(1 for _ in open(path, "rb"))
    kills = completed = 0
    fresh = True

    def check(attempt: Attempt, label: str) -> None:
        problems = []
        out = read(attempt.out)
        if out != expected:
            problems.append("stdout differs")
        if read(dead) != expected_dead:
            problems.append("dead-letter file differs")
        for f, want in expected_files.items():
            if read(os.path.join(run_cwd, f)) != want:
                problems.append(f"{f} differs")
        for t, rows in tables("run", run_cwd).items():
            if rows != expected_tables[t]:
                problems.append(f"table {t} differs ({len(rows):,} rows, "
                                f"{len(expected_tables[t]):,} expected)")
        if problems:
            keep = os.path.join(work, f"failure-{failures + 1}.txt")
            with open(keep, "wb") as fh:
                fh.write(out)
            fail(f"{label}: {', '.join(problems)} (stdout kept in {keep})")

    while kills < args.kills and time.monotonic() < deadline:
        every = rng.choice([rng.randint(500, 5_000),
                            rng.randint(5_000, max(expected_lines // 4, 5_001))])
        attempt = Attempt(job(state, "--checkpoint-every", str(every))
                          + (["--fresh"] if fresh else []), work, run_cwd)
        code = attempt.wait(rng.uniform(0.05, full_time * 1.1))
        if code is None:
            left = attempt.kill()
            kills += 1
            fresh = False
            if left:
                fail(f"kill {kills}: {len(left)} process(es) outlived the run"
                     + "".join(f"\n  pid {pid}: {cmd}" for pid, cmd in left))
            continue
        if code != 0:
            fail(f"attempt failed with exit {code}: {read(attempt.err).decode()}")
            break
        left = survivors(attempt.token, grace=0.5)
        if left:
            kill_all(left)
            fail(f"run {completed + 1} finished but left {len(left)} process(es) alive"
                 + "".join(f"\n  pid {pid}: {cmd}" for pid, cmd in left))
        completed += 1
        check(attempt, f"run {completed} (after {kills} kills)")
        fresh = True
    final = Attempt(job(state), work, run_cwd)
    if finish(final, "the final run", args.attempt_timeout) is not None:
        completed += 1
        check(final, "final run")
    print(f"stress: {kills} kills, {completed} completed runs compared, {failures} failures "
          f"({lines_total:,} lines, uninterrupted run {full_time:.1f} s)"
          + "".join(f"; table {t}: {len(r):,} rows" for t, r in expected_tables.items()))
    if server is not None:
        server.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
