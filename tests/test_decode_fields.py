"""json-decode's `fields:`: declared fields and types, checked as records are decoded."""
from __future__ import annotations

import json
import random

import pytest

from conftest import cli

FIELDS = "{id: str, timestamp: float, data.status: str}"
LINES = ['{"id":"a","timestamp":1,"data":{"status":"online"}}',
         '{"id":"b","timestamp":"x"}',
         '{"id":3,"timestamp":2.5}',
         '{"id":"c","data":5}',
         '{"id":"d","timestamp":null,"data":{"status":7}}',
         '{"id":"e","timestamp":true}',
         '{"id":"f","timestamp":9007199254740993,"other":[1,{"k":null}]}',
         '{"id":"g"}',
         '{"id":"h","timestamp":-0.0,"data":{"status":null,"x":1}}']


def config(tmp_path, fields: str = FIELDS, schema: str = "object", extra: str = "") -> str:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl" + extra + "}\n"
                   f"  - json-decode:\n      schema: {schema}\n      fields: {fields}\n"
                   "  - jsonl-output: {path: '-'}\n")
    return str(cfg)


def run(tmp_path, lines, *args, **kw):
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    p = cli("-c", config(tmp_path, **kw), "--state-dir", str(tmp_path / "s"), *args,
            cwd=tmp_path)
    dead = tmp_path / "s" / "dead_letter.jsonl"
    rejects = [json.loads(x) for x in dead.read_text().splitlines()] if dead.exists() else []
    return p, rejects


def test_declared_fields_are_checked_and_floats_become_floats(tmp_path):
    """A declared field may be missing or null; a value of another type rejects the
    record, naming the field, its type and the value; an integer in a float field
    becomes a float (rounded beyond 2**53); fields not declared pass as they are."""
    p, rejects = run(tmp_path, LINES)
    assert p.returncode == 0, p.stderr
    assert p.stdout == ('{"id":"a","timestamp":1.0,"data":{"status":"online"}}\n'
                        '{"id":"f","timestamp":9007199254740992.0,"other":[1,{"k":null}]}\n'
                        '{"id":"g"}\n'
                        '{"id":"h","timestamp":-0.0,"data":{"status":null,"x":1}}\n')
    assert [(r["line"], r["offset"], r["reason"]) for r in rejects] == [
        (2, 52, "field 'timestamp': expected float (declared in fields); got string 'x'"),
        (3, 79, "field 'id': expected str (declared in fields); got integer 3"),
        (4, 104, "field 'data': expected object (declared in fields); got integer 5"),
        (5, 124, "field 'data.status': expected str (declared in fields); got integer 7"),
        (6, 172, "field 'timestamp': expected float (declared in fields); got bool true")]
    assert all(r["stage"] == "json-decode" for r in rejects)
    assert [r["raw"] for r in rejects] == [LINES[i] for i in (1, 2, 3, 4, 5)]
    assert "sluice: 9 lines read, 4 records; rejected 5 of 9 lines" in p.stderr


@pytest.mark.parametrize("fields,accepted,rejected", [
    ("{n: int}", ['{"n":1}', '{"n":-99999999999999999999999}', '{"n":null}', '{}'],
     ['{"n":1.0}', '{"n":true}', '{"n":"1"}']),
    ("{b: bool}", ['{"b":false}'], ['{"b":0}', '{"b":"true"}']),
    ("{a: array, o: object}", ['{"a":[],"o":{"k":[1]}}'], ['{"a":{}}', '{"o":[]}']),
    ("{data: object, data.status: str}", ['{"data":{"status":"x","y":2}}', '{"data":{}}'],
     ['{"data":{"status":1}}', '{"data":"s"}']),
    ("{data.status: str, data: object}", ['{"data":{"status":"x"}}'], ['{"data":{"status":[]}}']),
    ('{"@timestamp": str, "from": str}', ['{"@timestamp":"t","from":"v"}'], ['{"from":1}']),
])
def test_each_type_takes_its_own_json_values_only(tmp_path, fields, accepted, rejected):
    p, rejects = run(tmp_path, accepted + rejected, fields=fields)
    assert p.returncode == 0, p.stderr
    assert [json.loads(x) for x in p.stdout.splitlines()] == [json.loads(x) for x in accepted]
    assert [r["raw"] for r in rejects] == rejected
    assert all("(declared in fields)" in r["reason"] for r in rejects)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_across_blocks_and_workers_the_right_lines_are_rejected(tmp_path, workers):
    """Bad records anywhere in small blocks, next to invalid JSON and blank lines: the
    records kept and the lines rejected equal a plain check of each line."""
    rnd = random.Random(int(workers))
    lines, want, bad = [], [], []
    for i in range(6000):
        kind = rnd.random()
        if kind < 0.05:
            lines.append(json.dumps({"id": i, "timestamp": 1}))          # id not a string
            bad.append(len(lines))
        elif kind < 0.07:
            lines.append('{"id": "x", ')                                  # invalid JSON
            bad.append(len(lines))
        elif kind < 0.08:
            lines.append("")                                               # skipped
        else:
            ts = rnd.choice([i, i + 0.5, None])
            lines.append(json.dumps({"id": f"r{i}", "timestamp": ts}))
            want.append({"id": f"r{i}", "timestamp": None if ts is None else float(ts)})
    p, rejects = run(tmp_path, lines, "-w", workers, fields="{id: str, timestamp: float}",
                     extra=", block_size: 4096")
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in p.stdout.splitlines()]
    assert got == want
    assert all(isinstance(r["timestamp"], float) for r in got if r["timestamp"] is not None)
    assert [r["line"] for r in rejects] == bad


@pytest.mark.parametrize("fields,schema,error", [
    ("{timestamp: flaot}", "object", "p.yaml:5: stage 'json-decode': option 'fields' gives "
     "field 'timestamp' the type 'flaot'; the types are str, int, float, bool, object, "
     "array (did you mean 'float'?)"),
    ("{id: str}", "site-event", "p.yaml:3: stage 'json-decode': option 'fields' needs "
     "schema: object (site-event records have their own)"),
    ("{a..b: str}", "object", "p.yaml:5: stage 'json-decode': option 'fields' names a "
     "field that is not a dotted JSON name: 'a..b'"),
    ("{}", "object", "p.yaml:5: stage 'json-decode': option 'fields' must name at least "
     "one field, as in {id: str, timestamp: float}"),
    ("{data: str, data.status: str}", "object", "p.yaml:5: stage 'json-decode': option "
     "'fields' declares field 'data.status' inside 'data', which it declares str, not "
     "object"),
    ("{a: [str]}", "object", "p.yaml:5: stage 'json-decode': option 'fields' gives field "
     "'a' the type ['str']; the types are str, int, float, bool, object, array (did you "
     "mean 'str'?)"),
    ("[id]", "object", "p.yaml:5: stage 'json-decode': option 'fields' must be dict; "
     "got list ['id']"),
])
def test_a_bad_declaration_is_a_config_error(tmp_path, fields, schema, error):
    (tmp_path / "in.jsonl").write_text('{"id":"a"}\n')
    p = cli("-c", config(tmp_path, fields=fields, schema=schema),
            "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr == f"sluice: error: {tmp_path / error}\n"
    assert p.stdout == ""
