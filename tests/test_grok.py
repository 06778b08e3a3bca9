"""grok: every shipped pattern on real-shaped text, captures and conversions, several
patterns in order, parsing a field of object records, failures, config errors with their
line, and the access-log golden file with 1 and 2 workers."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import ROOT, cli
from pipeline import Batch
from pipeline.columns import Columns
from pipeline.testing import Context, check_resume
from stages.grok import Grok, GrokError, compile_pattern
from stages.grok_patterns import PATTERNS

ACCESS = ROOT / "tests" / "data" / "access"


def capture(pattern, text):
    """What `%{PATTERN:x}` anchored to the whole text captures, or None (no match)."""
    compiled = compile_pattern(f"^%{{{pattern}:x}}$", PATTERNS)
    got = pc.extract_regex(pa.array([text]), pattern=compiled.regex)[0].as_py()
    return None if got is None else got["g0"]


@pytest.mark.parametrize("pattern,text", [
    ("IPV4", "192.168.0.1"), ("IPV4", "255.255.255.255"), ("IPV4", "0.0.0.0"),
    ("IPV6", "2001:db8::1"), ("IPV6", "::1"), ("IPV6", "::"), ("IPV6", "fe80::1ff:fe23:4567:890a"),
    ("IPV6", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"), ("IPV6", "::ffff:192.0.2.44"),
    ("IPV6", "64:ff9b::192.0.2.33"), ("IPV6", "fe80::7:8%eth0"), ("IPV6", "1::"),
    ("IP", "10.1.2.3"), ("IP", "2001:db8:0:0:1:0:0:1"),
    ("NUMBER", "-12.5"), ("NUMBER", "42"), ("NUMBER", ".5"), ("INT", "+7"), ("INT", "-0"),
    ("POSINT", "8080"), ("NONNEGINT", "0"), ("WORD", "GET_x1"), ("NOTSPACE", "/a?b=c&d"),
    ("DATA", "anything at all"), ("GREEDYDATA", "x \" y"), ("GREEDYDATA", ""),
    ("QUOTEDSTRING", '"say \\"hi\\""'), ("QUOTEDSTRING", "'single'"),
    ("UUID", "fa647958-39c2-c1a2-bcc9-245cfd81fbc0"), ("HOSTNAME", "www.example.co.uk"),
    ("IPORHOST", "db-1.internal"), ("HOSTPORT", "example.com:443"),
    ("EMAILADDRESS", "alice.b+tag@example.com"), ("USERNAME", "frank.o-neil_2"),
    ("HTTPDATE", "10/Oct/2026:13:55:36 -0700"), ("HTTPDATE", "01/Feb/2024:00:00:00 +0000"),
    ("TIMESTAMP_ISO8601", "2026-10-10T13:55:36Z"),
    ("TIMESTAMP_ISO8601", "2026-10-10T13:55:36.123456+02:00"),
    ("TIMESTAMP_ISO8601", "2024-02-29 23:59:60"), ("TIMESTAMP_ISO8601", "2026-10-10T1355"),
    ("SYSLOGTIMESTAMP", "Oct  3 07:04:05"), ("SYSLOGTIMESTAMP", "Jan 12 23:59:59"),
    ("MONTH", "September"), ("DAY", "Thu"), ("TIME", "23:59:59.999"),
])
def test_each_pattern_matches_real_shaped_text_whole(pattern, text):
    assert capture(pattern, text) == text


@pytest.mark.parametrize("pattern,text", [
    ("IPV4", "256.1.1.1"), ("IPV4", "1.2.3"), ("IPV6", "2001:db8:::1"), ("IPV6", "12345::1"),
    ("IPV6", "1:2:3:4:5:6:7:8:9"), ("INT", "1.5"), ("NUMBER", "1e5"), ("WORD", "a b"),
    ("NOTSPACE", "a b"), ("POSINT", "0"), ("HTTPDATE", "10/Oct/2026:13:55:36"),
    ("HTTPDATE", "32/Oct/2026:13:55:36 +0000"), ("TIMESTAMP_ISO8601", "2026-13-01T00:00:00"),
    ("SYSLOGTIMESTAMP", "Oct 3"), ("QUOTEDSTRING", '"unterminated'),
    ("UUID", "fa647958-39c2-c1a2-bcc9-245cfd81fbc"), ("MONTH", "Octember"),
])
def test_each_pattern_refuses_what_it_should(pattern, text):
    assert capture(pattern, text) is None


def fields(pattern, text):
    """Every field a pattern captures from text (empty captures left out)."""
    compiled = compile_pattern(pattern, PATTERNS)
    got = pc.extract_regex(pa.array([text]), pattern=compiled.regex)[0].as_py()
    return None if got is None else {f: got[g] for g, f, _ in compiled.captures if got[g]}


def test_syslogline_with_program_pid_and_iso_timestamps():
    assert fields("%{SYSLOGLINE}", "Oct  3 07:04:05 web-1 sshd[4242]: Accepted key for bob") == {
        "timestamp": "Oct  3 07:04:05", "logsource": "web-1", "program": "sshd",
        "pid": "4242", "message": "Accepted key for bob"}
    assert fields("%{SYSLOGLINE}", "2026-10-10T13:55:36+02:00 <4.3> 10.0.0.5 CRON: job done") == {
        "timestamp8601": "2026-10-10T13:55:36+02:00", "facility": "4", "priority": "3",
        "logsource": "10.0.0.5", "program": "CRON", "message": "job done"}


def test_commonapachelog_and_a_request_that_is_not_one():
    assert fields("%{COMMONAPACHELOG}", '127.0.0.1 user-identifier frank [10/Oct/2000:13:55:36 '
                  '-0700] "GET /apache_pb.gif HTTP/1.0" 200 2326') == {
        "clientip": "127.0.0.1", "ident": "user-identifier", "auth": "frank",
        "timestamp": "10/Oct/2000:13:55:36 -0700", "verb": "GET", "request": "/apache_pb.gif",
        "httpversion": "1.0", "response": "200", "bytes": "2326"}
    assert fields("%{COMMONAPACHELOG}", '1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "\\x16\\x03" '
                  '400 -') == {"clientip": "1.2.3.4", "ident": "-", "auth": "-",
                               "timestamp": "10/Oct/2000:13:55:36 +0000",
                               "rawrequest": "\\x16\\x03", "response": "400"}


def run(tmp_path, stages, data, *args):
    (tmp_path / "in.log").write_bytes(data)
    (tmp_path / "p.yaml").write_text("pipeline:\n  - file-input: {path: in.log}\n" + stages +
                                     "  - jsonl-output: {path: '-'}\n")
    p = cli("-c", str(tmp_path / "p.yaml"), "-f", str(tmp_path / "in.log"),
            "--state-dir", str(tmp_path / "s"), "--fresh", *args)
    dead = tmp_path / "s" / "dead_letter.jsonl"
    letters = [json.loads(x) for x in dead.read_text().splitlines()] if dead.exists() else []
    return p, [json.loads(x) for x in p.stdout.splitlines()], letters


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_access_log_golden_file(tmp_path, workers):
    """With 2 workers the run is in parts (a plan of ranges): the same records, in order."""
    from pipeline.state.checkpoint import read_checked_json
    (tmp_path / "in.log").write_bytes((ACCESS / "access.log").read_bytes() * 400)
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  - file-input: {path: in.log}\n"
        '  - grok: {match: "%{COMBINEDAPACHELOG}", on_failure: keep}\n'
        "  - jsonl-output: {path: out.jsonl}\n")
    p = cli("-c", "p.yaml", "-w", workers, "--memory-mb", "1024", "--state-dir", "s",
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    plans = list((tmp_path / "s").glob("*/plan.json"))
    assert bool(plans and read_checked_json(plans[0])["parts"]) == (workers == "2")
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    golden = [json.loads(x) for x in (ACCESS / "grok.expected.jsonl").read_text().splitlines()]
    assert out == golden * 400
    assert "800 failures kept in _failures" in p.stderr
    # what the golden file says, by hand: `-` bytes, an escaped quote, non-ASCII, IPv6
    assert "bytes" not in golden[2] and golden[2]["response"] == "304"
    assert golden[3]["agent"] == 'Mozilla/5.0 \\"quoted\\" agent'
    assert golden[4]["request"] == "/café/menü" and golden[4]["clientip"] == "::ffff:192.0.2.44"
    assert golden[1]["clientip"] == "2001:db8::1" and golden[5]["auth"] == "alice@example.com"
    assert golden[6]["rawrequest"] == "-" and "verb" not in golden[6]
    assert golden[7]["_failures"] == [{"stage": "grok", "reason": "no pattern matched"}]


def test_conversions_and_patterns_tried_in_order(tmp_path):
    data = b"GET 200 0.25\nPUT 201 x\nuser=bob id=7\nnothing\n\xff\xfe bad\n"
    p, out, dead = run(tmp_path, '  - grok:\n      match:\n'
                                 '        - "^%{WORD:verb} %{INT:status:int} %{NUMBER:secs:float}$"\n'
                                 '        - "^%{WORD:verb} %{INT:status:int}"\n'
                                 '        - "user=%{USER:user} id=%{INT:id:int}"\n', data, "-w", "1")
    assert p.returncode == 0, p.stderr
    assert out == [{"verb": "GET", "status": 200, "secs": 0.25}, {"verb": "PUT", "status": 201},
                   {"user": "bob", "id": 7}]
    assert [(d["line"], d["reason"]) for d in dead] == [
        (4, "no pattern matched"), (5, "invalid UTF-8 at byte 0")]


def test_a_conversion_that_fails_fails_the_record(tmp_path):
    p, out, dead = run(tmp_path, '  - grok: {match: "n=%{INT:n:int}"}\n',
                       b"n=5\nn=99999999999999999999\n", "-w", "1")
    assert out == [{"n": 5}]
    assert dead[0]["reason"] == "field 'n': cannot convert '99999999999999999999' to int"


def test_parsing_a_field_of_object_records(tmp_path):
    data = (b'{"host":"a","msg":"took 12 ms","ms":"old"}\n{"host":"b","msg":"no timing"}\n'
            b'{"host":"c","msg":5}\n{"host":"d"}\n')
    p, out, dead = run(tmp_path, "  - json-decode: {schema: object}\n"
                                 '  - grok: {field: msg, match: "took %{INT:ms:int} ms", '
                                 "on_failure: keep}\n", data, "-w", "1")
    assert p.returncode == 0, p.stderr
    assert out[0] == {"host": "a", "msg": "took 12 ms", "ms": 12}  # replaced
    assert [r["_failures"][0]["reason"] for r in out[1:]] == [
        "no pattern matched", "field 'msg' is an integer, not text", "field 'msg' is missing"]


def test_a_field_of_columns_and_of_dicts_parse_alike():
    stage = Grok(field="msg", match="took %{INT:ms:int} ms")
    stage.open(Context())
    records = [{"msg": "took 3 ms"}, {"msg": "took 4 ms", "ms": 1}, {"msg": "x", "ms": 2}]
    as_dicts = [r for b in stage.process(iter([Batch(records)])) for r in b]
    columns = Columns.from_records(Batch(records))
    as_columns = [b for b in stage.process(iter([columns]))][0].records()
    assert as_dicts == list(as_columns) == [{"msg": "took 3 ms", "ms": 3},
                                            {"msg": "took 4 ms", "ms": 4}]


@pytest.mark.parametrize("grok,problem", [
    ('{match: "%{NOPE:x}"}', "match '%{NOPE:x}': unknown pattern 'NOPE'"),
    ('{match: "%{ip:x}"}', "match '%{ip:x}': unknown pattern 'ip' (did you mean IP?)"),
    ('{match: "%{A:x}", patterns: {A: "%{B}", B: "%{A}"}}',
     "match '%{A:x}': pattern A refers to itself: A -> B -> A"),
    ('{match: "%{INT:x} %{INT:x}"}', "match '%{INT:x} %{INT:x}': field 'x' is captured twice"),
    ('{match: "%{INT:x:long}"}', "match '%{INT:x:long}': `%{INT:x:long}`: a capture converts "
                                 "to int or float; got 'long'"),
    ('{match: "%{INT}"}', "match '%{INT}': it captures no field: name one, as in %{IP:client}"),
    ('{match: "(?<=a)%{INT:x}"}', "match '(?<=a)%{INT:x}': not a regular expression RE2 takes: "),
    ('{match: "%{INT:x.y}"}', "match '%{INT:x.y}': `%{INT:x.y}` is not %{NAME}, %{NAME:field} "
                              "or %{NAME:field:int|float}"),
    ('{match: []}', "`match` must be a pattern or a non-empty list of patterns; got []"),
    ('{match: "%{X:x}", patterns: {"a b": "x"}}',
     "pattern names are letters, digits and _; got 'a b'"),
])
def test_bad_patterns_are_config_errors_with_their_line(tmp_path, grok, problem):
    (tmp_path / "p.yaml").write_text("pipeline:\n  - file-input: {path: in.log}\n"
                                     f"  - grok: {grok}\n  - jsonl-output: {{path: '-'}}\n")
    p = cli("validate", "-c", str(tmp_path / "p.yaml"))
    assert p.returncode == 2
    assert p.stderr.startswith(f"sluice: error: {tmp_path / 'p.yaml'}:3: stage 'grok': "
                               + problem), p.stderr


@pytest.mark.parametrize("stages,problem", [
    ('  - grok: {field: msg, match: "%{INT:x}"}\n',
     "stage 'grok': `field` names a field of object records, but it is given raw lines; "
     "leave `field` out to parse the lines (from 'file-input')"),
    ('  - json-decode: {schema: object}\n  - grok: {match: "%{INT:x}"}\n',
     "stage 'grok': it is given object records: name the text field to parse with `field` "
     "(from 'json-decode' (schema: object))"),
])
def test_what_grok_is_given_is_checked(tmp_path, stages, problem):
    (tmp_path / "p.yaml").write_text("pipeline:\n  - file-input: {path: in.log}\n" + stages +
                                     "  - jsonl-output: {path: '-'}\n")
    p = cli("validate", "-c", str(tmp_path / "p.yaml"))
    assert p.returncode == 2
    assert problem in p.stderr


def test_grok_output_fields_are_known_to_the_stages_after_it(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  - file-input: {path: in.log}\n  - grok: {match: \"%{INT:status}\"}\n"
        "  - csv-output: {path: '-', columns: [stats]}\n")
    p = cli("validate", "-c", str(tmp_path / "p.yaml"))
    assert p.returncode == 2
    assert "column 'stats' (did you mean 'status'?) is not among status" in p.stderr


def test_compile_pattern_expands_nested_captures_once():
    compiled = compile_pattern("%{HOSTPORT:addr}", PATTERNS)
    assert [f for _, f, _ in compiled.captures] == ["addr"]
    with pytest.raises(GrokError):
        compile_pattern("%{UNKNOWN}", PATTERNS)


def test_failure_counts_resume_at_every_batch_boundary():
    lines = [b"n=1", b"x", b"n=2", b"n=3", b"y"]
    batches = [Batch(lines[i:i + 2], first_line=i + 1, first_offset=4 * i)
               for i in range(0, 5, 2)]
    out = check_resume(lambda: Grok(match="n=%{INT:n:int}", on_failure="drop"), batches)
    assert out.counters["dropped_on_failure"] == 2
    assert [r for b in out.records for r in b] == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_a_generated_access_log_parses_but_its_bad_lines(tmp_path):
    import subprocess
    import sys
    log = tmp_path / "access.log"
    subprocess.run([sys.executable, str(ROOT / "test_scripts" / "generate_access.py"),
                    "--lines", "3000", "--bad-every", "100", "-o", str(log)], check=True)
    p, out, dead = run(tmp_path, '  - grok: {match: "%{COMBINEDAPACHELOG}"}\n',
                       log.read_bytes(), "-w", "2", "--memory-mb", "1024")
    assert p.returncode == 0, p.stderr
    assert len(out) == 2970 and len(dead) == 30
    assert {d["reason"] for d in dead} == {"no pattern matched"}
    assert all(("bytes" in r) == (r["response"] != "304") for r in out)
    assert sum(":" in r["clientip"] for r in out) > 200  # IPv6 clients


def test_the_parse_benchmark_runs_small(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "parse_benchmark.py"),
                        "--lines", "3000", "--runs", "1", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1] == "grok and dissect wrote the same records: yes"
    assert [line.split()[0] for line in p.stdout.splitlines()[2:6]] == [
        "grok", "dissect", "grok-window", "dissect-window"]
    assert "grok and dissect gave the same windows: yes" in p.stdout
