"""on_failure: dead-letter | keep | drop, on every processor that can reject a record:
json-decode, where, mutate, route and aggregate. Exact outputs, dead letters, final
lines and config errors; kept records tagged with `_failures` without touching another
branch's records; the counts survive a resume at every batch boundary."""
from __future__ import annotations

import json

import pytest

from conftest import cli
from pipeline import Batch
from pipeline.testing import Context, check_resume
from stages.aggregate import Aggregate
from stages.json_decode import JsonDecode
from stages.mutate import Mutate
from stages.where import Where

LINES = ['{"id":1,"s":"500","n":2}', 'not json', '{"id":2,"s":"x","n":"two"}', '',
         '[1,2]', '{"id":3,"s":"404","n":4}', '{"id":4,"s":"7","n":null}']


def run(tmp_path, stages, lines=LINES, data=None):
    """main.py over `lines` with `stages` (YAML text) between json-decode and a JSON
    lines output: (exit code, records, dead letters, stderr)."""
    (tmp_path / "in.jsonl").write_bytes(data if data is not None else
                                        "".join(x + "\n" for x in lines).encode())
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  - file-input: {path: in.jsonl}\n" + stages +
        "  - jsonl-output: {path: '-'}\n")
    p = cli("-c", str(tmp_path / "p.yaml"), "-f", str(tmp_path / "in.jsonl"),
            "--state-dir", str(tmp_path / "s"), "--fresh")
    dead = tmp_path / "s" / "dead_letter.jsonl"
    letters = [json.loads(x) for x in dead.read_text().splitlines()] if dead.exists() else []
    return (p.returncode, [json.loads(x) for x in p.stdout.splitlines()], letters,
            p.stderr.splitlines()[-1] if p.stderr else "")


# -- json-decode -------------------------------------------------------------------------

def test_json_decode_keep_makes_each_bad_line_a_message_in_line_order(tmp_path):
    code, out, dead, last = run(tmp_path, "  - json-decode: {schema: object, on_failure: keep}\n")
    assert code == 0 and dead == []
    assert out == [
        {"id": 1, "s": "500", "n": 2},
        {"message": "not json", "_failures": [{"stage": "json-decode", "reason":
                                                "invalid JSON: invalid character (byte 4)"}]},
        {"id": 2, "s": "x", "n": "two"},
        {"message": "[1,2]", "_failures": [{"stage": "json-decode", "reason":
                                             "not a JSON object: expected `object`, got `array`"}]},
        {"id": 3, "s": "404", "n": 4}, {"id": 4, "s": "7", "n": None}]
    assert last == ("sluice: 7 lines read, 6 records, 2 failures kept in _failures; "
                    "rejected 0 of 7 lines")


def test_json_decode_keep_replaces_invalid_utf8_and_checks_declared_fields(tmp_path):
    data = b'{"a":1}\n\xff\xfe{"a":2}\n{"a":"three"}\n'
    code, out, dead, _ = run(tmp_path, "  - json-decode: {schema: object, fields: {a: int}, "
                                       "on_failure: keep}\n", data=data)
    assert code == 0 and dead == []
    assert out == [
        {"a": 1},
        {"message": "\ufffd\ufffd{\"a\":2}", "_failures": [
            {"stage": "json-decode", "reason": "invalid UTF-8 at byte 0"}]},
        {"message": '{"a":"three"}', "_failures": [
            {"stage": "json-decode", "reason":
             "field 'a': expected int (declared in fields); got string 'three'"}]}]


def test_json_decode_drop_counts_and_dead_letter_is_the_default(tmp_path):
    code, out, dead, last = run(tmp_path, "  - json-decode: {schema: object, on_failure: drop}\n")
    assert code == 0 and dead == [] and [r["id"] for r in out] == [1, 2, 3, 4]
    assert last == ("sluice: 7 lines read, 4 records, 2 dropped on failure; "
                    "rejected 0 of 7 lines")
    code, out, dead, last = run(tmp_path, "  - json-decode: {schema: object}\n")
    assert [d["line"] for d in dead] == [2, 5] and [r["id"] for r in out] == [1, 2, 3, 4]
    assert last.endswith("rejected 2 of 7 lines (reasons in "
                         f"{tmp_path / 's' / 'dead_letter.jsonl'})")


