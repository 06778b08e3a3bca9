"""Bad input never changes a count and never crashes: one line is at most one record,
whatever its neighbours, and every hostile input is a reject or a one-line error."""
from __future__ import annotations

import bz2
import gzip
import json
import sys

import pytest

from conftest import ROOT, SUMMARY, cli, rec

sys.path.insert(0, str(ROOT / "test_scripts"))
import fuzz_input  # noqa: E402

R = rec("x1", "message", "EVIL", "v", 1)
SPLIT_A = '{"id":"x3","from":"v","type":"message"'
SPLIT_B = '"site_id":"EVIL2","timestamp":3}'
SAMPLE = (ROOT / "tests" / "data" / "sample" / "input.jsonl").read_text().splitlines()
GOOD20 = [ln for ln in SAMPLE if ln.startswith('{"id"')][:20]
OBJECTS = str(ROOT / "configs" / "count_by_type.yaml")

# (name, line, reason): lines that are not exactly one JSON object
JOINED = [
    ("comma-joined", R + "," + R, f"invalid JSON: trailing characters (byte {len(R) + 1})"),
    ("comma-joined with spaces", R + " , " + R,
     f"invalid JSON: trailing characters (byte {len(R) + 2})"),
    ("two objects, no comma", R + R, f"invalid JSON: trailing characters (byte {len(R) + 1})"),
    ("leading comma", "," + R, "invalid JSON: invalid character (byte 0)"),
    ("trailing comma", R + ",", f"invalid JSON: trailing characters (byte {len(R) + 1})"),
    ("array start", "[" + R, "invalid JSON: input data was truncated"),
    ("array end", R + "]", f"invalid JSON: trailing characters (byte {len(R) + 1})"),
    ("a whole array", "[" + R + "]", "not a JSON object: expected `object`, got `array`"),
    ("first half of a record", SPLIT_A, "invalid JSON: input data was truncated"),
    ("second half of a record", SPLIT_B, "invalid JSON: trailing characters (byte 10)"),
    ("an object continued on the next line", R[:-1], "invalid JSON: input data was truncated"),
]


@pytest.mark.parametrize("name,line,reason", JOINED, ids=[j[0] for j in JOINED])
@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_a_line_is_never_joined_with_its_neighbours(run, name, line, reason, strict):
    """A line that is not exactly one JSON object is rejected with its own reason; it
    never becomes records by joining its neighbours (the sample's first 20 lines)."""
    want = run(GOOD20 + [R]).out  # the EVIL record counts once, from line 22
    lines = GOOD20 + [line, R, line]
    r = run(lines, *(["--strict"] if strict else []))
    if strict:
        assert r.rc == 1
        assert r.err.endswith(f"sluice: error: line 21: {reason} (--strict stops at the "
                              f"first rejected line)\n")
        return
    assert r.rc == 0
    assert r.out == want
    assert [(x["line"], x["reason"]) for x in r.rejects()] == [(21, reason), (23, reason)]


def test_the_issues_three_lines_are_rejected_under_strict_and_workers(tmp_path):
    """The three lines from the bug report, after 20 good ones: rejected with 1 and 2
    workers; --strict stops at line 21; no EVIL site is printed."""
    log = tmp_path / "in.jsonl"
    log.write_text("\n".join(GOOD20 + [R + "," + rec("x2", "message", "EVIL", "v", 2),
                                       SPLIT_A, SPLIT_B]) + "\n")
    for workers in ("1", "2"):
        p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / workers),
                "-w", workers)
        assert p.returncode == 0, p.stderr
        assert "EVIL" not in p.stdout
        assert p.stderr.endswith(f"rejected 3 of 23 lines (reasons in {tmp_path / workers}/"
                                 f"dead_letter.jsonl)\n")
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "s"), "--strict")
    assert p.returncode == 1
    assert p.stderr == (f"sluice: error: line 21: invalid JSON: trailing characters (byte "
                        f"{len(R) + 1}) (--strict stops at the first rejected line)\n")


