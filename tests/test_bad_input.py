"""The bad-input rules of configs/summary.md: every rejected class, with its reason
and position."""
from __future__ import annotations

import json

import pytest

import main
from conftest import SUMMARY, rec

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
    ("lone surrogate", json.dumps(base(site_id="\ud800")),
     "invalid JSON: unexpected end of escaped utf-16 surrogate pair (byte 62)"),
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


def test_blank_lines_count_as_lines_read_only(run):
    """Blank lines (any ASCII whitespace, \\v and \\f too) are lines read, never records or rejects."""
    r = run("\n" + GOOD[0] + "\n \x0b\x0c\t\r\n" + GOOD[1] + "\n")
    assert r.rejects() == []
    assert r.err == "sluice: 4 lines read, 2 records, 0 duplicates skipped; rejected 0 of 4 lines\n"


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


def test_raw_is_the_line_without_its_newline(run):
    """raw is the whole line minus its \\n: surrounding spaces and a CRLF's \\r stay."""
    r = run(b"  x \r\n" + GOOD[0].encode() + b"\n")
    assert r.rejects() == [{"line": 1, "offset": 0, "stage": "json-decode",
                            "reason": "invalid JSON: invalid character (byte 2)",
                            "raw": "  x \r"}]


def test_dead_letters_name_the_file_when_there_are_several(tmp_path, capsys):
    """With several input files a reject names its `file` first; line and offset count in it."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(GOOD[0] + "\nbad a\n")
    b.write_text("\n" + GOOD[1] + "\nbad b\n")
    state = tmp_path / "state"
    rc = main.main(["-c", SUMMARY, "-f", str(tmp_path / "*.jsonl"), "--state-dir", str(state)])
    err = capsys.readouterr().err
    dead = state / "dead_letter.jsonl"
    rejects = [json.loads(x) for x in dead.read_text().splitlines()]
    why = "invalid JSON: invalid character (byte 0)"
    assert rc == 0
    assert rejects == [
        {"file": str(a), "line": 2, "offset": len(GOOD[0]) + 1, "stage": "json-decode",
         "reason": why, "raw": "bad a"},
        {"file": str(b), "line": 3, "offset": 1 + len(GOOD[1]) + 1, "stage": "json-decode",
         "reason": why, "raw": "bad b"}]
    assert list(rejects[0]) == ["file", "line", "offset", "stage", "reason", "raw"]
    assert err.endswith(f"rejected 2 of 5 lines (reasons in {dead})\n")


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


@pytest.mark.parametrize("bad_at", [
    [0], [511], [512], [0, 1, 2], [5, 511, 512, 513, 1023, 1024, 1499], [1499],
    list(range(0, 1500, 97)), list(range(700, 760))])
def test_bad_lines_at_chunk_edges_keep_every_record_and_its_line(tmp_path, capsys, bad_at):
    """json-decode maps 512 lines at a time and goes on after a bad line: bad lines
    first, last, adjacent or at chunk edges lose no neighbour, and every record keeps
    its own line, as a later stage's reject shows (mutate refuses odd timestamps)."""
    lines = [f"bad {i}" if i in bad_at else
             json.dumps({"id": i, "timestamp": "x" if i % 2 else i}) for i in range(1500)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n"
                   "  - json-decode: {schema: object}\n"
                   "  - mutate: {convert: {timestamp: int}}\n"
                   f"  - jsonl-output: {{path: '{tmp_path / 'out.jsonl'}'}}\n")
    assert main.main(["-c", str(cfg), "-f", str(tmp_path / "in.jsonl"),
                      "--state-dir", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    out = [json.loads(x)["id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == [i for i in range(1500) if i not in bad_at and i % 2 == 0]
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text()
            .splitlines()]
    assert sorted(d["line"] for d in dead) == [i + 1 for i in range(1500)
                                               if i in bad_at or i % 2]
    for d in dead:
        line = lines[d["line"] - 1]
        if d["stage"] == "json-decode":
            assert d["raw"] == line
        else:  # mutate writes the record it was given
            assert (d["stage"], json.loads(d["raw"])) == ("mutate", json.loads(line))
        assert d["offset"] == sum(len(x) + 1 for x in lines[:d["line"] - 1])


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


def test_strict_rerun_over_saved_state_still_stops_at_the_first_rejected_line(tmp_path):
    """A --strict rerun that resumes a finished run stops at the first saved reject."""
    from conftest import SUMMARY, cli

    log = tmp_path / "log.jsonl"
    log.write_text("\n".join([rec("a", "message", "1", "v", 1), "not json",
                              rec("b", "message", "1", "v", 2)]) + "\n")
    args = ("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "s"))
    assert cli(*args).returncode == 0
    again = cli(*args, "--strict")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.splitlines()[-1] == (
        "sluice: error: line 2: invalid JSON: invalid character (byte 4) "
        "(--strict stops at the first rejected line)")
    assert "resumed" in again.stderr


def test_strict_with_several_files_names_the_file(tmp_path):
    """With several input files, the --strict message names the file of the bad line."""
    from conftest import SUMMARY, cli

    (tmp_path / "a.jsonl").write_text(rec("a", "message", "1", "v", 1) + "\n")
    (tmp_path / "b.jsonl").write_text(rec("b", "message", "1", "v", 2) + "\n[1]\n")
    p = cli("-c", SUMMARY, "-f", str(tmp_path / "*.jsonl"), "--state-dir",
            str(tmp_path / "s"), "--strict")
    assert p.returncode == 1
    assert p.stderr == (f"sluice: error: {tmp_path / 'b.jsonl'} line 2: not a JSON object: "
                        f"expected `object`, got `array` (--strict stops at the first "
                        f"rejected line)\n")
