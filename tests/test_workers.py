"""Partitioned runs (-w N) print exactly what one process prints."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, SUMMARY, cli, generate
from reference import summarize


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "log.jsonl"
    return generate(path, 8000, 17, "--mixed-site-ids", "--conflicting-dups",
                    "--bad-rate", "0.01", "--sites", "20", "--dup-rate", "0.1")


def run(log, state, *extra):
    return cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(state), *extra)


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_workers_match_one_process_and_reference(log, tmp_path, workers):
    """Output and dead-letter file are byte-identical to -w 1, with absolute lines."""
    one = run(log, tmp_path / "one", "-w", "1")
    many = run(log, tmp_path / "many", "-w", str(workers))
    assert many.returncode == 0
    assert many.stdout == one.stdout == summarize(log.read_bytes())
    dead_one = (tmp_path / "one" / "dead_letter.jsonl").read_text()
    dead_many = (tmp_path / "many" / "dead_letter.jsonl").read_text()
    assert dead_many == dead_one
    lines = log.read_bytes().split(b"\n")
    for entry in map(json.loads, dead_many.splitlines()):
        assert lines[entry["line"] - 1].decode("utf-8", "backslashreplace") == entry["raw"]
    last = [p.stderr.splitlines()[-1].replace(str(tmp_path / d), "STATE")
            for p, d in ((one, "one"), (many, "many"))]
    assert last[0] == last[1]


def test_workers_resume_and_rerun(log, tmp_path):
    """A finished partitioned run, rerun, reads nothing and prints the same."""
    first = run(log, tmp_path / "s", "-w", "2")
    again = run(log, tmp_path / "s", "-w", "2")
    assert again.stdout == first.stdout
    tasks = len([p for p in tmp_path.glob("s/*/s0/m*") if p.is_dir()])
    assert tasks >= 2
    assert f"resumed: all {tasks} map tasks had finished (nothing new to read)" in again.stderr
    assert "8,000 lines read (0 this run)" in again.stderr


def test_workers_appended_input(log, tmp_path):
    """Appended lines are read by new map tasks; the finished ones are reused."""
    copy = tmp_path / "log.jsonl"
    copy.write_bytes(log.read_bytes())
    run(copy, tmp_path / "s", "-w", "2")
    more = generate(tmp_path / "more.jsonl", 300, 3, "--sites", "4").read_bytes()
    with open(copy, "ab") as fh:
        fh.write(more)
    p = run(copy, tmp_path / "s", "-w", "2")
    assert p.stdout == summarize(copy.read_bytes())
    assert "8,300 lines read (300 this run)" in p.stderr


def test_worker_count_change_reuses_the_plan(log, tmp_path):
    """The map tasks do not depend on the worker count: a rerun with more reuses them."""
    run(log, tmp_path / "s", "-w", "2")
    p = run(log, tmp_path / "s", "-w", "3")
    assert "starting over" not in p.stderr and "8,000 lines read (0 this run)" in p.stderr
    assert p.stdout == summarize(log.read_bytes())


def test_strict_in_a_worker_names_the_absolute_line(tmp_path):
    """--strict with workers reports the line number within the whole file."""
    good = ('{"id":"%d","from":"v","type":"message","site_id":"1","timestamp":1}\n')
    data = "".join(good % i for i in range(3000)) + "broken\n" + good % 99999
    path = tmp_path / "log.jsonl"
    path.write_text(data)
    p = run(path, tmp_path / "s", "-w", "3", "--strict")
    assert p.returncode == 1
    assert p.stderr == ("sluice: error: line 3001: invalid JSON: invalid character (byte 0) "
                        "(--strict stops at the first rejected line)\n")


def test_stress_kill_with_workers():
    """stress_kill.py with 2 workers: SIGKILLs never change the eventual output."""
    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "stress_kill.py"),
                        "--lines", "20000", "--kills", "8", "--seed", "6", "--workers", "2",
                        "--max-seconds", "240"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 failures" in p.stdout


def test_benchmark_small(tmp_path):
    """benchmark.py on a small log: all runs and the reference agree; it prints its table."""
    pytest.importorskip("duckdb")
    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "benchmark.py"),
                        "--sizes", "20K", "--visitors", "5000", "--sites", "50",
                        "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [line.split() for line in p.stdout.splitlines() if line.strip().startswith("20,000")]
    assert [r[1] for r in rows] == ["sluice", "sluice-nock", "duckdb"]
    assert all(r[-1] == "yes" for r in rows)
    assert "checkpoint overhead" in p.stderr
    assert "compared: sluice, sluice-nock, duckdb, reference.py" in p.stderr


def test_benchmark_framework_jobs_small(tmp_path):
    """The framework jobs run against DuckDB in alternating pairs, their outputs equal
    DuckDB's, and the table gives each job's median ratio and input MB/s."""
    pytest.importorskip("duckdb")
    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "benchmark.py"),
                        "--jobs", "aggregate,count,filter,where-if,compute", "--pairs", "1",
                        "--sizes", "5K",
                        "--visitors", "2000", "--sites", "30", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [line.split() for line in p.stdout.splitlines() if line.strip().startswith("5,000")]
    assert [r[1] for r in rows] == ["aggregate/sluice", "aggregate/duckdb", "count/sluice",
                                    "count/duckdb", "filter/sluice", "filter/duckdb",
                                    "where-if/sluice", "where-if/duckdb", "compute/sluice",
                                    "compute/duckdb"]
    assert all(r[-1] == "yes" for r in rows)


def test_benchmark_compares_outputs_as_rows_and_numbers(tmp_path):
    """1429000000 and 1429000000.0 are one number; a changed count is a difference."""
    sys.path.insert(0, str(ROOT / "test_scripts"))
    from benchmark import framework_output

    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("type,count\nstatus,2\nmessage,1429000000\n")
    b.write_text("type,count\nmessage,1429000000.0\nstatus,2.0\n")
    c.write_text("type,count\nmessage,1429000000\nstatus,3\n")
    assert framework_output("csv", str(a)) == framework_output("csv", str(b))
    assert framework_output("csv", str(a)) != framework_output("csv", str(c))
