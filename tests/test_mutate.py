"""mutate: every option, the conversion rules, dotted paths, site-event records, rejects;
and dotted names in fields.getter (where, count, csv-output)."""
from __future__ import annotations

import copy
import json

import msgspec
import pytest

from conftest import cli
from pipeline import Batch
from stages.fields import MISSING, column, delete_in, get_in, getter, set_in
from stages.json_decode import JsonDecode
from stages.mutate import Mutate


class Ctx:
    def __init__(self):
        self.rejected = []

    def reject(self, raw, reason, **where):
        self.rejected.append((raw, reason, where))


def mutate(records, **options):
    """(output records, [(raw, reason)]) of one Mutate over one batch."""
    stage, ctx = Mutate(**options), Ctx()
    stage.open(ctx)
    out = [r for b in stage.process(iter([Batch(records)])) for r in b]
    assert all(w["stage"] == "mutate" and w["at"] == (None, None) for _, _, w in ctx.rejected)
    return out, [(raw, reason) for raw, reason, _ in ctx.rejected]


def decode(*lines, schema="site-event"):
    dec = JsonDecode(schema=schema)
    dec.open(Ctx())
    return list(dec.process(iter([Batch(x.encode() for x in lines)])))[0]


# -- each option ----------------------------------------------------------------------

def test_rename_moves_the_value_to_the_new_name_at_the_end():
    out, rej = mutate([{"a": 1, "b": 2, "c": 3}], rename={"a": "z", "c": "b"})
    assert out == [{"b": 3, "z": 1}] and list(out[0]) == ["b", "z"]
    assert rej == []


def test_rename_of_a_missing_field_does_nothing():
    assert mutate([{"a": 1}], rename={"x": "y"}) == ([{"a": 1}], [])


def test_renames_apply_in_order():
    assert mutate([{"a": 1}], rename={"a": "b", "b": "c"})[0] == [{"c": 1}]


def test_remove_deletes_fields_and_ignores_missing_ones():
    assert mutate([{"a": 1, "b": 2, "c": {"d": 1, "e": 2}}], remove=["a", "x", "c.d", "c.x.y"]) \
        == ([{"b": 2, "c": {"e": 2}}], [])


def test_set_adds_or_replaces_and_creates_objects_on_the_way():
    out, _ = mutate([{"a": 1}, {"a": 2, "n": {"x": 1}}],
                    set={"a": "s", "n.m.k": [1, {"q": None}], "t": True})
    assert out == [{"a": "s", "n": {"m": {"k": [1, {"q": None}]}}, "t": True},
                   {"a": "s", "n": {"x": 1, "m": {"k": [1, {"q": None}]}}, "t": True}]
    out[0]["n"]["m"]["k"].append(9)  # each record has its own copy of a set value
    assert out[1]["n"]["m"]["k"] == [1, {"q": None}]


def test_copy_copies_deeply_and_ignores_missing_sources():
    out, _ = mutate([{"a": {"b": [1]}}, {"c": 1}], copy={"a": "z.a", "x": "y"})
    assert out == [{"a": {"b": [1]}, "z": {"a": {"b": [1]}}}, {"c": 1}]
    out[0]["z"]["a"]["b"].append(2)
    assert out[0]["a"] == {"b": [1]}


def test_operations_run_in_the_documented_order():
    """rename, remove, set, copy, convert, whatever order the options are given in."""
    out, _ = mutate([{"a": "5", "b": 1}], convert={"c": "int"}, copy={"k": "c"},
                    set={"k": "7"}, remove=["b"], rename={"a": "k"})
    # rename a->k ("5"), remove b, set k = "7", copy k -> c, convert c to 7
    assert out == [{"k": "7", "c": 7}]


