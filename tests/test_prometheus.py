"""The Prometheus endpoint (--metrics-port, config `metrics:`): scraped with an HTTP
client while a followed pipeline and a plain one run, its counters move; a port in use
or a bad `metrics:` section is one line and exit 2."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import ROOT, cli
from pgserver import free_port

MAIN = str(ROOT / "main.py")
WINDOWED = """pipeline:
  - file-input: {path: in.jsonl}
  - json-decode: {schema: object}
  - count: {field: site, window: {field: t, size: 10}}
  - csv-output: {path: out.csv, columns: [ws, we, site, n]}
"""


def scrape(port):
    """{(name, labels): value} of the endpoint's samples."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"(\w+)(\{[^}]*\})? (\S+)$", line)
        if m and not line.startswith("#"):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def wait_for_endpoint(port, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return scrape(port)
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the metrics endpoint never answered")


def lines(start, n, bad_every=7):
    return "".join("not json\n" if i % bad_every == 0 else
                   json.dumps({"t": i // 10, "site": f"s{i % 3}"}) + "\n"
                   for i in range(start, start + n))


def test_a_followed_run_serves_counters_that_move(tmp_path):
    port = free_port()
    log = tmp_path / "in.jsonl"
    log.write_text(lines(0, 300))
    (tmp_path / "p.yaml").write_text(WINDOWED)
    proc = subprocess.Popen([sys.executable, MAIN, "-c", "p.yaml", "--state-dir", "s",
                             "--follow", "--emit-every", "0.2", "--checkpoint-every", "50",
                             "--metrics-port", str(port)], cwd=tmp_path,
                            stderr=subprocess.PIPE)
    try:
        first = wait_for_endpoint(port, proc)
        deadline = time.monotonic() + 20
        while (first.get(("sluice_lines_read_total", ""), 0) < 300
               or first.get(("sluice_windows_emitted_total", ""), 0) < 2) \
                and time.monotonic() < deadline:  # read, then counted: a moment apart
            time.sleep(0.1)
            first = scrape(port)
        with open(log, "a") as fh:
            fh.write(lines(300, 400))
        deadline = time.monotonic() + 20
        second = first
        ckpt = ("sluice_checkpoints_total", "")
        while (second[("sluice_lines_read_total", "")] < 700 or second[ckpt] <= first[ckpt]
               or second[("sluice_windows_emitted_total", "")] < 6
               or second.get(("sluice_stage_records_in_total", '{stage="count"}')) != 600) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
            second = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert first[("sluice_lines_read_total", "")] == 300
    assert second[("sluice_lines_read_total", "")] == 700
    assert second[("sluice_bytes_read_total", "")] == len(lines(0, 700).encode())
    assert second[("sluice_input_lag_bytes", "")] == 0
    decode = ("sluice_stage_records_out_total", '{stage="json-decode"}')
    assert first[decode] == 300 - 43 and second[decode] == 700 - 100
    assert second[("sluice_stage_records_in_total", '{stage="count"}')] == 600
    rejects = ("sluice_rejects_total", '{reason="invalid JSON: invalid character (byte _)",'
                                       'stage="json-decode"}')
    assert first[rejects] == 43 and second[rejects] == 100
    assert second[("sluice_windows_emitted_total", "")] > first[("sluice_windows_emitted_total",
                                                                  "")] > 0
    assert second[("sluice_windows_open", "")] == 1
    assert second[("sluice_checkpoints_total", "")] > first[("sluice_checkpoints_total", "")]
    assert 0 <= second[("sluice_checkpoint_age_seconds", "")] < 30
    assert second[("sluice_state_bytes", "")] > 0
    assert second[("sluice_memory_budget_bytes", "")] == 512 << 20
    with socket.socket() as s:  # the endpoint ends with the run
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_plain_run_from_stdin_serves_them_too_from_the_config(tmp_path):
    """A chain without a reducer runs in this process: its stages' counts are live."""
    port = free_port()
    (tmp_path / "p.yaml").write_text(
        f"metrics: {{port: {port}}}\npipeline:\n"
        "  - file-input: {path: '-', block_size: 4096}\n"
        "  - json-decode: {schema: object}\n  - jsonl-output: {path: out.jsonl}\n")
    proc = subprocess.Popen([sys.executable, MAIN, "-c", "p.yaml", "--state-dir", "s"],
                            cwd=tmp_path, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(lines(0, 500).encode())
    proc.stdin.flush()
    got = wait_for_endpoint(port, proc)
    deadline = time.monotonic() + 20
    while got[("sluice_lines_read_total", "")] < 300 and time.monotonic() < deadline:
        time.sleep(0.1)  # (the last block waits for stdin to end)
        got = scrape(port)
    proc.stdin.close()
    proc.wait(timeout=30)
    err = proc.stderr.read()
    assert proc.returncode == 0, err.decode()
    assert got[("sluice_lines_read_total", "")] >= 300
    assert got[("sluice_stage_records_out_total", '{stage="json-decode"}')] > 250


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "in.jsonl").write_text(lines(0, 10))
    (tmp_path / "p.yaml").write_text(WINDOWED)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = cli("-c", "p.yaml", "--metrics-port", str(port), cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == (f"sluice: error: --metrics-port {port}: cannot serve metrics "
                                f"on 127.0.0.1:{port}: Address already in use; choose "
                                f"another port")


def test_a_bad_metrics_section_names_the_line(tmp_path):
    (tmp_path / "p.yaml").write_text("metrics: {port: 70000}\n" + WINDOWED)
    p = cli("validate", "p.yaml", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == ("sluice: error: p.yaml:1: metrics: 'port' must be a TCP "
                                "port, 1 to 65535; got 70000")
