"""Finding every process of one run, wherever it ended up (used by the kill scripts).

Each run is started with SLUICE_RUN_TOKEN=<token> in its environment; its workers
inherit it, so `processes(token)` finds them even after they were re-parented or left
the session. Reading /proc/PID/environ needs the same user, which a test run has.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

TOKEN = "SLUICE_RUN_TOKEN"


def processes(token: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live, non-zombie process carrying `token`."""
    needle = f"{TOKEN}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue  # a zombie holds nothing; its parent just has not reaped it
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((int(name), cmd))
    return found


def survivors(token: str, grace: float = 2.0) -> list[tuple[int, str]]:
    """Processes of a killed run still alive after `grace` seconds (the kernel delivers
    the parent-death signal at once, but the process needs a moment to go)."""
    deadline = time.monotonic() + grace
    while True:
        left = processes(token)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def kill_all(found: list[tuple[int, str]]) -> None:
    for pid, _ in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_bounded(cmd: list[str], timeout: float, cwd: str | None = None
                ) -> tuple[int | None, bytes, str]:
    """(exit code, stdout, stderr) of `cmd` run in its own session; None as the exit code
    if it did not end within `timeout` seconds (its whole group is then killed)."""
    if cwd:
        os.makedirs(cwd, exist_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, b"", ""
    return proc.returncode, out, err.decode("utf-8", "replace")


def read(path: str) -> bytes:
    """A file's bytes; empty if it does not exist."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return b""