def test_the_input_records_are_never_changed():
    """Nested objects shared with the input are copied before they change."""
    rec = {"a": {"b": 1, "c": 2}, "d": [1], "e": "5"}
    before = copy.deepcopy(rec)
    out, _ = mutate([rec], rename={"a.b": "a.x"}, remove=["a.c"], set={"a.y": 1},
                    convert={"e": "int"})
    assert rec == before
    assert out == [{"a": {"x": 1, "y": 1}, "d": [1], "e": 5}]


def test_at_least_one_operation_is_required(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode\n"
                   "  - mutate: {rename: {}}\n  - jsonl-output: {path: '-'}\n")
    p = cli("validate", "-c", str(cfg))
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: {cfg}:4: stage 'mutate': give at least one of "
                        "`rename`, `remove`, `set`, `copy`, `convert` or `compute`\n")


@pytest.mark.parametrize("options,problem", [
    ({"convert": {"a": "integer"}},
     "stage 'mutate': convert 'a': expected one of int, float, str, bool; got 'integer'"),
    ({"rename": {"a": 1}}, "stage 'mutate': `rename` maps field names to field names; "
                           "got {'a': 1}"),
    ({"copy": {"a..b": "c"}}, "stage 'mutate': `copy` maps field names to field names; "
                              "got {'a..b': 'c'}"),
    ({"remove": ["a", ""]}, "stage 'mutate': `remove` must be a list of field names; "
                            "got ['a', '']"),
    ({"set": {"a": float("nan")}}, "stage 'mutate': set 'a': nan is not a finite number"),
    ({"set": {"a": {"b": [1, float("inf")]}}},
     "stage 'mutate': set 'a.b[1]': inf is not a finite number"),
    ({"remove": []}, "stage 'mutate': give at least one of `rename`, `remove`, `set`, "
                     "`copy`, `convert` or `compute`"),
])
def test_bad_options_are_refused(options, problem):
    assert Mutate.check_options(options) == problem


def test_a_yaml_date_is_not_a_json_value(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode\n"
                   "  - mutate:\n      set: {day: 2015-04-14}\n  - jsonl-output: {path: '-'}\n")
    p = cli("validate", "-c", str(cfg))
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: {cfg}:4: stage 'mutate': set 'day': expected a JSON "
                        "value (string, number, bool, null, list or mapping); got date "
                        "datetime.date(2015, 4, 14)\n")


# -- convert ----------------------------------------------------------------------------

CONVERSIONS = [
    # (value, type, result) -- result None: rejected
    (5, "int", 5), (-7, "int", -7), (True, "int", 1), (False, "int", 0),
    (2.0, "int", 2), (-0.0, "int", 0), (1e20, "int", 100000000000000000000),
    (2.5, "int", None), ("42", "int", 42), ("-007", "int", -7), ("+3", "int", 3),
    ("1.0", "int", None), ("1e3", "int", None), (" 1", "int", None), ("1_0", "int", None),
    ("١٢", "int", None), ("", "int", None), ("abc", "int", None), (None, "int", None),
    ([1], "int", None), ({"a": 1}, "int", None),
    (1.5, "float", 1.5), (3, "float", 3.0), (2**53 + 1, "float", 9007199254740992.0),
    (10**400, "float", None), (True, "float", 1.0), ("1e3", "float", 1000.0),
    ("-.5", "float", -0.5), ("2.", "float", 2.0), ("+1.25E-2", "float", 0.0125),
    ("0.1", "float", 0.1), ("nan", "float", None), ("inf", "float", None),
    ("1e999", "float", None), ("1,5", "float", None), ("", "float", None),
    (None, "float", None), ([], "float", None),
    ("x", "str", "x"), (12, "str", "12"), (-3, "str", "-3"), (1.5, "str", "1.5"),
    (3.0, "str", "3.0"), (1e22, "str", "1e+22"), (1e-7, "str", "1e-07"),
    (1429026484.0, "str", "1429026484.0"), (True, "str", "true"), (False, "str", "false"),
    (None, "str", None), ([1], "str", None), ({}, "str", None),
    (True, "bool", True), (1, "bool", True), (0, "bool", False), (1.0, "bool", True),
    (0.0, "bool", False), ("true", "bool", True), ("false", "bool", False),
    ("1", "bool", True), ("0", "bool", False), (2, "bool", None), (0.5, "bool", None),
    ("True", "bool", None), ("yes", "bool", None), ("", "bool", None), (None, "bool", None),
    ([True], "bool", None),
]