def test_json_decode_keep_needs_object_records(tmp_path):
    code, _, _, last = run(tmp_path, "  - json-decode: {on_failure: keep}\n")
    assert code == 2
    assert last == (f"sluice: error: {tmp_path / 'p.yaml'}:3: stage 'json-decode': "
                    "on_failure: keep needs schema: object (a line it fails on goes on as "
                    '{"message": the line, "_failures": [...]})')


# -- where -------------------------------------------------------------------------------

WHERE = "  - where: {if: \"TRY_CAST(s AS INTEGER) >= 400 OR n > 3\", on_failure: %s}\n"


def test_where_keep_passes_a_record_it_cannot_test_on_tagged(tmp_path):
    code, out, dead, last = run(tmp_path, "  - json-decode: {schema: object}\n"
                                + WHERE % "keep")
    assert code == 0
    assert [d["line"] for d in dead] == [2, 5]  # json-decode's, as before
    assert [r["id"] for r in out] == [1, 2, 3]
    assert out[1]["_failures"][0]["stage"] == "where"
    assert out[1]["_failures"][0]["reason"].startswith(
        "condition `TRY_CAST(s AS INTEGER) >= 400 OR n > 3`: Cannot compare values of type "
        "VARCHAR and type INTEGER_LITERAL")
    assert "_failures" not in out[0] and "_failures" not in out[2]
    assert last.startswith("sluice: 7 lines read, 4 records, 1 failures kept in _failures;")


@pytest.mark.parametrize("policy,letters", [("drop", 0), ("dead-letter", 1)])
def test_where_drop_and_dead_letter(tmp_path, policy, letters):
    code, out, dead, last = run(tmp_path, "  - json-decode: {schema: object}\n"
                                + WHERE % policy)
    assert code == 0 and [r["id"] for r in out] == [1, 3]
    assert len([d for d in dead if d["stage"] == "where"]) == letters
    assert ("1 dropped on failure" in last) == (policy == "drop")


def run_split(tmp_path, lines, split):
    """main.py over `lines` into a fork or route (`split`, YAML), writing files in
    tmp_path; its stderr."""
    (tmp_path / "in.jsonl").write_text("".join(x + "\n" for x in lines))
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"
        + split)
    p = cli("-c", str(tmp_path / "p.yaml"), "-f", str(tmp_path / "in.jsonl"), "-w", "1",
            "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    return p.stderr


def test_keep_in_one_fork_branch_does_not_tag_the_other_branchs_records(tmp_path):
    run_split(tmp_path, ['{"id":1,"n":"x"}', '{"id":2,"n":5}'],
              "  - fork:\n"
              "      tagged:\n        - where: {if: \"n > 3\", on_failure: keep}\n"
              "        - jsonl-output: {path: a.jsonl}\n"
              "      plain:\n        - jsonl-output: {path: b.jsonl}\n")
    a = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r.get("_failures", [{}])[0].get("stage") for r in a] == ["where", None]
    assert (tmp_path / "b.jsonl").read_text() == '{"id":1,"n":"x"}\n{"id":2,"n":5}\n'


def test_keep_needs_object_records(tmp_path):
    code, _, _, last = run(tmp_path, "  - json-decode: {}\n"
                                     "  - where: {if: \"type = 'x'\", on_failure: keep}\n")
    assert code == 2
    assert last == (f"sluice: error: {tmp_path / 'p.yaml'}:4: stage 'where': on_failure: "
                    "keep adds a `_failures` field to a record it fails on, so it needs "
                    "object records; it is given site-event records (from 'json-decode')")


def test_a_bad_policy_is_a_config_error(tmp_path):
    code, _, _, last = run(tmp_path, "  - json-decode: {schema: object, on_failure: skip}\n")
    assert code == 2
    assert last.startswith(f"sluice: error: {tmp_path / 'p.yaml'}:3: stage 'json-decode': "
                           "option 'on_failure' must be one of")


# -- mutate ------------------------------------------------------------------------------

MUTATE = ("  - mutate: {rename: {s: code.value}, convert: {n: int}, "
          "compute: {double: \"n * 2\"}, on_failure: %s}\n")


