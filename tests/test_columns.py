"""Columns (pipeline/columns.py) and the columnar stages: every record, value and JSON type
comes back exactly, and where/mutate/jsonl-output on columns do what they do on records.

The data is mixed on purpose: int and string ids in one field, null and missing, nested
objects, arrays, integers beyond 2**63, -0.0, long strings, non-BMP text, characters
JSON must escape; some fields keep one type through a batch (typed Arrow columns), some
do not (JSON columns)."""
from __future__ import annotations

import random
import subprocess
import sys

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from pipeline import Batch
from pipeline.columns import Columns, is_json_field
from pipeline.testing import Context
from stages.mutate import Mutate
from stages.where import Where

from conftest import ROOT

NEST = [{"status": "online", "n": 1}, {"status": None, "message": "hi"}, {}, {"n": 2.5},
        {"status": 7, "deep": {"x": [1, {"y": -0.0}]}}]  # one order of fields fits all
POOLS = {
    "int": [0, -1, 7, 2**63 - 1, -2**63, 123],
    "big": [2**63, 2**64 + 5, -2**63 - 1],
    "float": [-0.0, 0.0, 1.5, 1e22, 3.0, 1e-7, 2.0],
    "str": ["1", "123", "abc", "-007", "1.0", "true", "0", "quote\"back\\slash",
            "ctl\x01\t\n", "\U0001F600 non-BMP", "é", "x" * 5000, ""],
    "bool": [True, False],
    "null": [None],
    "object": NEST,
    "array": [[1, "a"], [], [None, {"k": 1}]],
    "reordered": [{"n": 3, "status": "away"}],  # with NEST: no one order fits
}
FIELDS = ["type", "id", "site_id", "from", "data", "a", "b"]


def records(seed: int, n: int = 300, shuffle: float = 0.0, missing: float = 0.15) -> list[dict]:
    """Records whose fields draw, per field and batch, from one to three kinds of value;
    each field is missing from some records; a `shuffle` fraction of them name their
    fields in another order."""
    rng = random.Random(seed)
    kinds = {f: rng.sample(sorted(set(POOLS) - {"reordered"}), rng.choice([1, 1, 2, 3]))
             for f in FIELDS}
    kinds["data"] = rng.choice([["object"], ["object"], ["object", "str", "null"],
                                ["object", "reordered"]])
    kinds["type"] = ["str"]
    out = []
    for _ in range(n):
        names = FIELDS[:]
        if rng.random() < shuffle:
            rng.shuffle(names)
        rec = {}
        for f in names:
            if rng.random() < missing:
                continue
            value = rng.choice(POOLS[rng.choice(kinds[f])])
            if f == "type":
                value = rng.choice(["message", "status", "message"])
            rec[f] = value
        out.append(rec)
    return out


def same(a: list, b: list) -> bool:
    """Equal records: the same fields in the same order, values and JSON types (1, 1.0
    and true differ)."""
    return [msgspec.json.encode(r) for r in a] == [msgspec.json.encode(r) for r in b]


@pytest.mark.parametrize("seed", range(12))
def test_records_come_back_exactly(seed):
    recs = records(seed)
    cols = Columns.from_records(recs)
    assert cols is not None and len(cols) == len(recs)
    assert same(cols.records(), recs)
    lines = msgspec.json.Decoder().decode_lines(cols.json_lines())
    assert same(lines, recs)
    picked = [5, 0, 299, 5]
    assert same(cols.take(picked).records(), [recs[i] for i in picked])
    assert same([cols.record(7)], [recs[7]])


