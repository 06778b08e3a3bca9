"""where, dedupe, count, the file outputs, and file-input's stdin/gz/bz2/globs."""
from __future__ import annotations

import bz2
import gzip
import json

import pytest

from conftest import ROOT, SUMMARY, cli, rec
from reference import summarize

LINES = [rec("a", "message", "1", "v1", 1), rec("b", "message", 2, "v2", 2),
         rec("c", "status", "3", "o", 3, "online"), rec("a", "message", "1", "v1", 1)]


def pipeline(tmp_path, body: str) -> str:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n" + body)
    return str(cfg)


def write(tmp_path, lines) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("where,expected", [
    ("{field: site_id, in: ['1', '2']}", ["a", "b", "a"]),          # 2 matches "2"
    ("{field: site_id, equals: 2}", ["b"]),
    ("{field: type, equals: status, drop: true}", ["a", "b", "a"]),
    ("{field: nope, equals: x}", []),
])
def test_where(tmp_path, where, expected):
    """where on objects (whose fields a config cannot know): a missing field never
    matches."""
    cfg = pipeline(tmp_path, f"  - json-decode: {{schema: object}}\n  - where: {where}\n"
                             f"  - jsonl-output: {{path: '-'}}\n")
    p = cli("-c", cfg, "-f", write(tmp_path, LINES), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert [json.loads(x)["id"] for x in p.stdout.splitlines()] == expected


def test_where_needs_exactly_one_test(tmp_path):
    cfg = pipeline(tmp_path, "  - where: {field: a}\n  - jsonl-output: {path: '-'}\n")
    p = cli("validate", "-c", cfg)
    assert p.returncode == 2
    assert p.stderr == f"sluice: error: {cfg}:3: stage 'where': give exactly one of `equals`, `in` or `if`\n"


def test_dedupe_and_count(tmp_path):
    cfg = pipeline(tmp_path, "  - json-decode: {schema: object}\n  - dedupe: {field: id}\n"
                             "  - count: {field: type}\n  - jsonl-output: {path: '-'}\n")
    p = cli("-c", cfg, "-f", write(tmp_path, LINES), "--state-dir", str(tmp_path / "s"))
    assert p.stdout == '["message",2]\n["status",1]\n'
    assert "1 duplicates skipped" in p.stderr


def test_jsonl_output_file_is_atomic_and_resumable(tmp_path):
    """A file output appears only when complete, and a rerun rewrites it identically."""
    out = tmp_path / "out.jsonl"
    cfg = pipeline(tmp_path, f"  - json-decode\n  - jsonl-output: {{path: '{out}'}}\n")
    data = write(tmp_path, LINES)
    p = cli("-c", cfg, "-f", data, "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0
    first = out.read_text()
    assert [json.loads(x)["id"] for x in first.splitlines()] == ["a", "b", "c", "a"]
    assert not (tmp_path / "out.jsonl.partial").exists()
    again = cli("-c", cfg, "-f", data, "--state-dir", str(tmp_path / "s"))
    assert "nothing new to read" in again.stderr
    assert out.read_text() == first


def test_csv_and_summary_json_outputs(tmp_path):
    data = write(tmp_path, LINES)
    csv_out = tmp_path / "s.csv"
    cfg = pipeline(tmp_path, "  - json-decode\n  - site-state-reducer\n"
                             f"  - csv-output: {{path: '{csv_out}', columns: [site, m, e, o, v]}}\n")
    assert cli("-c", cfg, "-f", data, "--state-dir", str(tmp_path / "a")).returncode == 0
    assert csv_out.read_text() == "site,m,e,o,v\n1,0,1,0,1\n2,0,1,0,1\n3,0,0,1,0\n"
    cfg2 = pipeline(tmp_path, "  - json-decode\n  - site-state-reducer\n  - summary-json-output\n")
    p = cli("-c", cfg2, "-f", data, "--state-dir", str(tmp_path / "b"))
    assert json.loads(p.stdout)["sites"][2] == {"site_id": "3", "messages": 0, "emails": 0,
                                                "operators": 1, "visitors": 0}


def test_stdin_gz_bz2_and_globs_give_the_same_summary(tmp_path):
    """-f -, .gz, .bz2, a glob and a list of files all read the same records."""
    sample = (ROOT / "tests" / "data" / "sample" / "input.jsonl").read_bytes()
    expected = summarize(sample)
    gz, bz = tmp_path / "log.jsonl.gz", tmp_path / "log.jsonl.bz2"
    gz.write_bytes(gzip.compress(sample))
    bz.write_bytes(bz2.compress(sample))
    for source in (str(gz), str(bz)):
        p = cli("-c", SUMMARY, "-f", source, "--state-dir", str(tmp_path / "s"))
        assert p.stdout == expected, source
    p = cli("-c", SUMMARY, "-f", "-", "--state-dir", str(tmp_path / "s"),
            stdin=sample.decode("utf-8", "surrogateescape"))
    assert p.stdout == expected
    assert "checkpoints are off: file-input(-) cannot be read again after a kill" in p.stderr
    lines = sample.split(b"\n")
    parts = tmp_path / "parts"
    parts.mkdir()
    cut = len(lines) // 3
    (parts / "a.jsonl").write_bytes(b"\n".join(lines[:cut]) + b"\n")
    (parts / "b.jsonl").write_bytes(b"\n".join(lines[cut:]))
    cfg = tmp_path / "glob.yaml"
    cfg.write_text(f"pipeline:\n  - file-input: {{path: '{parts}/*.jsonl'}}\n  - json-decode\n"
                   "  - site-state-reducer\n  - sorted-stdout-output\n")
    p = cli("-c", str(cfg), "--state-dir", str(tmp_path / "g"))
    assert p.stdout == expected
    rejects = [json.loads(x) for x in (tmp_path / "g" / "dead_letter.jsonl").read_text().splitlines()]
    assert {r["file"] for r in rejects} == {str(parts / "b.jsonl")}
    again = cli("-c", str(cfg), "--state-dir", str(tmp_path / "g"))
    assert again.stdout == expected
    assert "sluice: resumed: all 2 map tasks had finished (nothing new to read)" in again.stderr
    listed = cli("-c", SUMMARY, "--state-dir", str(tmp_path / "l"), "-f", str(gz))
    assert listed.stdout == expected


def test_no_file_matches_glob(tmp_path):
    p = cli("-c", SUMMARY, "-f", str(tmp_path / "*.jsonl"), "--state-dir", str(tmp_path))
    assert p.returncode == 2
    assert p.stderr == f"sluice: error: no input file matches '{tmp_path / '*.jsonl'}'\n"


DEDUPE_VALUES = [  # (value, the class it is equal to)
    ("f1.5", "s:f1.5"), (1.5, "f:1.5"), ("n", "s:n"), (None, "null"), (5, "s:5"),
    ("5", "s:5"), (True, "b:true"), ("bTrue", "s:bTrue"), ([1], "j:[1]"), ("j[1]", "s:j[1]"),
    ({"b": 1, "a": 2}, "j:ab"), ({"a": 2, "b": 1}, "j:ab"), (-0.0, "f:-0.0"), (0.0, "f:0.0"),
    ("b2e0af3e-1783-de60-5fa0-87d53ba1501c", "uuid"), ("B2E0AF3E-1783-DE60-5FA0-87D53BA1501C",
                                                       "uuid-upper"),
    ("x" * 40, "long"), ("x" * 40 + "y", "long2"), ("\U0001F600" * 5, "emoji"),
    (2**70, "s:big"), (str(2**70), "s:big"),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dedupe_keeps_types_apart_against_a_plain_reference(tmp_path, seed):
    """Strings keep their own text (UUIDs their compact key); other types are typed
    texts that never equal a string: "f1.5" and 1.5, "n" and null, "bTrue" and true stay
    apart, 5 and "5" are one value, objects compare with sorted keys. Checked against
    a plain first-occurrence reference, in mixed and in all-string batches."""
    import random
    rnd = random.Random(seed)
    picks = [rnd.randrange(len(DEDUPE_VALUES)) for _ in range(300)]
    lines = [json.dumps({"n": i, "id": DEDUPE_VALUES[k][0]}) for i, k in enumerate(picks)]
    strings = [i for i, k in enumerate(picks) if isinstance(DEDUPE_VALUES[k][0], str)]
    lines += [json.dumps({"n": 1000 + i, "id": DEDUPE_VALUES[picks[i]][0]}) for i in strings]
    seen, expected = set(), []
    for line in lines:
        rec = json.loads(line)
        cls = next(c for v, c in DEDUPE_VALUES if v == rec["id"] and type(v) is type(rec["id"])
                   and (not isinstance(v, float) or str(v) == str(rec["id"])))
        if cls not in seen:
            seen.add(cls)
            expected.append(rec["n"])
    cfg = pipeline(tmp_path, "  - json-decode: {schema: object}\n  - dedupe: {field: id}\n"
                             "  - jsonl-output: {path: '-'}\n")
    p = cli("-c", cfg, "-f", write(tmp_path, lines), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert [json.loads(x)["n"] for x in p.stdout.splitlines()] == expected


VALUES = [  # every JSON type, nested, at the edges of msgpack's and JSON's ranges
    -0.0, 0.0, 1.5e300, -(2**63), 2**64 - 1, None, True, False, "", "\U0001F600 é",
    "x" * 5000, [], {}, [1, [2.5, None, {"k": "v"}]], {"z": 1, "a": {"b": [True, -0.0]}},
]


@pytest.mark.parametrize("big", [False, True])
def test_dedupe_gives_back_object_records_exactly(tmp_path, big):
    """Object records come out of dedupe exactly as they went in, value for value and
    type for type, through its spills (msgpack for JSON values; with an integer beyond
    64 bits in a batch, that batch's frames are pickled): the same text as writing the
    first occurrences without dedupe."""
    import random
    rnd = random.Random(7)
    lines = []
    for i in range(3000):
        record = {"id": f"k{rnd.randrange(2000)}", "n": i,
                  "v": rnd.choice(VALUES), "w": {"x": rnd.choice(VALUES)}}
        if big and i % 1000 == 999:
            record["w"]["x"] = 2**70 + i
        lines.append(json.dumps(record))
    seen, first = set(), []
    for line in lines:
        key = json.loads(line)["id"]
        if key not in seen:
            seen.add(key)
            first.append(line)
    out = "  - jsonl-output: {path: '-'}\n"
    deduped = cli("-c", pipeline(tmp_path, "  - json-decode: {schema: object}\n"
                                           "  - dedupe: {field: id}\n" + out),
                  "-f", write(tmp_path, lines), "--state-dir", str(tmp_path / "s"),
                  env={"SLUICE_TEST_BUCKET_KB": "64"})
    (tmp_path / "first").mkdir()
    plain = cli("-c", pipeline(tmp_path / "first", "  - json-decode: {schema: object}\n" + out),
                "-f", write(tmp_path / "first", first), "--state-dir", str(tmp_path / "p"))
    assert deduped.returncode == plain.returncode == 0, deduped.stderr + plain.stderr
    assert deduped.stdout == plain.stdout
    assert len(deduped.stdout.splitlines()) == len(first)


def test_dedupe_reads_records_lazily_and_decodes_only_its_results():
    """Reduce reads object records as msgspec.Raw (undecoded); the kept ones are
    written again as they are, next to records that had to be pickled (an integer
    beyond 64 bits), and the results come back as the very records, with no Raw left."""
    import msgspec

    from stages.dedupe import _JSON_RESULTS, _LAZY_JSON_RECORDS

    records = [{"id": "a", "v": [1, -0.0, {"x": None}]}, {"id": "b", "v": "\U0001F600"}]
    big = [{"id": "c", "v": 2**70}]
    lazy = _LAZY_JSON_RECORDS.decode(_LAZY_JSON_RECORDS.encode(records))
    assert [type(r) for r in lazy] == [msgspec.Raw, msgspec.Raw]
    assert _LAZY_JSON_RECORDS.encode(big)[:1] == b"P"
    back = _LAZY_JSON_RECORDS.decode(_LAZY_JSON_RECORDS.encode(big))
    for kept in ([lazy[1], lazy[0]], [lazy[0], back[0]]):
        pairs = list(zip([5, 9], kept))
        out = _JSON_RESULTS.decode(_JSON_RESULTS.encode(pairs))
        want = [records[1], records[0]] if kept[1] is lazy[0] else [records[0], big[0]]
        assert out == list(zip([5, 9], want))
        assert repr(out) == repr(list(zip([5, 9], want)))  # -0.0 stays -0.0
        assert msgspec.Raw not in {type(r) for _, r in out}


def test_dedupe_reads_site_events_lazily_and_decodes_only_its_results():
    """Given site-event records, reduce reads the structs as msgspec.Raw (neither
    decoded nor validated again); the kept ones are written again as they are, next to
    a plugin's record that had to be pickled, and the results come back as equal
    structs. The codec of a kind it does not know still pickles a Raw: a plugin's
    record that happens to be one comes back a Raw, never a struct."""
    import msgspec

    from stages.dedupe import _LAZY_STRUCTS, _RECORDS, _STRUCT_RESULTS, Dedupe
    from stages.site_event import Message, Status, StatusData

    structs = [Message(id="a", from_="v1", site_id=7, timestamp=1.5),
               Status(id="b", from_="op", site_id="s", timestamp=2**40,
                      data=StatusData(status="online"))]
    lazy = _LAZY_STRUCTS.decode(_LAZY_STRUCTS.encode(structs))
    assert [type(r) for r in lazy] == [msgspec.Raw, msgspec.Raw]
    odd = _LAZY_STRUCTS.decode(_LAZY_STRUCTS.encode([("a plugin's", "tuple")]))
    assert odd == [("a plugin's", "tuple")]
    for kept, want in (([lazy[1], lazy[0]], [structs[1], structs[0]]),
                       ([lazy[0], odd[0]], [structs[0], odd[0]])):
        pairs = list(zip([5, 9], kept))
        out = _STRUCT_RESULTS.decode(_STRUCT_RESULTS.encode(pairs))
        assert out == list(zip([5, 9], want))
        assert [type(r) for _, r in out] == [type(w) for w in want]
    raw = msgspec.Raw(b"\x91\x01")
    assert _RECORDS.encode([raw])[:1] == b"P"
    assert _RECORDS.decode(_RECORDS.encode([raw])) == [raw]

    stage = Dedupe(field="id")
    stage.given = "site-event"
    assert stage.all_sets()["records"] is _LAZY_STRUCTS