@pytest.mark.parametrize("value,kind,result", CONVERSIONS,
                         ids=[f"{v!r:.20}-{k}" for v, k, _ in CONVERSIONS])
def test_convert(value, kind, result):
    out, rej = mutate([{"v": value, "k": 1}], convert={"v": kind})
    if result is None:
        assert out == []
        shown = repr(value) if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if len(shown) > 60:  # long values are cut
            shown = shown[:57] + "..."
        assert rej == [(msgspec.json.encode({"v": value, "k": 1}),
                        f"field 'v': cannot convert {shown} to {kind}")]
    else:
        assert rej == []
        assert out == [{"v": result, "k": 1}]
        assert type(out[0]["v"]) is type(result)


def test_convert_of_a_missing_field_does_nothing():
    assert mutate([{"a": 1}, {"v": {"w": 1}}], convert={"x": "int", "v.x": "str"}) == \
        ([{"a": 1}, {"v": {"w": 1}}], [])


def test_reject_reasons_name_the_field_and_the_value_exactly():
    out, rej = mutate([{"timestamp": "abc"}, {"data": {"n": "x"}}, {"s": "a" * 100}],
                      convert={"timestamp": "int", "data.n": "float", "s": "int"})
    assert out == []
    assert [r for _, r in rej] == [
        "field 'timestamp': cannot convert 'abc' to int",
        "field 'data.n': cannot convert 'x' to float",
        "field 's': cannot convert '" + "a" * 56 + "... to int",
    ]


def test_setting_inside_a_value_that_is_not_an_object_rejects():
    out, rej = mutate([{"data": "text", "a": 1}, {"data": None}, {"data": [1]}],
                      set={"data.status": "x"})
    assert out == []
    assert [r for _, r in rej] == [
        "field 'data.status': cannot set it: 'data' is a string, not an object",
        "field 'data.status': cannot set it: 'data' is null, not an object",
        "field 'data.status': cannot set it: 'data' is an array, not an object",
    ]
    out, rej = mutate([{"a": 1, "b": 2}], rename={"a": "b.c"})
    assert [r for _, r in rej] == ["field 'b.c': cannot set it: 'b' is an integer, not an object"]


def test_a_rejected_record_does_not_go_on_and_the_others_do():
    out, rej = mutate([{"n": "1"}, {"n": "x"}, {"n": "3"}], convert={"n": "int"})
    assert out == [{"n": 1}, {"n": 3}]
    assert rej == [(b'{"n":"x"}', "field 'n': cannot convert 'x' to int")]


def test_records_that_are_not_objects_are_rejected():
    out, rej = mutate([b'{"a":1}', ("x", 1)], set={"a": 1})
    assert out == []
    assert rej == [(b'{"a":1}', "not a JSON object: got raw bytes (put mutate after json-decode)"),
                   (b'["x",1]', "not a JSON object: got an array")]


# -- site-event records -------------------------------------------------------------------

def test_site_event_records_become_objects_with_their_json_names():
    recs = decode('{"id":"a","from":"v","type":"message","site_id":124,"timestamp":1429026484,'
                  '"data":{"message":"hi"}}',
                  '{"id":"b","from":"o","type":"status","site_id":"W","timestamp":1.5,'
                  '"data":{"status":"online"}}')
    out, rej = mutate(recs, rename={"from": "sender"}, convert={"data.status": "str"})
    assert rej == []
    assert out == [
        {"type": "message", "id": "a", "site_id": 124, "timestamp": 1429026484, "sender": "v"},
        {"type": "status", "id": "b", "site_id": "W", "timestamp": 1.5,
         "data": {"status": "online"}, "sender": "o"}]
    assert type(out[0]["timestamp"]) is int