def test_the_column_types():
    recs = [{"i": 1, "f": 1.5, "s": "x", "b": True, "n": None, "m": 1, "o": {"k": 1},
             "a": [1], "big": 2**64},
            {"i": 2, "f": -0.0, "s": "y", "b": False, "n": None, "m": "1", "o": {"k": None}}]
    cols = Columns.from_records(recs)
    schema = cols.data.schema
    typed = {f.name: (str(f.type), is_json_field(f)) for f in schema}
    assert typed == {"i": ("int64", False), "f": ("double", False), "s": ("string", False),
                     "b": ("bool", False), "n": ("string", True), "m": ("string", True),
                     "o": ("struct<k: string>", False), "a": ("string", True),
                     "big": ("string", True)}
    assert cols.data.column("m").to_pylist() == ["1", '"1"']  # 1 and "1" stay apart
    assert cols.data.column("a").to_pylist() == ["[1]", None]  # null: the field is absent
    assert cols.json_lines() == (
        b'{"i":1,"f":1.5,"s":"x","b":true,"n":null,"m":1,"o":{"k":1},"a":[1],'
        b'"big":18446744073709551616}\n'
        b'{"i":2,"f":-0.0,"s":"y","b":false,"n":null,"m":"1","o":{"k":null}}\n')


def test_one_column_order_gives_every_record_its_own_order():
    """Records keep their own order of fields: a batch whose records name them in orders
    that no one column order fits stays records (also inside objects: JSON text)."""
    cols = Columns.from_records([{"a": 1, "b": 2}, {"b": 3, "c": 4}, {"a": 5, "c": 6}])
    assert cols.names == ["a", "b", "c"]
    assert cols.json_lines() == b'{"a":1,"b":2}\n{"b":3,"c":4}\n{"a":5,"c":6}\n'
    assert Columns.from_records([{"a": 1, "b": 2}, {"b": 3, "a": 5}]) is None
    nested = Columns.from_records([{"o": {"x": 1, "y": 2}}, {"o": {"y": 3, "x": 4}}])
    assert nested.is_json("o")
    assert nested.json_lines() == b'{"o":{"x":1,"y":2}}\n{"o":{"y":3,"x":4}}\n'


def test_mutate_keeps_each_records_order_of_fields():
    """A field a record gains goes after its others (set, rename, copy), as on records;
    where one column order cannot say that, mutate works on the records."""
    recs = [{"id": "c"}, {"id": "d", "source": "web", "sender": "x"},
            {"id": "e", "from": "v", "data": "text"}]
    options = {"rename": {"from": "sender", "data.status": "status"}, "remove": ["data"],
               "set": {"source": "chat-log"}}
    got, _ = run_mutate(options, Columns.from_records(recs))
    assert [msgspec.json.encode(r) for r in got] == [
        b'{"id":"c","source":"chat-log"}', b'{"id":"d","source":"chat-log","sender":"x"}',
        b'{"id":"e","sender":"v","source":"chat-log"}']


def test_what_cannot_be_columns_stays_records():
    assert Columns.from_records([{"a": 1}, "not an object"]) is None
    assert Columns.from_records([{f"f{i}": i for i in range(300)}]) is None
    assert Columns.from_records([{"a": "\udc80"}]) is None  # no UTF-8 for it
    assert len(Columns.from_records([{}, {}])) == 2
    assert Columns.from_records([{}, {}]).json_lines() == b"{}\n{}\n"


WHERE = [
    {"field": "type", "equals": "message"},
    {"field": "site_id", "equals": "123"},
    {"field": "site_id", "in": ["123", 7, "abc", 1.5]},
    {"field": "a", "equals": 1.5},
    {"field": "a", "equals": True},
    {"field": "b", "in": [0.0, "1", False]},
    {"field": "data.status", "equals": "online"},
    {"field": "data.n", "in": [1, 2.5]},
    {"field": "data.deep.x", "equals": 1},
    {"field": "data", "equals": "abc"},
    {"field": "id", "equals": "x", "drop": True},
    {"field": "nothere", "equals": 1},
    {"field": "nothere", "equals": 1, "drop": True},
]


@pytest.mark.parametrize("options", WHERE, ids=lambda o: str(o))
def test_where_on_columns_keeps_what_it_keeps_on_records(options):
    for seed in range(8):
        recs = records(seed)
        want = list(next(Where(**options).process(iter([Batch(recs)]))))
        cols = Columns.from_records(recs, origins=(np.arange(1, 301), np.arange(300)))
        out = next(Where(**options).process(iter([cols])))
        assert isinstance(out, Columns)
        assert same(out.records(), want), seed
        kept = [i for i, r in enumerate(recs) if any(r is w for w in want)]
        assert list(out.origins[0]) == [i + 1 for i in kept]


