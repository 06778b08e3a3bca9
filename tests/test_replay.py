"""`main.py replay`: 1,000 lines rejected by a pipeline, the pipeline fixed, the dead
letters replayed: the table equals a clean run's of the fixed pipeline; a second replay
feeds nothing; lines that fail again keep their original place; --since; refusals."""
from __future__ import annotations

import json
import random
import sqlite3

import pytest

from conftest import cli

V1 = """pipeline:
  - file-input: {path: in.log}
  - grok: {match: "id=%{INT:id:int} site=%{WORD:site} n=%{INT:n:int}"}
  - sqlite-output: {path: out.db, table: rows, columns: [id, site, n]}
"""
V2 = V1.replace('match: "id=%{INT:id:int} site=%{WORD:site} n=%{INT:n:int}"',
                'match: ["id=%{INT:id:int} site=%{WORD:site} n=%{INT:n:int}", '
                '"id:%{INT:id:int} site:%{WORD:site} n:%{INT:n:int}"]')


def log(path, n=20_000, bad=1_000, hopeless=0, seed=4):
    rng = random.Random(seed)
    odd = set(rng.sample(range(n), bad + hopeless))
    worst = set(sorted(odd)[len(odd) - hopeless:])
    lines = []
    for i in range(n):
        site, value = f"s{rng.randint(0, 9)}", rng.randint(0, 999)
        if i in worst:
            lines.append(f"garbage {i}")
        elif i in odd:
            lines.append(f"id:{i} site:{site} n:{value}")
        else:
            lines.append(f"id={i} site={site} n={value}")
    path.write_text("\n".join(lines) + "\n")
    return lines


def rows(db):
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT id, site, n FROM rows").fetchall())


def run(cwd, text, *args, verb=()):
    (cwd / "p.yaml").write_text(text)
    return cli(*verb, "-c", "p.yaml", "--state-dir", "s", *args, cwd=cwd)


def test_a_fixed_pipeline_replays_the_rejected_lines_once(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    log(clean / "in.log")
    assert run(clean, V2).returncode == 0
    want = rows(clean / "out.db")
    assert len(want) == 20_000
    log(tmp_path / "in.log")
    first = run(tmp_path, V1)
    assert first.returncode == 0 and "rejected 1,000 of 20,000 lines" in first.stderr
    assert len(rows(tmp_path / "out.db")) == 19_000
    p = run(tmp_path, V2, verb=("replay",))
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith("sluice: replayed 1,000 lines (input lines ")
    assert p.stderr.strip().endswith("; 0 failed again")
    assert rows(tmp_path / "out.db") == want
    again = run(tmp_path, V2, verb=("replay",))
    assert again.returncode == 0
    assert again.stderr.strip() == ("sluice: nothing to replay in s/dead_letter.jsonl (1,000 "
                                    "lines replayed before, or before --since)")
    assert rows(tmp_path / "out.db") == want


def test_lines_that_fail_again_keep_their_place_and_since_chooses(tmp_path):
    lines = log(tmp_path / "in.log", n=2000, bad=40, hopeless=10)
    assert run(tmp_path, V1).returncode == 0
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text()
            .splitlines()]
    since = dead[25]["line"]
    p = run(tmp_path, V2, "--since", str(since), verb=("replay",))
    assert p.returncode == 0, p.stderr
    hopeless = [d for d in dead[25:] if lines[d["line"] - 1].startswith("garbage")]
    assert len(hopeless) == 10
    assert f"replayed {len(dead) - 25:,} lines (input lines {since:,} to " in p.stderr
    assert f"25 skipped (replayed before, or before --since); {len(hopeless)} failed " \
           f"again (reasons in s/dead_letter.replay-1.jsonl)" in p.stderr
    again = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.replay-1.jsonl")
             .read_text().splitlines()]
    assert [(a["line"], a["offset"], a["raw"], a["reason"]) for a in again] == [
        (d["line"], d["offset"], d["raw"], "no pattern matched") for d in hopeless]
    # the rest, once
    p = run(tmp_path, V2, verb=("replay",))
    assert "replayed 25 lines" in p.stderr
    assert len(rows(tmp_path / "out.db")) == 2000 - 10


@pytest.mark.parametrize("text, message", [
    (V2.replace("  - sqlite-output: {path: out.db, table: rows, columns: [id, site, n]}",
                "  - jsonl-output: {path: out.jsonl}"),
     "sluice: error: replay: jsonl-output (line 4) writes out.jsonl, which a replay would "
     "replace with the replayed records alone; replay into sqlite-output or postgres-output "
     "(mode: insert), or standard output"),
    (V2.replace("  - sqlite-output", "  - count: {field: site}\n  - sqlite-output"),
     "sluice: error: replay: count (line 4) keeps state across records: its result over "
     "the replayed lines alone would replace the run's; replay through a pipeline without "
     "reducers that ends in a database output"),
])
def test_a_pipeline_a_replay_would_spoil_is_refused(tmp_path, text, message):
    log(tmp_path / "in.log", n=10, bad=2)
    p = run(tmp_path, text.replace("columns: [id, site, n]", "columns: [site, count]"),
            verb=("replay",))
    assert p.returncode == 2
    assert p.stderr.strip() == message
