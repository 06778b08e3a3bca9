"""kv: pairs, quotes and escapes, separators, repeated keys, prefixes, a field of object
records, failures and config errors."""
from __future__ import annotations

import pytest

from conftest import cli
from pipeline import Batch
from pipeline.testing import Context
from stages.kv import Kv
from test_grok import run


@pytest.mark.parametrize("text,options,expected", [
    ('level=info msg="disk full" ms=12', {}, {"level": "info", "msg": "disk full", "ms": "12"}),
    (r'a="say \"hi\"" b=\'x y\' c=', {}, {"a": 'say "hi"', "b": "x y"}),
    ("a=1 a=2 lone a=3", {}, {"a": ["1", "2", "3"]}),
    ("a=1 b==2", {}, {"a": "1", "b": "=2"}),
    ('user:bob, role:admin, note:"a, b"', {"field_split": ", ", "value_split": ":"},
     {"user": "bob", "role": "admin", "note": "a, b"}),
    ("x=1", {"prefix": "kv_"}, {"kv_x": "1"}),
    ("päth=/café size=1", {}, {"päth": "/café", "size": "1"}),
    ("no pairs here", {}, {}),
])
def test_pairs(text, options, expected):
    assert Kv(**options).pairs(text.replace("\\'", "'")) == expected


def test_lines_become_records_and_a_line_without_pairs_fails(tmp_path):
    p, out, dead = run(tmp_path, "  - kv: {}\n",
                       b'ts=1 level=warn msg="slow disk"\njust text\nts=2 level=info\n',
                       "-w", "1")
    assert p.returncode == 0, p.stderr
    assert out == [{"ts": "1", "level": "warn", "msg": "slow disk"}, {"ts": "2", "level": "info"}]
    assert [(d["line"], d["stage"], d["reason"]) for d in dead] == [
        (2, "kv", "no key=value pairs")]


def test_a_field_of_object_records_with_keep(tmp_path):
    p, out, _ = run(tmp_path, "  - json-decode: {schema: object}\n"
                              "  - kv: {field: q, on_failure: keep}\n",
                    b'{"q":"a=1&b=2","a":"old"}\n{"q":"none"}\n{"n":1}\n', "-w", "1")
    assert out[0] == {"q": "a=1&b=2", "a": "1&b=2"}
    assert [r["_failures"][0]["reason"] for r in out[1:]] == [
        "no key=value pairs", "field 'q' is missing"]


def test_keep_turns_a_line_without_pairs_into_a_message():
    stage = Kv(on_failure="keep")
    stage.open(Context())
    out = [r for b in stage.process(iter([Batch([b"a=1", b"text"], first_line=1,
                                                first_offset=0)])) for r in b]
    assert out == [{"a": "1"}, {"message": "text", "_failures": [
        {"stage": "kv", "reason": "no key=value pairs"}]}]


@pytest.mark.parametrize("options,problem", [
    ("{field_split: ''}", "option 'field_split' must be a non-empty string; got ''"),
    ("{value_split: '\"'}", "option 'value_split' cannot hold a quote"),
])
def test_bad_separators_are_config_errors(tmp_path, options, problem):
    (tmp_path / "p.yaml").write_text("pipeline:\n  - file-input: {path: in.log}\n"
                                     f"  - kv: {options}\n  - jsonl-output: {{path: '-'}}\n")
    p = cli("validate", "-c", str(tmp_path / "p.yaml"))
    assert p.returncode == 2
    assert p.stderr.startswith(f"sluice: error: {tmp_path / 'p.yaml'}:3: stage 'kv': ")
    assert problem in p.stderr