def test_mutate_keep_leaves_each_failed_operation_undone(tmp_path):
    code, out, dead, _ = run(tmp_path, "  - json-decode: {schema: object}\n"
                                       "  - mutate: {set: {code: 5}}\n" + MUTATE % "keep")
    assert code == 0 and [d["stage"] for d in dead] == ["json-decode"] * 2
    # rename into a number fails and is undone: `s` stays where it was; then convert
    # and compute still run on the record
    assert out[0] == {"id": 1, "s": "500", "n": 2, "code": 5, "double": 4, "_failures": [
        {"stage": "mutate", "reason": "field 'code.value': cannot set it: 'code' is an "
                                      "integer, not an object"}]}
    assert out[1]["n"] == "two" and "double" not in out[1]
    assert [f["reason"] for f in out[1]["_failures"]] == [
        "field 'code.value': cannot set it: 'code' is an integer, not an object",
        "field 'n': cannot convert 'two' to int"] + [out[1]["_failures"][2]["reason"]]
    assert out[1]["_failures"][2]["reason"].startswith("compute 'double': ")
    assert out[3] == {"id": 4, "s": "7", "n": None, "code": 5, "double": None,
                      "_failures": out[3]["_failures"]}
    assert len(out) == 4


def test_mutate_keep_on_records_not_columns():
    """A stage given dicts (not columns) takes the record-by-record path."""
    stage = Mutate(convert={"n": "int"}, set={"k": 1}, on_failure="keep")
    stage.open(Context())
    out = [r for b in stage.process(iter([Batch([{"n": "1"}, {"n": "x", "_failures": "old"}])]))
           for r in b]
    assert out == [{"n": 1, "k": 1}, {"n": "x", "k": 1, "_failures": [
        "old", {"stage": "mutate", "reason": "field 'n': cannot convert 'x' to int"}]}]
    assert stage.counters()["kept_with_failures"] == 1


@pytest.mark.parametrize("policy", ["drop", "dead-letter"])
def test_mutate_drop_and_dead_letter(tmp_path, policy):
    code, out, dead, last = run(tmp_path, "  - json-decode: {schema: object}\n"
                                          "  - mutate: {convert: {n: int}, on_failure: %s}\n"
                                % policy)
    assert code == 0 and [r["id"] for r in out] == [1, 3]  # null is no int either
    assert sorted(d["stage"] for d in dead) == ["json-decode"] * 2 + (
        ["mutate"] * 2 if policy == "dead-letter" else [])
    assert ("2 dropped on failure" in last) == (policy == "drop")


# -- route -------------------------------------------------------------------------------

