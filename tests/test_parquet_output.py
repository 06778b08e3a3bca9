"""parquet-output: exact values by column type, rejects that name the field, a file
written only at the end, resumed after kills without a row twice, read by DuckDB."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import duckdb
import pyarrow.parquet as pq
import pytest

import main
from conftest import ROOT, cli, generate
from pipeline import ConfigError
from pipeline.config import parse_config

REG = main.build_registry()

MIXED = [
    '{"id": 1, "n": 1, "f": 1.5, "s": "a", "b": true, "j": {"x": [1, 2]}, '
    '"d": {"status": "ok"}}',
    '{"id": "1", "n": -9223372036854775808, "f": 2, "s": "\U0001F600 non-BMP", "b": false, '
    '"j": [1, "a"], "d": {}}',
    '{"id": 3, "n": null, "f": -0.0, "s": "' + "x" * 100_000 + '", "j": 1e22}',
    "not json",
    '{"id": 4, "n": 9223372036854775808, "f": 0.1}',
    '{"id": 5, "n": 5, "f": 9007199254740993}',
    '{"id": 6, "n": "7"}',
    '{"id": 7, "n": 18446744073709551616000, "f": 1}',
]

CONFIG = """pipeline:
  - file-input: {path: in.jsonl}
  - json-decode: {schema: object}
  - parquet-output:
      path: out.parquet
      columns: {id: json, n: int, f: float, s: auto, b: auto, j: json, d.status: auto}
"""


def run_mixed(tmp_path):
    (tmp_path / "in.jsonl").write_text("\n".join(MIXED) + "\n")
    (tmp_path / "p.yaml").write_text(CONFIG)
    return cli("-c", "p.yaml", "--state-dir", "state", cwd=tmp_path)


def test_values_keep_their_types_and_misfits_are_rejected_naming_the_field(tmp_path):
    """Each column type holds its values exactly (int64 to its limits, -0.0, non-BMP and
    very long text, JSON text for json); a value its column cannot hold exactly sends
    the record to the dead-letter file with the field and the reason."""
    p = run_mixed(tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr.endswith("sluice: 8 lines read, 7 records; rejected 5 of 8 lines "
                             "(reasons in state/dead_letter.jsonl)\n")
    table = pq.read_table(tmp_path / "out.parquet")
    assert [str(t) for t in table.schema.types] == [
        "string", "int64", "double", "string", "bool", "string", "string"]
    rows = table.to_pylist()
    assert rows == [
        {"id": "1", "n": 1, "f": 1.5, "s": "a", "b": True, "j": '{"x":[1,2]}',
         "d.status": "ok"},
        {"id": '"1"', "n": -2**63, "f": 2.0, "s": "\U0001F600 non-BMP", "b": False,
         "j": '[1,"a"]', "d.status": None},
        {"id": "3", "n": None, "f": -0.0, "s": "x" * 100_000, "b": None, "j": "1e22",
         "d.status": None},
    ]
    assert math.copysign(1.0, rows[2]["f"]) == -1.0
    dead = [json.loads(x) for x in (tmp_path / "state" / "dead_letter.jsonl").read_text()
            .splitlines()]
    assert [(d["line"], d["stage"], d["reason"]) for d in dead] == [
        (4, "json-decode", "invalid JSON: invalid character (byte 4)"),
        (5, "parquet-output", "field 'n': expected an integer within int64, got "
                              "9223372036854775808, beyond int64"),
        (6, "parquet-output", "field 'f': expected a number (an integer only up to 2**53, "
                              "exact as a double), got 9007199254740993, beyond 2**53, not "
                              "exact as a double"),
        (7, "parquet-output", "field 'n': expected an integer within int64, got a string"),
        (8, "parquet-output", "field 'n': expected an integer within int64, got "
                              "18446744073709551616000, beyond int64"),
    ]
    assert dead[1]["raw"] == MIXED[4].replace(" ", "")
    # DuckDB reads the file as it is
    got = duckdb.sql(f"select n, s, j from '{tmp_path / 'out.parquet'}' order by n nulls last"
                     ).fetchall()
    assert [(n, len(s), j) for n, s, j in got] == [
        (-2**63, 9, '[1,"a"]'), (1, 1, '{"x":[1,2]}'), (None, 100_000, "1e22")]


def test_auto_columns_take_the_type_of_their_first_values(tmp_path):
    """int, float (ints and fractions), string, bool, json (mixed), and string for a
    column with no value yet; a later value of another type is rejected, saying how
    the type was chosen."""
    first = [{"a": 1, "b": 1, "c": "x", "d": True, "e": 1, "g": None},
             {"a": 2, "b": 2.5, "c": "y", "d": False, "e": "1"}]
    later = [{"a": 2.5, "pad": "." * 80}, {"a": 3, "g": "late", "pad": "." * 70},
             {"a": 4, "g": 5, "pad": "." * 70}]  # one batch each
    lines = [json.dumps(r) for r in first] + [json.dumps(r) for r in later]
    # a small block_size: the later records come in later batches
    text = "\n".join(lines) + "\n"
    (tmp_path / "in.jsonl").write_text(text)
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  - file-input: {path: in.jsonl, block_size: 110}\n"
        "  - json-decode: {schema: object}\n"
        "  - parquet-output: {path: out.parquet, columns: [a, b, c, d, e, g]}\n")
    p = cli("-c", "p.yaml", "--state-dir", "state", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert [str(t) for t in table.schema.types] == [
        "int64", "double", "string", "bool", "string", "string"]
    assert table.column("e").to_pylist() == ["1", '"1"', None]
    assert table.column("g").to_pylist() == [None, None, "late"]
    dead = [json.loads(x) for x in (tmp_path / "state" / "dead_letter.jsonl").read_text()
            .splitlines()]
    assert [(d["line"], d["reason"]) for d in dead] == [
        (3, "field 'a': expected an integer within int64, got a number (the column's type "
            "was inferred from its first values; declare another in `columns`)"),
        (5, "field 'g': expected a string, got an integer (the column's type was inferred "
            "from its first values; declare another in `columns`)"),
    ]


def test_the_file_appears_only_at_the_end_and_a_rerun_keeps_it(tmp_path):
    """A failing run leaves the user's file at PATH as it was; a finished run's rerun
    says it is complete and leaves the same bytes; a file replaced since is not taken
    for the run's output: the run starts over and writes the right one."""
    (tmp_path / "out.parquet").write_text("the user's own file\n")
    (tmp_path / "in.jsonl").write_text("\n".join(MIXED) + "\n")
    (tmp_path / "p.yaml").write_text(CONFIG)
    p = cli("-c", "p.yaml", "--state-dir", "state", "--strict", cwd=tmp_path)
    assert p.returncode == 1
    assert (tmp_path / "out.parquet").read_text() == "the user's own file\n"
    p = run_mixed(tmp_path)
    assert p.returncode == 0, p.stderr
    first = (tmp_path / "out.parquet").read_bytes()
    assert not (tmp_path / "out.parquet.partial").exists()
    p = run_mixed(tmp_path)
    assert p.returncode == 0, p.stderr
    assert "already complete" in p.stderr
    assert (tmp_path / "out.parquet").read_bytes() == first
    pq.write_table(pq.read_table(tmp_path / "out.parquet").slice(0, 1),
                   tmp_path / "out.parquet")
    p = run_mixed(tmp_path)
    assert p.returncode == 0, p.stderr
    assert "out.parquet.partial is damaged" in p.stderr
    assert (tmp_path / "out.parquet").read_bytes() == first