MUTATE = [
    {"rename": {"from": "sender", "data.status": "status"}, "remove": ["data"],
     "set": {"source": "chat-log"}, "convert": {"site_id": "str"}},
    {"convert": {"a": "int"}}, {"convert": {"a": "float"}}, {"convert": {"a": "str"}},
    {"convert": {"a": "bool"}}, {"convert": {"b": "str", "site_id": "int"}},
    {"convert": {"data.n": "int"}}, {"convert": {"data.n": "str"}},
    {"rename": {"a": "b"}}, {"rename": {"a": "a"}}, {"rename": {"data.n": "data.m"}},
    {"rename": {"data.status": "data"}}, {"copy": {"a": "site_id", "data": "d2"}},
    {"copy": {"data.status": "b"}}, {"set": {"data.x": 1}}, {"set": {"a": None, "o": {"k": [1]}}},
    {"remove": ["data.status", "b", "data.deep.x"]}, {"remove": ["data.n", "data.status"]},
    {"rename": {"site_id": "data.site"}, "convert": {"data.site": "int"}},
]


CSV_COLUMNS = [["type", "id", "site_id", "from", "data", "a", "b"],
               ["data.status", "data.n", "data.deep", "data.deep.x", "data.message.x"],
               ["a.real", "b.imag", "a.b", "nope", "data.nope", "type"]]


@pytest.mark.parametrize("seed", range(10))
def test_csv_output_writes_from_columns_what_it_writes_from_records(seed):
    """The same CSV cells from columns as from records, field paths into struct and
    JSON columns included; `a.real` of a number is missing (a JSON value has no fields)."""
    from stages.csv_output import CsvOutput

    recs = records(seed)
    cols = Columns.from_records(recs)
    if cols is None:
        pytest.skip("these records stay records")
    for columns in CSV_COLUMNS:
        out = CsvOutput(path="-", columns=columns)
        assert out._rows(cols) == out._rows(Batch(recs)), columns
    assert CsvOutput(path="-", columns=["a.real"])._rows(Batch([{"a": 3}])) == b'""\n'


def reduced(make, batch, tmp_path) -> tuple[list, list]:
    """(results, rejects) of a keyed reducer given one batch: its map side in a task,
    then its reduce phases over 3 buckets, as the engine runs them."""
    from pipeline.keyed import reduce_buckets, result_batches

    ctx, stage = Context(), make()
    stage.open(ctx)
    inputs = [str(tmp_path / "map")]
    stage.configure(inputs[0], nbuckets=3, task=0)
    stage.update(batch)
    stage.snapshot()
    stage.spill.close()
    stage = make()
    stage.nbuckets = 3
    for phase in range(stage.phases):
        inputs.append(str(tmp_path / f"reduce{phase}"))
        reduce_buckets(stage, phase, range(3), inputs[:-1], inputs[-1], memory_bytes=64 << 20)
    return [r for b in result_batches(stage, inputs[-1:], 3) for r in b], ctx.rejected


REDUCERS = [
    ("count", {"field": "type"}), ("count", {"field": "a"}), ("count", {"field": "data.n"}),
    ("count", {"field": "data"}), ("count", {"field": "data.deep.x", "missing": "-"}),
    ("aggregate", {"by": ["type", "a"], "metrics": {
        "n": "count", "ids": "count_distinct(id)", "lo": "min(b)", "hi": "max(site_id)"}}),
    ("aggregate", {"by": ["data.status"], "metrics": {
        "n": "count", "total": "sum(a)", "deep": "count_distinct(data.deep)"}}),
    ("aggregate", {"by": [], "metrics": {"s": "sum(data.n)", "m": "max(data)"}}),
]