@pytest.mark.parametrize("at", [0, 510, 511, 512, 513, 1023, 1024])
@pytest.mark.parametrize("block", ["64", "4194304"])
def test_joined_lines_at_chunk_and_block_boundaries(tmp_path, at, block):
    """Comma-joined and split lines are rejected wherever they fall: at json-decode's
    chunk boundaries (512 lines) and file-input's block boundaries (one line a block)."""
    lines = [rec(f"g{i}", "message", "S", "v", i) for i in range(1100)]
    bad = [R + "," + R, SPLIT_A, SPLIT_B]
    lines[at:at] = bad
    log = tmp_path / "in.jsonl"
    log.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"pipeline:\n  - file-input: {{path: x, block_size: {block}}}\n"
                   f"  - json-decode: {{}}\n  - site-state-reducer: {{}}\n"
                   f"  - sorted-stdout-output: {{}}\n")
    p = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "S,messages=0,emails=1100,operators=0,visitors=1\n"
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text().splitlines()]
    assert [d["line"] for d in dead] == [at + 1, at + 2, at + 3]


def test_deep_nesting_is_a_reject_not_a_crash(run):
    """JSON nested 100,000 deep is one dead-letter entry, and the run goes on."""
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    want = run(GOOD20).out
    r = run(GOOD20 + [deep])
    assert r.rc == 0
    assert [(x["line"], x["reason"]) for x in r.rejects()] == [
        (21, "invalid JSON: nested too deeply to decode")]
    assert r.out == want


def test_reasons_name_what_went_wrong(run):
    """A text line is "invalid JSON", not "expected object, got float"; a number beyond
    the double range inside an object names its field."""
    nginx = '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2326'
    r = run([nginx, '{"id":"a","bytes":1e400}', '{"id":"b","a":{"b":[1,1e999]}}'],
            config=OBJECTS)
    assert [x["reason"] for x in r.rejects()] == [
        "invalid JSON: trailing characters (byte 6)", "field 'bytes': not a finite number",
        "field 'a.b[1]': not a finite number"]


@pytest.mark.parametrize("opener,cut", [(gzip.compress, -40), (bz2.compress, -30)],
                         ids=["gzip", "bz2"])
def test_a_truncated_compressed_file_keeps_what_precedes_the_damage(tmp_path, opener, cut):
    """A compressed file cut short: the whole lines before the damage are read, the
    damage is one rejected line naming the problem, the exit code is 0 (1 with
    --strict)."""
    n = 3000 if opener is gzip.compress else 12000  # bz2 keeps whole 900 KB blocks only
    lines = [rec(f"g{i}", "message", "S", "v", i) for i in range(n)]
    data = ("\n".join(lines) + "\n").encode()
    suffix = ".gz" if opener is gzip.compress else ".bz2"
    log = tmp_path / f"in.jsonl{suffix}"
    log.write_bytes(opener(data)[:cut])
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text().splitlines()]
    assert len(dead) == 1 and dead[0]["stage"] == "file-input"
    assert dead[0]["reason"] == ("corrupt or truncated compressed data: Compressed file ended "
                                 "before the end-of-stream marker was reached; the rest of "
                                 "the file cannot be read")
    kept = int(p.stdout.split("emails=")[1].split(",")[0])
    assert 0 < kept < n and dead[0]["line"] == kept + 1
    assert p.stderr.endswith(f"rejected 1 of {kept + 1:,} lines (reasons in "
                             f"{tmp_path / 's'}/dead_letter.jsonl)\n")
    strict = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "t"), "--strict")
    assert strict.returncode == 1
    assert strict.stderr.startswith(f"sluice: error: line {kept + 1}: corrupt or truncated")


def test_input_fuzzer_finds_nothing():
    """test_scripts/fuzz_input.py: every hostile kind through the summary and an object
    pipeline, at a twentieth of the sizes, gives no traceback, hang or changed count
    (the script itself runs every shipped pipeline)."""
    said: list[str] = []
    assert fuzz_input.fuzz(list(fuzz_input.KINDS), 20, 120, 2, say=said.append,
                           pipelines=[SUMMARY, OBJECTS]) == 0, said
