"""No process outlives its run, and the kill harness cannot hang on one that does."""
from __future__ import annotations

import shlex
import subprocess
import sys
import time

from conftest import ROOT

SCRIPTS = ROOT / "test_scripts"


def test_no_worker_outlives_a_killed_main_process():
    """orphans.py: SIGKILL the main pid of `-w 2` runs around worker start-up, under CPU
    load; no process of the run is left and the state lock is free every time."""
    p = subprocess.run([sys.executable, str(SCRIPTS / "orphans.py"), "--kills", "20",
                        "--lines", "40000", "--max-seconds", "240"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1].startswith(
        "orphans: 20 kills of the main process, 2 reruns, 0 failures")


def test_stress_kill_reports_a_planted_survivor_within_its_bound(tmp_path):
    """A process that escapes the run's session and holds its outputs is reported with
    its pid and command line, killed, and counted; the harness does not wait on it."""
    plant = tmp_path / "plant.py"
    plant.write_text(
        "import os, subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],\n"
        "                 start_new_session=True)\n"
        f"os.execv(sys.executable, [sys.executable, {str(ROOT / 'main.py')!r}] + sys.argv[1:])\n")
    start = time.monotonic()
    p = subprocess.run([sys.executable, str(SCRIPTS / "stress_kill.py"), "--lines", "3000",
                        "--kills", "2", "--max-seconds", "20", "--workdir", str(tmp_path / "w"),
                        "--command", f"{shlex.quote(sys.executable)} {shlex.quote(str(plant))}"],
                       capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 90
    assert p.returncode == 1
    assert "the uninterrupted run finished but left 1 process(es) alive" in p.stdout
    assert "time.sleep(600)" in p.stdout and "  pid " in p.stdout
    left = subprocess.run(["pgrep", "-f", "time.sleep\\(600\\)"], capture_output=True, text=True)
    assert left.stdout == ""