@pytest.mark.parametrize("name, options", REDUCERS, ids=lambda o: str(o))
def test_count_and_aggregate_on_columns_give_what_they_give_on_records(name, options,
                                                                       tmp_path):
    """The same groups, values and rejects (a sum of what is not a number: the record's
    own JSON text, line and offset) from columns as from records, on mixed data."""
    from stages.aggregate import Aggregate
    from stages.count import Count

    make = (lambda: Count(**options)) if name == "count" else (lambda: Aggregate(**options))
    rejected = 0
    for seed in range(8):
        recs = records(seed)
        origins = (np.arange(1, 301), np.arange(0, 3000, 10))
        cols = Columns.from_records(recs, origins=origins, source="in.jsonl")
        assert cols is not None
        (tmp_path / f"c{seed}").mkdir()
        (tmp_path / f"r{seed}").mkdir()
        got = reduced(make, cols, tmp_path / f"c{seed}")
        want = reduced(make, Batch(recs, source="in.jsonl", origins=origins),
                       tmp_path / f"r{seed}")
        assert repr(got[0]) == repr(want[0]), seed
        assert got[1] == want[1], seed
        rejected += len(got[1])
    assert rejected > 0 or "sum(a)" not in str(options)


def run_mutate(options: dict, batch) -> tuple[list, list]:
    stage = Mutate(**options)
    ctx = Context()
    stage.open(ctx)
    out = next(stage.process(iter([batch])))
    run_mutate.columns = isinstance(out, Columns)
    out = out.records() if isinstance(out, Columns) else list(out)
    rejects = [(msgspec.json.decode(raw), reason, where["at"]) for raw, reason, where in
               ctx.rejected]
    return out, rejects


@pytest.mark.parametrize("options", MUTATE, ids=lambda o: str(o))
def test_mutate_on_columns_does_what_it_does_on_records(options):
    """Where a batch's records all have every field, the batch stays columns (no
    record gains a field another has before its others); elsewhere it may not."""
    for seed in range(12):
        dense = seed % 2 == 0
        recs = records(seed, missing=0.0 if dense else 0.15)
        origins = (np.arange(1, 301), np.arange(0, 3000, 10))
        want, want_rejects = run_mutate(options, Batch(recs, origins=origins))
        got, got_rejects = run_mutate(options, Columns.from_records(recs, origins=origins))
        assert same(got, want), seed
        assert got_rejects == want_rejects, seed
        if dense:
            assert run_mutate.columns, seed


def test_mutate_works_on_columns_without_a_record_step(monkeypatch):
    """The benchmark's reshaping is all column operations: nothing runs per record."""
    rng = random.Random(1)
    recs = [{"id": f"id{i}", "from": f"visitor{rng.randrange(50)}", "type": t,
             "site_id": str(rng.randrange(20)), "timestamp": 1429001309 + i,
             "data": {"message": "hi"} if t == "message" else {"status": "online"}}
            for i, t in enumerate(rng.choice(["message", "status"]) for _ in range(500))]
    monkeypatch.setattr(Mutate, "_by_record", staticmethod(lambda *a: pytest.fail("per record")))
    cols = Columns.from_records(recs)
    assert isinstance(cols.data.column("data"), pa.StructArray)
    got, _ = run_mutate(MUTATE[0], cols)
    monkeypatch.undo()
    want, _ = run_mutate(MUTATE[0], Batch(recs))
    assert same(got, want)


PASSING = ("from pipeline import Processor, SAME\n"
           "class Passing(Processor):\n"
           "    name = 'passing'\n"
           "    produces = SAME\n"
           "    def process(self, batches):\n"
           "        for batch in batches:\n"
           "            assert all(type(r) is dict for r in batch)\n"
           "            yield batch\n")