def test_site_event_conversion_rejects_with_the_record_as_json():
    recs = decode('{"id":"a","from":"v","type":"message","site_id":"dc","timestamp":7}')
    out, rej = mutate(recs, convert={"site_id": "int"})
    assert out == []
    assert rej == [(b'{"type":"message","id":"a","from":"v","site_id":"dc","timestamp":7}',
                    "field 'site_id': cannot convert 'dc' to int")]


def test_through_main_with_line_numbers_of_decode_rejects_only(tmp_path):
    """End to end: output objects, and mutate's rejects in the dead-letter file, in line
    order with json-decode's."""
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode\n"
                   "  - mutate:\n      rename: {from: sender}\n      convert: {timestamp: int}\n"
                   "  - jsonl-output: {path: '-'}\n")
    data = tmp_path / "in.jsonl"
    lines = ['{"id":"a","from":"v","type":"message","site_id":"1","timestamp":1429026484}',
             '{"id":"b","from":"v","type":"message","site_id":"1","timestamp":1.5}',
             '{"id":"c","from":"v","type":"message","site_id":"","timestamp":1}',
             '{"id":"d","from":"v","type":"message","site_id":"1","timestamp":3.0}']
    data.write_text("\n".join(lines) + "\n")
    p = cli("-c", str(cfg), "-f", str(data), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == (
        '{"type":"message","id":"a","site_id":"1","timestamp":1429026484,"sender":"v"}\n'
        '{"type":"message","id":"d","site_id":"1","timestamp":3,"sender":"v"}\n')
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text().splitlines()]
    assert dead == [  # in line order, whichever stage rejected
        {"line": 2, "offset": len(lines[0]) + 1, "stage": "mutate",
         "reason": "field 'timestamp': cannot convert 1.5 to int",
         "raw": '{"type":"message","id":"b","from":"v","site_id":"1","timestamp":1.5}'},
        {"line": 3, "offset": len(lines[0]) + len(lines[1]) + 2, "stage": "json-decode",
         "reason": "field 'site_id': expected a non-empty string",
         "raw": '{"id":"c","from":"v","type":"message","site_id":"","timestamp":1}'}]
    assert p.stderr.endswith("rejected 2 of 4 lines (reasons in "
                             f"{tmp_path / 's' / 'dead_letter.jsonl'})\n")


# -- json-decode keeps integer timestamps -------------------------------------------------

def test_integer_timestamps_stay_integers_through_jsonl_output(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode\n"
                   "  - jsonl-output: {path: '-'}\n")
    data = tmp_path / "in.jsonl"
    data.write_text(
        '{"id":"a","from":"v","type":"message","site_id":"1","timestamp":1429026484}\n'
        '{"id":"b","from":"v","type":"message","site_id":"1","timestamp":1429026484.0}\n'
        '{"id":"c","from":"v","type":"message","site_id":"1","timestamp":1e3}\n'
        '{"id":"d","from":"v","type":"message","site_id":"1","timestamp":-0}\n'
        '{"id":"e","from":"v","type":"message","site_id":"1","timestamp":' + "9" * 400 + '}\n')
    p = cli("-c", str(cfg), "-f", str(data), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert [json.loads(x)["timestamp"] for x in p.stdout.splitlines()] == [
        1429026484, 1429026484.0, 1000.0, 0]
    assert [type(json.loads(x)["timestamp"]) for x in p.stdout.splitlines()] == [
        int, float, float, int]
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text().splitlines()]
    assert [(d["line"], d["reason"]) for d in dead] == [
        (5, "field 'timestamp': not a finite number")]


