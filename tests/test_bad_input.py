"""SPEC.md's bad-input policy: every rejected class, with its reason and position."""
from __future__ import annotations

import json

import pytest

from conftest import rec

GOOD = [rec("a", "status", "1", "o", 1, "online"), rec("b", "message", "1", "v", 2),
        rec("c", "message", "2", "w", 3)]
GOOD_OUT = ("1,messages=1,emails=0,operators=1,visitors=1\n"
            "2,messages=0,emails=1,operators=0,visitors=1\n")


def base(**over):
    d = {"id": "x", "from": "v", "type": "message", "site_id": "1", "timestamp": 5,
         "data": {"message": "m"}}
    d.update(over)
    return d


def drop(key):
    d = base()
    del d[key]
    return json.dumps(d)


BAD = [
    # (class, raw line, reason)
    ("bad json", '{"id": "x", "from": ', "invalid JSON: input data was truncated"),
    ("trailing garbage", json.dumps(base()) + " x", "invalid JSON: trailing characters (byte 103)"),
    ("nan", json.dumps(base()).replace("5", "NaN"), "invalid JSON: invalid character (byte 73)"),
    ("infinity", json.dumps(base()).replace("5", "Infinity"), "invalid JSON: invalid character (byte 73)"),
    ("overflow", json.dumps(base()).replace("5", "1e999"), "field 'timestamp': not a finite number"),
    ("array", "[1, 2]", "not a JSON object: expected `object`, got `array`"),
    ("string", '"hello"', "not a JSON object: expected `object`, got `str`"),
    ("null", "null", "not a JSON object: expected `object`, got `null`"),
    ("missing id", drop("id"), "field 'id': missing"),
    ("missing from", drop("from"), "field 'from': missing"),
    ("missing site_id", drop("site_id"), "field 'site_id': missing"),
    ("missing timestamp", drop("timestamp"), "field 'timestamp': missing"),
    ("missing type", drop("type"), "field 'type': missing"),
    ("empty id", json.dumps(base(id="")), "field 'id': expected a non-empty string"),
    ("int id", json.dumps(base(id=5)), "field 'id': expected `str`, got `int`"),
    ("empty from", json.dumps(base(**{"from": ""})), "field 'from': expected a non-empty string"),
    ("null from", json.dumps(base(**{"from": None})), "field 'from': expected `str`, got `null`"),
    ("empty site", json.dumps(base(site_id="")), "field 'site_id': expected a non-empty string"),
    ("bool site", json.dumps(base(site_id=True)), "field 'site_id': expected a string or integer, got `bool`"),
    ("float site", json.dumps(base(site_id=1.5)), "field 'site_id': expected a string or integer, got `float`"),
    ("string ts", json.dumps(base(timestamp="5")), "field 'timestamp': expected a number, got `str`"),
    ("bool ts", json.dumps(base(timestamp=True)), "field 'timestamp': expected a number, got `bool`"),
    ("null ts", json.dumps(base(timestamp=None)), "field 'timestamp': expected a number, got `null`"),
    ("unknown type", json.dumps(base(type="chat")), "field 'type': unknown type 'chat'"),
    ("type not str", json.dumps(base(type=1)), "field 'type': expected `str`"),
    ("unknown status", json.dumps(base(type="status", data={"status": "away"})),
     "field 'data.status': invalid enum value 'away'"),
    ("status no data", json.dumps({k: v for k, v in base(type="status").items() if k != "data"}),
     "field 'data': missing"),
    ("status data not object", json.dumps(base(type="status", data="online")),
     "field 'data': expected `object`, got `str`"),
    ("status missing", json.dumps(base(type="status", data={})), "field 'data.status': missing"),
]