def test_route_keep_treats_a_failed_condition_as_false_and_goes_on(tmp_path):
    stderr = run_split(tmp_path, ['{"id":1,"n":"x"}', '{"id":2,"n":5}', '{"id":3,"n":1}'],
                       "  - route:\n      on_failure: keep\n"
                       "      big: {if: \"n > 3\", stages: [jsonl-output: {path: big.jsonl}]}\n"
                       "      default: [jsonl-output: {path: rest.jsonl}]\n")
    assert (tmp_path / "big.jsonl").read_text() == '{"id":2,"n":5}\n'
    rest = [json.loads(x) for x in (tmp_path / "rest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rest] == [1, 3]
    assert rest[0]["_failures"][0]["reason"].startswith(
        "route branch 'big': condition `n > 3`: ")
    assert "1 failures kept in _failures" in stderr


def test_route_keep_tags_every_failed_condition_with_mode_all(tmp_path):
    stderr = run_split(tmp_path, ['{"id":1,"n":"x","m":"y"}', '{"id":2,"n":5,"m":"y"}'],
                       "  - route:\n      mode: all\n      on_failure: keep\n"
                       "      big: {if: \"n > 3\", stages: [jsonl-output: {path: big.jsonl}]}\n"
                       "      m: {if: \"m > 3\", stages: [jsonl-output: {path: m.jsonl}]}\n"
                       "      default: [jsonl-output: {path: rest.jsonl}]\n")
    def reasons(name):
        return [[f["reason"].split(":")[0] for f in json.loads(x)["_failures"]]
                for x in (tmp_path / name).read_text().splitlines()]
    assert reasons("rest.jsonl") == [["route branch 'big'", "route branch 'm'"]]
    assert reasons("big.jsonl") == [["route branch 'm'"]]  # true for big, failed for m
    assert not (tmp_path / "m.jsonl").read_text()
    assert "3 failures kept in _failures" in stderr


def test_route_on_failure_must_be_a_policy(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"
        "  - route:\n      on_failure: ignore\n"
        "      big: {if: \"n > 3\", stages: [jsonl-output: {path: big.jsonl}]}\n")
    p = cli("validate", "-c", str(tmp_path / "p.yaml"))
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: {tmp_path / 'p.yaml'}:5: route: `on_failure` must be "
                        "'dead-letter', 'keep' or 'drop'; got 'ignore'\n")


# -- aggregate ---------------------------------------------------------------------------

@pytest.mark.parametrize("policy,expected,letters", [
    ("dead-letter", {"g": 1, "n": 2, "s": 6, "hi": 4}, 1),
    ("drop", {"g": 1, "n": 2, "s": 6, "hi": 4}, 0),
    ("keep", {"g": 1, "n": 3, "s": 6, "hi": 4}, 0),  # counted; its value missing
])
def test_aggregate_policies(policy, expected, letters):
    stage = Aggregate(by=["g"], metrics={"n": "count", "s": "sum(v)", "hi": "max(v)"},
                      on_failure=policy)
    ctx = Context()
    stage.open(ctx)
    stage.update(Batch([{"g": 1, "v": 2}, {"g": 1, "v": "zz"}, {"g": 1, "v": 4}]))
    assert [r for b in stage.finish() for r in b] == [expected]
    assert len(ctx.rejected) == letters


# -- resume --------------------------------------------------------------------------------

def batches():
    records = [{"n": i if i % 3 else "bad", "g": i % 2} for i in range(40)]
    return [Batch(records[i:i + 7]) for i in range(0, 40, 7)]


@pytest.mark.parametrize("policy", ["keep", "drop"])
@pytest.mark.parametrize("make", [
    lambda p: Where(**{"if": "n > 5", "on_failure": p}),
    lambda p: Mutate(convert={"n": "int"}, compute={"m": "n + 1"}, on_failure=p),
    lambda p: Aggregate(by=["g"], metrics={"s": "avg(n)"}, on_failure=p),
], ids=["where", "mutate", "aggregate"])
def test_failure_counts_resume_at_every_batch_boundary(make, policy, tmp_path):
    out = check_resume(lambda: make(policy), batches(), tmp_path)
    if policy == "drop":
        assert out.counters["dropped_on_failure"] == 14
    else:  # failures, not records: mutate fails twice on each (convert, then compute)
        twice = isinstance(make(policy), Mutate)
        assert out.counters["kept_with_failures"] == (28 if twice else 14)
    assert out.rejected == []


def test_json_decode_failure_counts_resume():
    lines = Batch([b'{"a":1}', b"nope", b'{"a":2}'], first_line=1, first_offset=0)
    out = check_resume(lambda: JsonDecode(schema="object", on_failure="keep"),
                       [lines, lines, lines])
    assert out.counters["kept_with_failures"] == 3


def test_keep_and_drop_are_the_same_with_two_workers(tmp_path):
    """In parts (2 workers) the kept records come out in file order, as in one process."""
    from conftest import generate
    from pipeline.state.checkpoint import read_checked_json
    log = generate(tmp_path / "log.jsonl", 30000, 5, "--bad-rate", "0.02")
    stages = ("  - json-decode: {schema: object, on_failure: %s}\n"
              "  - where: {if: \"coalesce(timestamp, 1) > 0\", on_failure: %s}\n")
    for policy in ("keep", "drop"):
        outs = []
        for workers in ("1", "2"):
            (tmp_path / "p.yaml").write_text(
                "pipeline:\n  - file-input: {path: in.jsonl}\n" + stages % (policy, policy) +
                f"  - jsonl-output: {{path: out{workers}.jsonl}}\n")
            state = tmp_path / f"s{workers}"
            p = cli("-c", str(tmp_path / "p.yaml"), "-f", str(log), "-w", workers,
                    "--memory-mb", "1024", "--state-dir", str(state), "--fresh", cwd=tmp_path)
            assert p.returncode == 0, p.stderr
            outs.append(((tmp_path / f"out{workers}.jsonl").read_text(),
                         p.stderr.splitlines()[-1]))
            plans = list(state.glob("*/plan.json"))
            assert bool(plans and read_checked_json(plans[0])["parts"]) == (workers == "2")
        assert outs[0] == outs[1]
        kept = outs[0][0].count('"_failures"')
        assert (kept > 200) == (policy == "keep")
