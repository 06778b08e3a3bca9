"""A run without reducers and with several workers runs in parts: the workers decode,
process and encode ranges of the input, and the outputs write the parts in input
order. What it writes is byte for byte what one process writes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cli, generate
from pipeline.state.checkpoint import read_checked_json

FILTER = """pipeline:
  - file-input: {path: x}
  - json-decode: {schema: object}
  - where: {field: type, equals: message}
  - mutate:
      rename: {from: sender, data.status: status}
      set: {source: chat-log}
      convert: {site_id: str}
  - jsonl-output: {path: OUT/out.jsonl}
"""
CSV = """pipeline:
  - file-input: {path: x}
  - json-decode: {schema: object}
  - csv-output: {path: OUT/out.csv, columns: [id, site_id, from, data.status, timestamp]}
"""
REJECTS = """pipeline:
  - file-input: {path: x}
  - json-decode: {schema: object}
  - mutate: {convert: {site_id: int}}
  - jsonl-output: {path: OUT/out.jsonl}
"""
FORK = """pipeline:
  - file-input: {path: x}
  - json-decode: {schema: object}
  - fork:
      messages:
        - where: {field: type, equals: message}
        - jsonl-output: {path: OUT/messages.jsonl}
      table:
        - csv-output: {path: OUT/table.csv, columns: [type, site_id]}
"""


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("parts") / "log.jsonl"
    return generate(path, 8000, 23, "--mixed-site-ids", "--bad-rate", "0.02",
                    "--sites", "30", "--dup-rate", "0.1")


def config(tmp_path: Path, text: str, name: str) -> tuple[Path, Path]:
    out = tmp_path / name
    out.mkdir()
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(text.replace("OUT", str(out)))
    return cfg, out


def run(cfg: Path, log: Path, state: Path, *extra: str) -> subprocess.CompletedProcess:
    p = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(state), *extra)
    assert p.returncode == 0, p.stderr
    return p


def plan_of(state: Path) -> dict | None:
    plans = list(state.glob("*/plan.json"))
    return read_checked_json(plans[0]) if plans else None


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("text", [FILTER, CSV, FORK, REJECTS],
                         ids=["filter", "csv", "fork", "mutate-rejects"])
def test_parts_write_what_one_process_writes(tmp_path, log, text):
    """-w 3 runs in parts (a plan of several map tasks, capturing encoded bytes);
    -w 1 runs straight. Outputs, dead-letter file and report are identical."""
    one_cfg, one_out = config(tmp_path, text, "one")
    many_cfg, many_out = config(tmp_path, text, "many")
    one = run(one_cfg, log, tmp_path / "s1", "-w", "1")
    many = run(many_cfg, log, tmp_path / "s3", "-w", "3")
    assert plan_of(tmp_path / "s1") is None
    plan = plan_of(tmp_path / "s3")
    assert plan is not None and plan["parts"] is True and len(plan["ranges"]) >= 3
    assert files(many_out) == files(one_out)
    assert not list(many_out.glob("*.partial"))
    dead = [(tmp_path / s / "dead_letter.jsonl").read_text() for s in ("s1", "s3")]
    assert dead[0] == dead[1] and len(dead[0].splitlines()) > 50
    lines = log.read_bytes().split(b"\n")
    for entry in map(json.loads, dead[1].splitlines()):
        assert lines[entry["line"] - 1].decode("utf-8", "backslashreplace") == entry["raw"]
    last = [p.stderr.splitlines()[-1].replace(str(tmp_path / s), "STATE")
            for p, s in ((one, "s1"), (many, "s3"))]
    assert last[0] == last[1]


def test_parts_stats_count_every_record_once(tmp_path, log):
    """--stats of a run in parts: the output's records are those `where` passed on,
    once, and its time includes the workers' encoding."""
    cfg, _ = config(tmp_path, FILTER, "out")
    one = run(cfg, log, tmp_path / "s1", "-w", "1", "--stats", "--fresh")
    many = run(cfg, log, tmp_path / "s2", "-w", "2", "--stats", "--fresh")

    def counts(p: subprocess.CompletedProcess) -> dict[str, list[str]]:
        rows = [x.split() for x in p.stderr.splitlines()[1:6]]
        return {r[0]: r[1:4] for r in rows}
    assert counts(many) == counts(one)
    assert counts(many)["jsonl-output"][0] == counts(many)["where"][1]


def test_stdout_and_unsplittable_outputs_stay_straight(tmp_path, log):
    """An output to stdout is written as the run goes (a reader sees lines at once),
    and parquet cannot be written in parts: both run straight with -w 2."""
    for text in (FILTER.replace("OUT/out.jsonl", '"-"'),
                 FILTER.replace("jsonl-output: {path: OUT/out.jsonl}",
                                "parquet-output: {path: OUT/out.parquet, columns: [id, sender]}")):
        name = f"o{len(list(tmp_path.iterdir()))}"
        cfg, _ = config(tmp_path, text, name)
        state = tmp_path / f"state-{name}"
        run(cfg, log, state, "-w", "2")
        assert plan_of(state) is None


def test_a_compressed_input_stays_straight(tmp_path, log):
    """A .gz file is read as one piece: in parts it would only be written twice."""
    import gzip
    packed = tmp_path / "log.jsonl.gz"
    packed.write_bytes(gzip.compress(log.read_bytes()))
    cfg, out = config(tmp_path, FILTER, "out")
    run(cfg, packed, tmp_path / "s", "-w", "2")
    assert plan_of(tmp_path / "s") is None
    cfg1, out1 = config(tmp_path, FILTER, "plain")
    run(cfg1, log, tmp_path / "s1", "-w", "1")
    assert files(out) == files(out1)


def test_a_resumed_run_keeps_its_way(tmp_path, log):
    """A run in parts, rerun with -w 1, stays in parts (its finished tasks are
    reused); state of a straight run, rerun with -w 2, stays straight."""
    cfg, out = config(tmp_path, FILTER, "out")
    run(cfg, log, tmp_path / "p", "-w", "2")
    want = files(out)
    again = run(cfg, log, tmp_path / "p", "-w", "1")
    assert "map tasks had finished (nothing new to read)" in again.stderr
    assert files(out) == want
    run(cfg, log, tmp_path / "s", "-w", "1")
    again = run(cfg, log, tmp_path / "s", "-w", "2")
    assert plan_of(tmp_path / "s") is None and files(out) == want
    fresh = run(cfg, log, tmp_path / "s", "-w", "2", "--fresh")
    assert plan_of(tmp_path / "s")["parts"] is True and files(out) == want
    assert "--fresh: discarded the saved state" in fresh.stderr


def test_stress_kill_in_parts(tmp_path):
    """SIGKILLs at random moments of a run in parts: the output file is exact."""
    cfg = tmp_path / "filter.yaml"
    cfg.write_text(FILTER.replace("OUT/out.jsonl", "out.jsonl"))
    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "stress_kill.py"),
                        "--config", str(cfg), "--compare", "out.jsonl", "--lines", "30000",
                        "--kills", "6", "--seed", "5", "--workers", "2",
                        "--max-seconds", "200"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 failures" in p.stdout