@pytest.mark.parametrize("kind,line,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_line_is_rejected_with_reason(run, kind, line, reason):
    """A rejected line never changes a count and is dead-lettered with its reason."""
    r = run([GOOD[0], line, GOOD[1], GOOD[2]])
    assert r.rc == 0
    assert r.out == GOOD_OUT
    offset = len(GOOD[0]) + 1
    assert r.rejects() == [{"line": 2, "offset": offset, "stage": "json-decode",
                            "reason": reason, "raw": line}]
    assert r.err.endswith(f"rejected 1 of 4 lines (reasons in {r.dead_letter})\n")


def test_invalid_utf8_is_rejected_and_escaped(run):
    """Invalid UTF-8, even inside an unchecked field, is rejected; raw is escaped."""
    bad = b'{"id":"x","from":"v","type":"message","site_id":"1","timestamp":5,"data":"\xff"}'
    data = (GOOD[0] + "\n").encode() + bad + b"\n" + "\n".join(GOOD[1:]).encode() + b"\n"
    r = run(data)
    assert r.out == GOOD_OUT
    [entry] = r.rejects()
    assert entry["reason"] == "invalid UTF-8 at byte 74"
    assert entry["raw"] == bad.decode("utf-8", "backslashreplace")
    assert "\\xff" in entry["raw"]


def test_valid_utf8_beyond_ascii_is_accepted(run):
    """Non-ASCII UTF-8 in ids, names and text is fine."""
    r = run([rec("é", "message", "sité", "vïsitor", 1, data={"message": "✓"})])
    assert r.out == "sité,messages=0,emails=1,operators=0,visitors=1\n"


def test_blank_and_whitespace_lines_are_skipped_silently(run):
    """Blank and whitespace-only lines are not errors and are not dead-lettered."""
    r = run("\n \n\t\r\n" + "\n\n".join(GOOD) + "\n\n")
    assert r.out == GOOD_OUT
    assert r.rejects() == []
    assert "rejected 0 of" in r.err


def test_bom_crlf_and_missing_final_newline(run):
    """A BOM at the start, CRLF line ends and a last line without \\n are all fine."""
    data = b"\xef\xbb\xbf" + "\r\n".join(GOOD).encode()
    r = run(data)
    assert r.out == GOOD_OUT
    assert r.rejects() == []


def test_bom_only_at_start_of_file(run):
    """A BOM anywhere but the very start is a bad line, and offsets count the BOM."""
    data = b"\xef\xbb\xbf" + GOOD[0].encode() + b"\n\xef\xbb\xbf" + GOOD[1].encode() + b"\n"
    r = run(data)
    [entry] = r.rejects()
    assert (entry["line"], entry["offset"]) == (2, 3 + len(GOOD[0]) + 1)
    assert entry["reason"] == "invalid JSON: invalid character (byte 0)"


def test_many_bad_lines_in_one_block_keep_their_positions(run):
    """Line numbers and byte offsets stay right when many lines of a block are bad."""
    lines = []
    for i in range(300):
        lines.append(rec(f"id{i}", "message", "1", "v", i) if i % 7 else f"bad {i}")
    r = run(lines)
    rejects = r.rejects()
    assert [e["line"] for e in rejects] == [i + 1 for i in range(300) if i % 7 == 0]
    offsets = [sum(len(x) + 1 for x in lines[:i]) for i in range(300) if i % 7 == 0]
    assert [e["offset"] for e in rejects] == offsets
    assert r.out == f"1,messages=0,emails={300 - len(offsets)},operators=0,visitors=1\n"


def test_strict_stops_at_first_rejected_line(run):
    """--strict: the first rejected line stops the run with exit 1, naming line and reason."""
    r = run([GOOD[0], GOOD[1], "[1]", "{"], "--strict")
    assert r.rc == 1
    assert r.out == ""
    assert r.err == ("sluice: error: line 3: not a JSON object: expected `object`, got "
                     "`array` (--strict stops at the first rejected line)\n")


def test_dead_letter_path_option(run, tmp_path):
    """--dead-letter PATH puts the rejects elsewhere and the report names it."""
    target = tmp_path / "rejects" / "bad.jsonl"
    r = run([GOOD[0], "nope"], "--dead-letter", str(target))
    assert target.exists() and not r.dead_letter.exists()
    assert json.loads(target.read_text())["raw"] == "nope"
    assert r.err.endswith(f"(reasons in {target})\n")
