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

Exit 0 when every comparison matched and nothing survived, 1 otherwise, 2 on a setup
error.
"""
from __future__ import annotations

import argparse
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
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

    config = os.path.abspath(args.config)

    def job(state: str, *more: str) -> list[str]:
        return [*shlex.split(args.command), "-c", config, "-f", path, "--state-dir", state,
                *extra, *more]

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
    ref = Attempt(job(ref_state, "--no-checkpoint"), work, ref_cwd)
    if finish(ref, "the uninterrupted run", args.attempt_timeout) != 0:
        print(f"stress: the uninterrupted run failed: {read(ref.err).decode()}", file=sys.stderr)
        return 2
    full_time = time.monotonic() - t0
    expected = read(ref.out)
    expected_dead = read(os.path.join(ref_state, "dead_letter.jsonl"))
    expected_files = {f: read(os.path.join(ref_cwd, f)) for f in args.compare}
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
          f"({lines_total:,} lines, uninterrupted run {full_time:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
