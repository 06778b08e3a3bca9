#!/usr/bin/env python3
"""SIGKILL only the main process of `main.py -w 2`, again and again: nothing may survive.

    python test_scripts/orphans.py --kills 200

Each attempt starts the summary job with two workers (while --load busy processes keep
the CPUs contended), sleeps a random time concentrated around worker start-up
(0-1 s), and SIGKILLs the main pid alone, as the OOM killer would. Then:

- no process of that attempt may be left (found by an environment token, so a worker
  that was re-parented still counts); survivors are reported with pid and command
  line, killed, and counted as failures;
- the state lock must be free at once (checked after every kill), and every tenth
  kill is followed by a run to the end, which must print the summary.

Exit 0 with no survivors and every rerun successful, 1 otherwise. It also reports how
long the job takes to start its two workers.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import TOKEN, kill_all, survivors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSY = ("import ctypes, signal\n"
        "ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)\n"  # die with this script
        "while True: pass\n")


def lock_free(path: str) -> bool:
    """Can a new run take this lock? (Released by the kernel when its holder dies.)"""
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--lines", type=int, default=40_000)
    p.add_argument("--load", type=int, default=os.cpu_count() or 1,
                   help="busy processes competing for the CPUs meanwhile")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=1800)
    p.add_argument("--workdir")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.workdir or tempfile.mkdtemp(prefix="sluice-orphans-")
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, "log.jsonl")
    subprocess.run([sys.executable, os.path.join(ROOT, "test_scripts", "generate.py"),
                    "--lines", str(args.lines), "--seed", str(args.seed), "-o", log],
                   check=True, timeout=300)
    state = os.path.join(work, "state")
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "-c",
           os.path.join(ROOT, "configs", "summary.yaml"), "-f", log, "--state-dir", state,
           "-w", "2", "--checkpoint-every", "2000"]
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.load)]
    deadline = time.monotonic() + args.max_seconds
    kills = failures = reruns = 0
    starts: list[float] = []
    try:
        while kills < args.kills and time.monotonic() < deadline:
            token = f"orphans-{os.getpid()}-{kills}"
            env = {**os.environ, TOKEN: token}
            with open(os.devnull, "wb") as null:
                proc = subprocess.Popen(cmd + ["--fresh"], stdout=null, stderr=null,
                                        stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
                time.sleep(rng.choice([rng.uniform(0, 1), rng.uniform(0, 0.3)]))
                os.kill(proc.pid, signal.SIGKILL)  # the main process only
                proc.wait(timeout=30)
            kills += 1
            left = survivors(token)
            if left:
                failures += 1
                print(f"orphans: kill {kills}: {len(left)} process(es) outlived the run"
                      + "".join(f"\n  pid {pid}: {c}" for pid, c in left), flush=True)
                kill_all(left)
            for name in os.listdir(state) if os.path.isdir(state) else ():
                if name.endswith(".lock") and not lock_free(os.path.join(state, name)):
                    failures += 1
                    print(f"orphans: kill {kills}: {name} is still locked", flush=True)
            if kills % 10 == 0 or kills == args.kills:
                t0 = time.monotonic()
                rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                                       stdin=subprocess.DEVNULL)
                starts.append(time.monotonic() - t0)
                reruns += 1
                if rerun.returncode != 0 or not rerun.stdout:
                    failures += 1
                    print(f"orphans: the run after kill {kills} failed (exit "
                          f"{rerun.returncode}): {rerun.stderr.strip()}", flush=True)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    runs = f", complete runs {min(starts):.2f}-{max(starts):.2f} s" if starts else ""
    print(f"orphans: {kills} kills of the main process, {reruns} reruns, {failures} failures "
          f"(load {args.load}{runs})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