def test_integer_timestamps_up_to_the_double_range_are_kept():
    limit = 2**1024 - 2**970  # the first integer that rounds to an infinite double
    recs = decode(*(f'{{"id":"a","from":"v","type":"message","site_id":"1","timestamp":{t}}}'
                    for t in (limit - 1, -(limit - 1), 2**64 + 1)))
    assert [r.timestamp for r in recs] == [limit - 1, -(limit - 1), 2**64 + 1]
    for t in (limit, -limit):
        assert decode(f'{{"id":"a","from":"v","type":"message","site_id":"1","timestamp":{t}}}') == []


# -- dotted names in fields.getter and its path helpers -----------------------------------

def test_getter_reads_dotted_names_from_dicts_and_structs():
    get = getter("data.status")
    recs = decode('{"id":"b","from":"o","type":"status","site_id":"W","timestamp":1,'
                  '"data":{"status":"online"}}',
                  '{"id":"a","from":"v","type":"message","site_id":"W","timestamp":1,'
                  '"data":{"status":"x"}}')
    assert get(recs[0]) == "online"
    assert get(recs[1]) is MISSING  # a message keeps no data
    assert get({"data": {"status": "s"}}) == "s"
    assert get({"data": "text"}) is MISSING
    assert get({"data": None}) is MISSING
    assert get({"data.status": "literal"}) is MISSING  # a dot always separates names
    assert getter("from")(recs[0]) == "o" and getter("type")(recs[0]) == "status"


def test_column_reads_a_batch_as_getter_reads_each_record():
    structs = decode('{"id":"b","from":"o","type":"status","site_id":"W","timestamp":1,'
                     '"data":{"status":"online"}}',
                     '{"id":"a","from":"v","type":"message","site_id":3,"timestamp":2.5}')
    dicts = [{"id": "c", "type": "x", "data": {"status": "s"}}, {"from": None}]
    batches = [structs, structs[1:], dicts, structs + dicts, [("a", 1)], []]
    for field in ["id", "from", "type", "site_id", "timestamp", "data", "data.status", "nope"]:
        for batch in batches:
            assert column(field)(batch) == [getter(field)(r) for r in batch], (field, batch)


def test_path_helpers():
    rec = {"a": {"b": 1}}
    assert get_in(rec, ("a", "b")) == 1 and get_in(rec, ("a", "x")) is MISSING
    assert get_in(rec, ("a", "b", "c")) is MISSING
    inner = rec["a"]
    set_in(rec, ("a", "c", "d"), 2)
    assert rec == {"a": {"b": 1, "c": {"d": 2}}} and inner == {"b": 1}
    assert delete_in(rec, ("a", "c", "d")) == 2 and rec == {"a": {"b": 1, "c": {}}}
    assert delete_in(rec, ("a", "zz")) is MISSING
    assert delete_in(rec, ("q", "r")) is MISSING and rec == {"a": {"b": 1, "c": {}}}


def test_where_count_and_csv_columns_take_dotted_names(tmp_path):
    lines = ['{"id":"a","type":"status","data":{"status":"online"}}',
             '{"id":"b","type":"status","data":{"status":"offline"}}',
             '{"id":"c","type":"status","data":{"status":"online"}}',
             '{"id":"d","type":"message","data":{"text":"hi"}}']
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"
                   "  - where: {field: data.status, equals: online}\n"
                   "  - csv-output: {path: '-', columns: [id, data.status]}\n")
    p = cli("-c", str(cfg), "-f", str(data), "--state-dir", str(tmp_path / "s"))
    assert p.stdout == "id,data.status\na,online\nc,online\n"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"
                   "  - count: {field: data.status}\n  - jsonl-output: {path: '-'}\n")
    p = cli("-c", str(cfg), "-f", str(data), "--state-dir", str(tmp_path / "s2"))
    assert p.stdout == '["(missing)",1]\n["offline",1]\n["online",2]\n'
