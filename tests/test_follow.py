"""--follow: a run that keeps reading a growing log and shows its current result."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SUMMARY, cli, generate
from reference import parse, summarize

MAIN = str(ROOT / "main.py")


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    path = tmp_path_factory.mktemp("follow") / "all.jsonl"
    generate(path, 3000, 61, "--mixed-site-ids", "--conflicting-dups", "--bad-rate", "0.01",
             "--sites", "12")
    return path.read_bytes().split(b"\n")[:-1]


def start(log, state, out, *extra, env=None):
    return subprocess.Popen([sys.executable, MAIN, "-c", SUMMARY, "-f", str(log),
                             "--state-dir", str(state), "--follow", *extra],
                            stdout=open(out, "wb"), stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})


def blocks(out):
    """The summaries printed so far: each emission ends with an empty line."""
    text = out.read_text()
    return [b + "\n" if b else "" for b in text.split("\n\n")[:-1]]


def wait_for(predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def append(log, chunk):
    with open(log, "ab") as fh:
        fh.write(chunk)


def prefix_summaries(lines, ends):
    return {summarize(b"\n".join(lines[:n]) + b"\n" if n else b"") for n in ends}


def test_emissions_are_exact_for_a_prefix_and_the_last_for_the_whole_file(lines, tmp_path):
    """While a writer appends (a line sometimes split across writes), each emission is
    the reference summary of whole lines so far; after it stops, of the whole file."""
    log, out = tmp_path / "live.jsonl", tmp_path / "out.txt"
    log.write_bytes(b"")
    proc = start(log, tmp_path / "s", out, "--emit-every", "0.3")
    ends = [0]
    for n in range(0, len(lines), 250):
        chunk = b"\n".join(lines[n:n + 250]) + b"\n"
        half = len(chunk) // 2
        append(log, chunk[:half])  # the last line of this write has no newline yet
        ends.append(n + chunk[:half].count(b"\n"))
        time.sleep(0.15)
        append(log, chunk[half:])
        ends.append(min(n + 250, len(lines)))
        time.sleep(0.25)
    whole = summarize(log.read_bytes())
    assert wait_for(lambda: blocks(out) and blocks(out)[-1] == whole)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    got = blocks(out)
    assert len(got) >= 4 and got[-1] == whole
    known = prefix_summaries(lines, ends)
    for block in got:  # emitted between two writes, or in the middle of one
        if block not in known:
            known |= prefix_summaries(lines, range(len(lines) + 1))
        assert block in known


def test_sigkill_while_appending_then_rerun_counts_nothing_twice(lines, tmp_path):
    """Killed mid-stream and restarted, the run goes on following; its emissions are
    exact for the whole file: no record lost or counted twice."""
    log, state = tmp_path / "live.jsonl", tmp_path / "s"
    log.write_bytes(b"")
    first = start(log, state, tmp_path / "out1.txt", "--emit-every", "0.3",
                  "--checkpoint-every", "200")
    for n in range(0, 1500, 100):
        append(log, b"\n".join(lines[n:n + 100]) + b"\n")
        time.sleep(0.1)
    first.kill()
    first.communicate(timeout=30)
    out = tmp_path / "out2.txt"
    second = start(log, state, out, "--emit-every", "0.3")
    for n in range(1500, len(lines), 100):
        append(log, b"\n".join(lines[n:n + 100]) + b"\n")
        time.sleep(0.05)
    whole = summarize(log.read_bytes())
    assert wait_for(lambda: blocks(out) and blocks(out)[-1] == whole), blocks(out)[-1:]
    second.send_signal(signal.SIGINT)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert "resumed at line" in err.decode()


def test_sigterm_emits_and_checkpoints_then_a_rerun_reads_nothing(lines, tmp_path):
    """SIGTERM: a last emission, a final checkpoint, exit 0; the rerun resumes at the
    end with nothing new and shows the same summary."""
    log, state = tmp_path / "live.jsonl", tmp_path / "s"
    log.write_bytes(b"\n".join(lines[:1000]) + b"\n")
    out = tmp_path / "out.txt"
    proc = start(log, state, out, "--emit-every", "60")
    time.sleep(1.5)  # caught up, and no emission is due for a minute
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert blocks(out) == [summarize(log.read_bytes())]
    assert err.decode().splitlines()[-1].startswith("sluice: 1,000 lines read, ")
    out2 = tmp_path / "out2.txt"
    again = start(log, state, out2, "--emit-every", "0.2")
    assert wait_for(lambda: blocks(out2))
    again.send_signal(signal.SIGTERM)
    _, err2 = again.communicate(timeout=30)
    assert again.returncode == 0
    assert "resumed at line 1,001" in err2.decode()
    assert "1,000 lines read (0 this run)" in err2.decode()
    assert blocks(out2)[-1] == summarize(log.read_bytes())


def test_a_truncated_log_while_following_starts_over(lines, tmp_path):
    """A followed file cut short is a new file: one notice, and the run starts over."""
    log, out = tmp_path / "live.jsonl", tmp_path / "out.txt"
    log.write_bytes(b"\n".join(lines[:800]) + b"\n")
    proc = start(log, tmp_path / "s", out, "--emit-every", "0.2")
    assert wait_for(lambda: blocks(out))
    with open(log, "r+b") as fh:
        fh.truncate(0)
    append(log, b"\n".join(lines[2000:2300]) + b"\n")
    want = summarize(log.read_bytes())
    assert wait_for(lambda: blocks(out)[-1] == want)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"sluice: the input file {log} was truncated while it was followed; starting " \
           f"over" in err.decode()


def test_idle_following_uses_next_to_no_cpu(lines, tmp_path):
    """Once caught up, polling costs under 2% of one core."""
    log = tmp_path / "live.jsonl"
    log.write_bytes(b"\n".join(lines[:500]) + b"\n")
    proc = start(log, tmp_path / "s", tmp_path / "out.txt", "--emit-every", "1")
    time.sleep(2.5)

    def cpu() -> float:
        with open(f"/proc/{proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    before, t0 = cpu(), time.monotonic()
    time.sleep(4)
    used = (cpu() - before) / (time.monotonic() - t0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert used < 0.02, f"{used:.1%} of a core while idle"


def test_a_pipeline_without_a_reducer_streams_as_lines_arrive(lines, tmp_path):
    """No reducer: records go to the output as they come; SIGTERM ends it with exit 0."""
    cfg = tmp_path / "statuses.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: x, follow: true}\n  - json-decode\n"
                   "  - where: {field: type, equals: status}\n  - jsonl-output: {path: '-'}\n")
    log, out = tmp_path / "live.jsonl", tmp_path / "out.txt"
    log.write_bytes(b"\n".join(lines[:300]) + b"\n")
    proc = subprocess.Popen([sys.executable, MAIN, "-c", str(cfg), "-f", str(log),
                             "--state-dir", str(tmp_path / "s")],
                            stdout=open(out, "wb"), stderr=subprocess.PIPE)
    assert wait_for(lambda: out.stat().st_size > 0)
    seen = out.read_bytes().count(b"\n")
    append(log, b"\n".join(lines[300:900]) + b"\n")
    assert wait_for(lambda: out.read_bytes().count(b"\n") > seen)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.read_bytes().count(b'"type":"status"') == out.read_bytes().count(b"\n")


@pytest.mark.parametrize("extra,message", [
    (["-w", "2"], "sluice: error: --follow runs in one process: leave out -w/--workers (and "
                  "`workers:` in the config), or set it to 1\n"),
    (["--executor", "dask"], "sluice: error: --follow runs in one process: leave out "
                             "--executor dask\n"),
])
def test_following_is_one_process(tmp_path, extra, message):
    """Workers and Dask are refused with one line, before anything is read."""
    p = cli("-c", SUMMARY, "-f", str(tmp_path / "x.jsonl"), "--state-dir", str(tmp_path),
            "--follow", *extra)
    assert p.returncode == 2
    assert p.stderr == message


def test_stdin_with_follow_reads_to_its_end(tmp_path):
    """`-f -` with --follow reads standard input to its end, as without it."""
    sample = (ROOT / "tests" / "data" / "sample" / "input.jsonl").read_text()
    p = cli("-c", SUMMARY, "-f", "-", "--state-dir", str(tmp_path), "--follow", stdin=sample)
    assert p.returncode == 0
    assert p.stdout == (ROOT / "tests" / "data" / "sample" / "expected.txt").read_text()


def test_a_file_output_after_a_reducer_is_replaced_at_each_emission(lines, tmp_path):
    """csv-output after a reducer rewrites its whole file, atomically, each time."""
    cfg = tmp_path / "types.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: x}\n  - json-decode\n"
                   "  - count: {field: type}\n  - csv-output: {path: types.csv, columns: [t, n]}\n"
                   "emit: {every_seconds: 0.3}\n")
    log, csv = tmp_path / "live.jsonl", tmp_path / "types.csv"
    log.write_bytes(b"\n".join(lines[:400]) + b"\n")

    def counted(n):
        counts = {}
        for line in lines[:n]:
            rec = parse(line)
            if rec is not None:
                counts[rec["type"]] = counts.get(rec["type"], 0) + 1
        return "t,n\n" + "".join(f"{k},{v}\n" for k, v in sorted(counts.items()))
    proc = subprocess.Popen([sys.executable, MAIN, "-c", str(cfg), "-f", str(log),
                             "--state-dir", str(tmp_path / "s"), "--follow"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert wait_for(lambda: csv.exists() and csv.read_text() == counted(400))
    append(log, b"\n".join(lines[400:1200]) + b"\n")
    assert wait_for(lambda: csv.read_text() == counted(1200))
    assert not (tmp_path / "types.csv.partial").exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert csv.read_text() == counted(1200)