def columns_and_records(tmp_path, log, rest: str) -> dict[str, tuple[bytes, str, bytes]]:
    """file-input -> json-decode (object) -> `rest` (its output at OUT), run on columns
    and, with a record stage (a plugin) after json-decode, on records: for each, the
    output file, stderr and the dead-letter file."""
    (tmp_path / "recordstage.py").write_text(PASSING)
    outs = {}
    for name, extra in (("columns", ""), ("records", "  - recordstage:Passing: {}\n")):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"pipeline:\n  - file-input: {{path: {log}}}\n"
                       f"  - json-decode: {{schema: object}}\n{extra}"
                       + rest.replace("OUT", f"{tmp_path / name}.out"))
        run = subprocess.run([sys.executable, f"{ROOT}/main.py", "-c", str(cfg), "-w", "1",
                              "--state-dir", str(tmp_path / f"state-{name}"), "-q"],
                             cwd=tmp_path, capture_output=True, text=True,
                             env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        outs[name] = ((tmp_path / f"{name}.out").read_bytes(), run.stderr,
                      (tmp_path / f"state-{name}" / "dead_letter.jsonl").read_bytes())
    return outs


@pytest.mark.parametrize("output", [
    "jsonl-output: {path: OUT}",
    "csv-output: {path: OUT, columns: [type, id, sender, status, a, data.n, data, b.x]}",
    "aggregate: {by: [status, b], metrics: {n: count, total: sum(a), senders: "
    "count_distinct(sender), hi: max(data.n)}}\n"
    "  - csv-output: {path: OUT, columns: [status, b, n, total, senders, hi]}"])
def test_a_columnar_pipeline_writes_what_the_record_path_writes(tmp_path, output):
    """json-decode -> where -> mutate -> an output runs on columns (json-decode feeds
    only columnar stages); putting a record stage (a plugin) after json-decode turns it
    back to records. Both files hold the same records, and a bad line is rejected the
    same way in both."""
    lines = [msgspec.json.encode(r) for r in records(5, 2000, shuffle=0.002)]
    lines[17] = b'{"type": "message", "a": 1},{"b": 2}'
    lines[400] = b""
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    steps = ("  - where: {field: type, equals: message}\n"
             "  - mutate: {rename: {from: sender, data.status: status}, convert: {a: int}}\n")
    outs = columns_and_records(tmp_path, log, f"{steps}  - {output}\n")
    decode = msgspec.json.Decoder().decode_lines
    dead = {name: decode(out[2]) for name, out in outs.items()}
    assert outs["columns"][0].count(b"\n") > (150 if "aggregate" not in output else 5)
    assert outs["columns"][1] == outs["records"][1].replace("state-records", "state-columns")
    assert len(dead["columns"]) > 20 and dead["columns"] == dead["records"]
    assert outs["columns"][0] == outs["records"][0]


def test_readme_columnar_stage_example_does_on_columns_what_it_does_on_records():
    """The README's TextLength example: on columns (its Arrow path, or the records where
    a batch is not plain) and on records, the same output."""
    import re

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(import pyarrow as pa\nimport pyarrow.compute as pc\n.*?)```",
                     readme, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    cls = scope["TextLength"]
    assert cls.columnar
    for seed in range(6):
        recs = records(seed)
        for options in ({"field": "type", "to": "n"}, {"field": "from", "to": "n"},
                        {"field": "type", "to": "a"}):
            want = list(next(cls(**options).process(iter([Batch(recs)]))))
            out = next(cls(**options).process(iter([Columns.from_records(recs)])))
            got = out.records() if isinstance(out, Columns) else list(out)
            assert same(got, want), (seed, options)
    plain = next(cls(field="type", to="n").process(iter([Columns.from_records(records(1))])))
    assert isinstance(plain, Columns) and plain.data.schema.field("n").type == pa.int64()


@pytest.mark.parametrize("steps, columns", [
    (["jsonl-output: {path: o.jsonl}"], []),  # making columns would only cost
    (["where: {field: type, equals: x}", "jsonl-output: {path: o.jsonl}"], []),
    (["where: {field: type, equals: x}", "mutate: {remove: [a]}",
      "jsonl-output: {path: o.jsonl}"], ["json-decode", "where"]),
    (["where: {field: type, equals: x}", "mutate: {remove: [a]}",
      "csv-output: {path: o.csv, columns: [type]}"], ["json-decode", "where"]),
    (["mutate: {remove: [a]}", "count: {field: type}",
      "csv-output: {path: o.csv, columns: [type, count]}"], ["json-decode"]),
    (["mutate: {remove: [a]}", "dedupe: {field: id}", "count: {field: type}",
      "csv-output: {path: o.csv, columns: [type, count]}"], []),  # dedupe takes records
    (["where: {field: type, equals: x}", "count: {field: type}",
      "csv-output: {path: o.csv, columns: [value, count]}"], []),
    (["mutate: {remove: [a]}", "fork: {a: [{jsonl-output: {path: a.jsonl}}], "
      "b: [{csv-output: {path: b.csv, columns: [type]}}]}"], ["json-decode"]),
    (["mutate: {remove: [a]}", "fork: {a: [{jsonl-output: {path: a.jsonl}}], "
      "b: [{count: {field: type}}, {csv-output: {path: b.csv, columns: [value, count]}}]}"],
     ["json-decode"]),
    (["mutate: {remove: [a]}", "fork: {a: [{jsonl-output: {path: a.jsonl}}], "
      "b: [{dedupe: {field: id}}, {jsonl-output: {path: b.jsonl}}]}"],
     []),  # dedupe takes records
    (["mutate: {remove: [a]}", "dedupe: {field: id}", "jsonl-output: {path: o.jsonl}"], []),
    (["where: {field: type, equals: x}",
      "fork: {a: [{mutate: {remove: [a]}}, {jsonl-output: {path: a.jsonl}}], "
      "b: [{mutate: {remove: [b]}}, {jsonl-output: {path: b.jsonl}}]}"],
     ["json-decode", "where"]),
])
def test_columns_are_made_where_a_stage_gains_from_them(tmp_path, steps, columns):
    """json-decode makes columns where every stage after it, to the outputs, takes them
    (none has to turn them back into records) and one (mutate) works faster on them
    than their making costs; a columnar stage passes on what it is given."""
    import main
    from pipeline.config import load_config

    cfg_path = tmp_path / "p.yaml"
    cfg_path.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n"
                        "  - json-decode: {schema: object}\n"
                        + "".join(f"  - {s}\n" for s in steps))
    cfg = load_config(str(cfg_path), main.build_registry())
    assert [s.name for s in cfg.stages if s.feeds_columns] == columns


def test_a_block_decoded_in_slices_keeps_every_line_number(tmp_path):
    """20,000 lines in one 4 MB block: json-decode makes its columns SLICE lines at a
    time. The file and the dead-letter file are those of the record path (one block at
    a time), and every reject names its own line and offset, on both sides of each
    slice's edge."""
    from stages.json_decode import SLICE
    lines = [msgspec.json.encode(r) for r in records(7, 20000, shuffle=0.001)]
    bad = [0, SLICE - 1, SLICE, SLICE + 1, 2 * SLICE, 19999]
    for i in bad:
        lines[i] = b'{"type": "message"' + str(i).encode()
    lines[SLICE + 5] = b""
    data = b"\n".join(lines) + b"\n"
    log = tmp_path / "log.jsonl"
    log.write_bytes(data)
    outs = columns_and_records(tmp_path, log, "  - mutate: {rename: {from: sender}}\n"
                                              "  - jsonl-output: {path: OUT}\n")
    assert outs["columns"][0] == outs["records"][0] and outs["columns"][2] == outs["records"][2]
    entries = msgspec.json.Decoder().decode_lines(outs["columns"][2])
    starts = np.cumsum([0] + [len(x) + 1 for x in lines])
    assert [(e["line"], e["offset"]) for e in entries] == [(i + 1, int(starts[i])) for i in bad]
    assert outs["columns"][0].count(b"\n") == len(lines) - len(bad) - 1


def test_field_names_a_row_struct_cannot_take_are_written_exactly():
    """A name with a backslash, a quote or a control character (which a msgspec Struct
    cannot be renamed to) is written as a dict row: the same JSON text as the record."""
    records = [{"a\\b": 1, 'c"d': {"e\x01f": 2}, "x": None}, {"x": 3}]
    cols = Columns.from_records(records)
    assert cols is not None
    assert cols.json_lines() == b"".join(msgspec.json.encode(r) + b"\n" for r in records)
