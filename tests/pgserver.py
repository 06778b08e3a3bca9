"""A throwaway PostgreSQL server for the tests: initdb and pg_ctl from the binaries on
the machine, in a temporary directory, on 127.0.0.1 and a free port, with trust
authentication. It stops when the tests are done, and, if the test process dies first,
a watchdog process stops it (and removes its directory) within a second.

The binaries are found in $SLUICE_PG_BIN, else the newest /usr/lib/postgresql/*/bin,
else on PATH. Running as root, the server runs as the `postgres` user (initdb refuses
root). Not finding them is an error that says what to install, not a skip.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

WATCHDOG = r"""
import os, shutil, subprocess, sys, time
parent, ctl, data, root, user = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    if not os.path.isdir(data):
        sys.exit(0)  # stopped and removed by the tests themselves
    time.sleep(0.5)
cmd = [ctl, "-D", data, "-m", "immediate", "-w", "stop"]
subprocess.run((["runuser", "-u", user, "--"] if user else []) + cmd, capture_output=True)
shutil.rmtree(root, ignore_errors=True)
"""


def binaries() -> str:
    """The folder holding initdb and pg_ctl; RuntimeError naming what to install."""
    found = [os.environ.get("SLUICE_PG_BIN", "")]
    found += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                    reverse=True)
    on_path = shutil.which("initdb")
    found.append(os.path.dirname(on_path) if on_path else "")
    for folder in found:
        if folder and os.path.exists(os.path.join(folder, "initdb")) and \
                os.path.exists(os.path.join(folder, "pg_ctl")):
            return folder
    raise RuntimeError("the PostgreSQL server binaries (initdb, pg_ctl) are not on this "
                       "machine: install them (Debian: apt-get install postgresql) or set "
                       "SLUICE_PG_BIN to their folder")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self) -> None:
        self.bin = binaries()
        self.user = "postgres" if os.geteuid() == 0 else ""
        self.root = tempfile.mkdtemp(prefix="sluice-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.watchdog: subprocess.Popen | None = None

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        full = (["runuser", "-u", self.user, "--"] if self.user else []) + list(cmd)
        return subprocess.run(full, capture_output=True, text=True, timeout=120)

    def start(self) -> "Server":
        if self.user:
            shutil.chown(self.root, self.user)
        os.chmod(self.root, 0o700)
        made = self._run(os.path.join(self.bin, "initdb"), "-D", self.data, "--auth=trust",
                         "-U", "sluice", "-E", "UTF8", "--no-sync")
        if made.returncode:
            raise RuntimeError(f"initdb failed: {made.stderr.strip()}")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   f"-c fsync=off -c max_connections=50")
        started = self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-o", options,
                            "-l", os.path.join(self.root, "log"), "-w", "-t", "60", "start")
        if started.returncode:
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()} "
                               f"{started.stdout.strip()}")
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(os.getpid()),
             os.path.join(self.bin, "pg_ctl"), self.data, self.root, self.user],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # (a Ctrl-C to the tests does not kill it first)
        return self

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=sluice dbname={dbname}"

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate",
                  "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        if self.watchdog is not None:
            try:
                self.watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()


def wait_gone(port: int, seconds: float = 10.0) -> bool:
    """Whether nothing listens on the port any more, within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)):
                return True
        time.sleep(0.1)
    return False
