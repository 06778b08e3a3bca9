"""SIGINT/SIGTERM to the main process only: a quick stop, a final checkpoint, a resume."""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SUMMARY, generate

sys.path.insert(0, str(ROOT / "test_scripts"))
from procs import TOKEN, kill_all, survivors  # noqa: E402

NOTICE = re.compile(r"^sluice: stopped by (SIGINT|SIGTERM) at line ([\d,]+); "
                    r"rerun the same command to resume$")


LINES = 1_000_000  # a run of about 2.5 s: the stop (0.05-0.8 s in) lands before its end


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("sig") / "log.jsonl"
    return generate(path, LINES, 23, "--mixed-site-ids", "--conflicting-dups",
                    "--bad-rate", "0.001", "--sites", "60")


@pytest.fixture(scope="module")
def expected(log, tmp_path_factory):
    state = tmp_path_factory.mktemp("ref")
    p = subprocess.run([sys.executable, str(ROOT / "main.py"), "-c", SUMMARY, "-f", str(log),
                        "--state-dir", str(state), "--no-checkpoint", "-w", "1"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout


def start(log, state, token, *extra):
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), "-c", SUMMARY, "-f",
                             str(log), "--state-dir", str(state), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, TOKEN: token}, start_new_session=True)


def stop_and_check(proc, token, sig, state, wait_for="*.lock"):
    """Send `sig` to the main pid once the run holds its lock; check exit and notice."""
    deadline = time.monotonic() + 60
    while not list(state.glob(wait_for)) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.05, 0.8))
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=10)
    finally:
        left = survivors(token, grace=1.0)
        kill_all(left)
    latency = time.monotonic() - sent
    return out, err, latency, left


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_signal_stops_quickly_with_a_checkpoint_and_resumes(log, expected, tmp_path, sig,
                                                            workers):
    """Exit within 2 s with 130/143 and one notice, nothing left, empty stdout; the
    rerun resumes past the stop and prints what an uninterrupted run prints."""
    state = tmp_path / "s"
    token = f"sig-{os.getpid()}-{sig}-{workers}"
    proc = start(log, state, token, "-w", workers)
    out, err, latency, left = stop_and_check(proc, token, sig, state)
    assert latency < 2.0, err
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], err
    assert not left
    assert out == ""
    notice = err.strip().splitlines()[-1]
    m = NOTICE.match(notice)
    assert m and m.group(1) == sig.name, err
    stopped_at = int(m.group(2).replace(",", ""))
    again = subprocess.run([sys.executable, str(ROOT / "main.py"), "-c", SUMMARY, "-f",
                            str(log), "--state-dir", str(state), "-w", workers],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout == expected
    done = int(again.stderr.split(" lines read (")[1].split(" this run")[0].replace(",", ""))
    assert done <= LINES - stopped_at  # nothing read twice that the stop had checkpointed
    assert "resumed" in again.stderr


def test_second_signal_exits_at_once(log, tmp_path):
    """A second signal while stopping means now: the process is gone at once."""
    state = tmp_path / "s"
    token = f"sig2-{os.getpid()}"
    proc = start(log, state, token, "-w", "2")
    deadline = time.monotonic() + 60
    while not list(state.glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode in (143, 0)
    left = survivors(token, grace=2.0)
    kill_all(left)
    assert not left


def test_dask_stops_on_sigterm_and_resumes(log, expected, tmp_path):
    """With --executor dask (a LocalCluster) too: exit 143 within 2 s, then resume."""
    pytest.importorskip("distributed")
    state = tmp_path / "s"
    token = f"sigd-{os.getpid()}"
    proc = start(log, state, token, "--executor", "dask", "--partition-mb", "4")
    out, err, latency, left = stop_and_check(proc, token, signal.SIGTERM, state,
                                             wait_for="*/s0/m*/spill.dat")
    assert proc.returncode == 143 and out == "" and not left, err
    assert latency < 2.0, err
    assert NOTICE.match(err.strip().splitlines()[-1]), err
    again = subprocess.run([sys.executable, str(ROOT / "main.py"), "-c", SUMMARY, "-f",
                            str(log), "--state-dir", str(state), "--executor", "dask",
                            "--partition-mb", "4"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout == expected
