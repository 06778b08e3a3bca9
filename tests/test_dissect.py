"""dissect: layouts split at literal delimiters, appends, skips, padding, a field of
object records, failures, and config errors with their line."""
from __future__ import annotations

import json

import pytest

from conftest import cli
from test_grok import run

ACCESS = ('%{clientip} %{ident} %{auth} [%{timestamp}] "%{verb} %{request} HTTP/%{httpversion}" '
          '%{response} %{bytes} "%{referrer}" "%{agent}"')


def test_an_access_log_by_layout_equals_grok_where_the_layout_fits(tmp_path):
    lines = ('203.0.113.7 - - [10/Oct/2026:13:55:36 +0000] "GET /a b HTTP/1.1" 200 2326 '
             '"-" "Mozilla/5.0 (X11)"\n'
             '2001:db8::1 - frank [10/Oct/2026:13:55:37 +0000] "POST /api HTTP/2.0" 201 - '
             '"https://e.com/" "curl/8.4.0 \\"x\\""\n'
             'not an access line\n').encode()
    p, out, dead = run(tmp_path, f"  - dissect: {{pattern: '{ACCESS}'}}\n", lines, "-w", "1")
    assert p.returncode == 0, p.stderr
    assert out == [
        {"clientip": "203.0.113.7", "ident": "-", "auth": "-",
         "timestamp": "10/Oct/2026:13:55:36 +0000", "verb": "GET", "request": "/a b",
         "httpversion": "1.1", "response": "200", "bytes": "2326", "referrer": "-",
         "agent": "Mozilla/5.0 (X11)"},
        {"clientip": "2001:db8::1", "ident": "-", "auth": "frank",
         "timestamp": "10/Oct/2026:13:55:37 +0000", "verb": "POST", "request": "/api",
         "httpversion": "2.0", "response": "201", "bytes": "-", "referrer": "https://e.com/",
         "agent": 'curl/8.4.0 \\"x\\"'}]
    assert [(d["line"], d["stage"], d["reason"]) for d in dead] == [
        (3, "dissect", "no pattern matched")]


def test_append_skip_and_padding(tmp_path):
    lines = b"Oct 10 13:55:36 INFO     started ok\nOct 10 13:55:37 WARN disk 91%\n"
    p, out, _ = run(tmp_path, "  - dissect: {pattern: '%{ts} %{+ts} %{+ts} %{level->} "
                              "%{?rest}'}\n", lines, "-w", "1")
    assert out == [{"ts": "Oct 10 13:55:36", "level": "INFO"},
                   {"ts": "Oct 10 13:55:37", "level": "WARN"}]


def test_a_field_of_object_records_and_keep(tmp_path):
    data = b'{"kv":"a=1;b=2"}\n{"kv":"a=1"}\n'
    p, out, dead = run(tmp_path, "  - json-decode: {schema: object}\n"
                                 "  - dissect: {field: kv, pattern: 'a=%{a};b=%{b}', "
                                 "on_failure: keep}\n", data, "-w", "1")
    assert out == [{"kv": "a=1;b=2", "a": "1", "b": "2"},
                   {"kv": "a=1", "_failures": [{"stage": "dissect",
                                                "reason": "no pattern matched"}]}]


@pytest.mark.parametrize("pattern,problem", [
    ("no keys here", "it names no field: write %{name} where a field is"),
    ("%{a}%{b}", "`%{a}%{b}`: two keys need a delimiter between them"),
    ("%{a} %{a}", "field 'a' is named twice; %{+a} appends to it"),
    ("%{a b} x", "`%{a b}`: a key is %{name}, %{+name}, %{?name}, %{} or %{name->}"),
    ("%{} %{?x}", "it captures no field: every key is skipped"),
])
def test_bad_layouts_are_config_errors_with_their_line(tmp_path, pattern, problem):
    (tmp_path / "p.yaml").write_text("pipeline:\n  - file-input: {path: in.log}\n"
                                     f"  - dissect: {{pattern: {json.dumps(pattern)}}}\n"
                                     "  - jsonl-output: {path: '-'}\n")
    p = cli("validate", "-c", str(tmp_path / "p.yaml"))
    assert p.returncode == 2
    assert p.stderr.startswith(f"sluice: error: {tmp_path / 'p.yaml'}:3: stage 'dissect': "
                               f"pattern {pattern!r}: {problem}"), p.stderr