@pytest.mark.parametrize("options,message", [
    ('{path: "-", columns: [id]}',
     "stage 'parquet-output': Parquet cannot go to standard output (its footer is written "
     "last): give `path` a file name"),
    ("{path: o.parquet, columns: []}",
     "stage 'parquet-output': `columns` must be a non-empty list of names, or a mapping of "
     "name to type"),
    ("{path: o.parquet, columns: [id, id]}",
     "stage 'parquet-output': `columns` names a column twice: ['id', 'id']"),
    ("{path: o.parquet, columns: {id: integer}}",
     "stage 'parquet-output': column 'id' has type 'integer'; expected one of string, int, "
     "float, bool, json or auto"),
    ("{path: o.parquet, columns: [id], row_group_rows: 0}",
     "stage 'parquet-output': option 'row_group_rows' must be > 0; got 0"),
    ("{path: o.parquet, columns: [id, sender]}",
     "stage 'parquet-output': column 'sender' is not among type, id, from, site_id, "
     "timestamp, data.status, the fields of the records 'json-decode' produces"),
])
def test_config_mistakes_are_one_line(options, message):
    text = ("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {}\n"
            f"  - parquet-output: {options}\n")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.yaml", REG)
    assert str(err.value) == "x.yaml:4: " + message


AGGREGATE = """pipeline:
  - file-input: {path: in.jsonl}
  - json-decode: {}
  - aggregate:
      by: [site_id, type]
      metrics: {n: count, senders: count_distinct(from), first: min(timestamp)}
  - parquet-output:
      path: out.parquet
      columns: {site_id: json, type: string, n: int, senders: int, first: float}
      row_group_rows: 500
"""
STREAM = """pipeline:
  - file-input: {path: in.jsonl}
  - json-decode: {schema: object}
  - parquet-output:
      path: out.parquet
      columns: {id: string, site_id: json, from: string, timestamp: float, data.status: auto}
      row_group_rows: 1000
"""


@pytest.mark.parametrize("text,workers", [(STREAM, "1"), (AGGREGATE, "2")])
def test_sigkills_never_change_the_file(tmp_path, text, workers):
    """stress_kill.py: SIGKILLs at random moments; the file is byte-for-byte the one an
    uninterrupted run writes (its bytes do not depend on where a run was stopped)."""
    cfg = tmp_path / "p.yaml"
    cfg.write_text(text)
    log = generate(tmp_path / "log.jsonl", 30_000, 5, "--mixed-site-ids", "--bad-rate",
                   "0.01")
    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "stress_kill.py"),
                        "--config", str(cfg), "--input", str(log), "--compare",
                        "out.parquet", "--kills", "6", "--seed", "3", "--workers", workers,
                        "--max-seconds", "200"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 failures" in p.stdout


def test_a_file_in_the_way_of_the_parts_is_left_alone(tmp_path):
    """PATH.partial that is not a directory of parts is the user's: refused, untouched."""
    (tmp_path / "out.parquet.partial").write_text("mine\n")
    p = run_mixed(tmp_path)
    assert (p.returncode, p.stderr) == (2, (
        "sluice: error: output file out.parquet: out.parquet.partial exists and is not the "
        "directory of parts a run of parquet-output makes; move it away or remove it\n"))
    assert (tmp_path / "out.parquet.partial").read_text() == "mine\n"
    assert not (tmp_path / "out.parquet").exists()
