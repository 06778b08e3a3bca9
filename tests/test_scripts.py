"""test_scripts/: the generator is seeded and honest; validate.py reports every diff."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, generate

VALIDATE = str(ROOT / "test_scripts" / "validate.py")


def test_generator_is_deterministic_and_has_what_it_promises(tmp_path):
    """Same seed, same bytes; duplicates, status-only sites and mixed ids are present."""
    a = generate(tmp_path / "a", 5000, 3, "--mixed-site-ids").read_bytes()
    b = generate(tmp_path / "b", 5000, 3, "--mixed-site-ids").read_bytes()
    assert a == b
    lines = [x for x in a.split(b"\n") if x.strip()]
    assert len(a.split(b"\n")) - 1 == 5000
    recs = [json.loads(x) for x in lines]
    ids = [r["id"] for r in recs]
    assert len(set(ids)) < len(ids)  # duplicates
    assert any(isinstance(r["site_id"], int) for r in recs)
    assert len({len(str(r["site_id"])) for r in recs}) > 3
    by_site = {}
    for r in recs:
        by_site.setdefault(str(r["site_id"]), set()).add(r["type"])
    assert {"status"} in by_site.values()  # status-only sites
    ts = [r["timestamp"] for r in recs]
    assert ts != sorted(ts)  # out of order


def test_validate_identical_and_different(tmp_path):
    """Exit 0 when identical; exit 1 listing every differing site and field."""
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.write_text("1,messages=1,emails=0,operators=1,visitors=2\n"
                 "2,messages=0,emails=0,operators=1,visitors=0\n")
    b.write_text("1,messages=1,emails=3,operators=1,visitors=1\n"
                 "3,messages=0,emails=0,operators=1,visitors=0\n")
    same = subprocess.run([sys.executable, VALIDATE, str(a), str(a)], capture_output=True,
                          text=True)
    assert same.returncode == 0
    diff = subprocess.run([sys.executable, VALIDATE, str(a), str(b)], capture_output=True,
                          text=True)
    assert diff.returncode == 1
    assert diff.stdout.splitlines() == [
        "site '1': emails 0 != 3", "site '1': visitors 2 != 1",
        f"site '2': only in {a}", f"site '3': only in {b}"]


def test_the_database_benchmark_runs_small(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "db_benchmark.py"),
                        "--rows", "3000", "--runs", "1", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout.splitlines()
    assert [line.split()[0] for line in out[2:7]] == [
        "sqlite-insert", "sqlite-upsert", "postgres-insert", "postgres-upsert", "jsonl"]
    assert out[-1] == "every table holds every row once: yes"
