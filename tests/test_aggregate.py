"""aggregate: every metric and edge case exactly, independent of how the input is split
and bucketed, through every file output, and equal to DuckDB after dedupe."""
from __future__ import annotations

import json
import math
import random
import sys
from fractions import Fraction

import pytest

from conftest import ROOT, cli, generate
from pipeline import Batch
from pipeline.keyed import reduce_buckets, result_batches
from stages.aggregate import Aggregate

sys.path.insert(0, str(ROOT / "test_scripts"))
import aggregate_vs_duckdb  # noqa: E402


class Ctx:
    def __init__(self):
        self.rejected = []

    def reject(self, raw, reason, **where):
        self.rejected.append((raw, reason, where))


def agg(records, by, batch=None, /, **metrics):
    """(groups, [(raw, reason)]) of one Aggregate over the records, `batch` per batch."""
    stage, ctx = Aggregate(by=by, metrics=metrics), Ctx()
    stage.open(ctx)
    size = batch or max(len(records), 1)
    for i in range(0, len(records), size):
        stage.update(Batch(records[i:i + size]))
    out = [r for b in stage.finish() for r in b]
    return out, [(raw, reason) for raw, reason, _ in ctx.rejected]


def in_tasks(records, by, metrics, tmp_path, tasks, nbuckets, batch):
    """What the engine does: map tasks over consecutive pieces of the records, each
    with its own spill directory, then the reduce phases over every bucket."""
    make = lambda: Aggregate(by=by, metrics=metrics)  # noqa: E731
    dirs = []
    cuts = [len(records) * i // tasks for i in range(tasks + 1)]
    for t in range(tasks):
        red = make()
        red.open(Ctx())
        d = tmp_path / f"map{t}-{nbuckets}-{batch}"
        red.configure(str(d), nbuckets=nbuckets, task=t)
        part = records[cuts[t]:cuts[t + 1]]
        for i in range(0, len(part), batch):
            red.update(Batch(part[i:i + batch]))
        red.snapshot()  # what the engine does at a map task's end: settle, then mark
        red.spill.close()
        dirs.append(str(d))
    stage = make()
    stage.nbuckets = nbuckets
    inputs = list(dirs)
    for phase in range(stage.phases):
        out = str(tmp_path / f"reduce{phase}-{tasks}-{nbuckets}-{batch}")
        reduce_buckets(stage, phase, range(nbuckets), inputs, out, memory_bytes=64 << 20)
        inputs.append(out)
    return [r for b in result_batches(stage, inputs[-1:], nbuckets) for r in b]


# -- metrics ---------------------------------------------------------------------------

def test_every_metric_per_group_in_config_order():
    recs = [{"site": "W", "type": "message", "from": "v1", "ts": 10},
            {"site": "W", "type": "message", "from": "v2", "ts": 5},
            {"site": "W", "type": "message", "from": "v1", "ts": 20},
            {"site": "V", "type": "status", "from": "o1", "ts": 7.5},
            {"site": "W", "type": "status", "from": "o1", "ts": 1}]
    out, rej = agg(recs, ["site", "type"], records="count", senders="count_distinct(from)",
                   first="min(ts)", last="max(ts)", total="sum(ts)")
    assert rej == []
    assert out == [
        {"site": "V", "type": "status", "records": 1, "senders": 1, "first": 7.5, "last": 7.5,
         "total": 7.5},
        {"site": "W", "type": "message", "records": 3, "senders": 2, "first": 5, "last": 20,
         "total": 35},
        {"site": "W", "type": "status", "records": 1, "senders": 1, "first": 1, "last": 1,
         "total": 1}]
    assert [list(g) for g in out] == [["site", "type", "records", "senders", "first", "last",
                                       "total"]] * 3
    assert type(out[1]["total"]) is int and type(out[0]["total"]) is float


def test_missing_or_null_fields_do_not_count_and_a_missing_by_field_is_null():
    recs = [{"g": "a", "v": 1}, {"g": "a"}, {"g": "a", "v": None}, {"v": 4}, {"g": None, "v": 5},
            {"g": "b"}]
    out, _ = agg(recs, ["g"], n="count", d="count_distinct(v)", lo="min(v)", hi="max(v)",
                 s="sum(v)")
    assert out == [
        {"g": None, "n": 2, "d": 2, "lo": 4, "hi": 5, "s": 9},
        {"g": "a", "n": 3, "d": 1, "lo": 1, "hi": 1, "s": 1},
        {"g": "b", "n": 1, "d": 0, "lo": None, "hi": None, "s": None}]


def test_groups_are_typed_json_values_in_a_total_order_across_types():
    values = ["b", "a", "B", "é", 2**70, 1.5, 1, 1.0, "1", True, False, None, 0.0, -0.0, 0,
              -3, [1, "x"], [1], [0, 5], {"k": 2, "a": 1}, {"a": 0}]
    recs = [{"g": v} for v in values] + [{}]
    out, _ = agg(recs, ["g"], n="count")
    assert [(g["g"], g["n"]) for g in out] == [
        (None, 2), (False, 1), (True, 1), (-3, 1), (0, 1), (-0.0, 1), (0.0, 1), (1, 1),
        (1.0, 1), (1.5, 1), (2**70, 1), ("1", 1), ("B", 1), ("a", 1), ("b", 1), ("é", 1),
        ([0, 5], 1), ([1], 1), ([1, "x"], 1), ({"a": 0}, 1), ({"a": 1, "k": 2}, 1)]
    got = [g["g"] for g in out]
    assert [type(v) for v in got[3:11]] == [int, int, float, float, int, float, float, int]
    assert math.copysign(1, got[5]) == -1 and math.copysign(1, got[6]) == 1


def test_groups_of_several_fields_and_objects_with_keys_in_any_order():
    recs = [{"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 2, "x": 1}, "b": 1},
            {"a": {"x": 1, "y": 2}, "b": "1"}]
    out, _ = agg(recs, ["a", "b"], n="count")
    assert out == [{"a": {"x": 1, "y": 2}, "b": 1, "n": 2}, {"a": {"x": 1, "y": 2}, "b": "1", "n": 1}]


def test_by_nothing_is_one_group_and_no_records_no_groups():
    assert agg([{"v": 1}, {"v": 2.5}], [], n="count", s="sum(v)")[0] == [{"n": 2, "s": 3.5}]
    assert agg([], ["g"], n="count")[0] == []


def test_dotted_by_fields_read_and_write_nested_values():
    recs = [{"data": {"status": "online"}, "site": 1}, {"data": {"status": "online"}, "site": 1},
            {"data": {"status": "offline"}, "site": 1}, {"data": "text", "site": 2}]
    out, _ = agg(recs, ["site", "data.status"], n="count")
    assert out == [{"site": 1, "data": {"status": "offline"}, "n": 1},
                   {"site": 1, "data": {"status": "online"}, "n": 2},
                   {"site": 2, "data": {"status": None}, "n": 1}]


@pytest.mark.parametrize("values,lo,hi", [
    ([3, "a", 2.5], 2.5, "a"),                 # numbers before strings
    ([1, 1.0], 1, 1.0),                        # equal numbers: the int first
    ([1.0, 1], 1, 1.0),
    ([0.0, -0.0, 0], 0, 0.0),                  # 0 < -0.0 < 0.0
    ([-0.0, 0.0, 2.5], -0.0, 2.5), ([0.0, -0.0, -2.5], -2.5, 0.0),
    ([-0.0, 0.0], -0.0, 0.0), ([0.0, -0.0], -0.0, 0.0),
    ([True, 5, False], False, 5),              # bools before numbers
    (["b", "a", "B"], "B", "b"),               # code points
    (["é", "z", "ab"], "ab", "é"),
    ([2**64, 1.8446744073709552e19], 2**64, 1.8446744073709552e19),
    ([10**30, 1e30], 10**30, 1e30),            # exactly: 1e30 is 1000000000000000019884624838656
    (["x", [1], {"a": 1}, None], "x", {"a": 1}),  # strings < arrays < objects; null ignored
])
def test_min_and_max_across_types(values, lo, hi):
    out, _ = agg([{"v": v} for v in values], [], lo="min(v)", hi="max(v)")
    assert out == [{"lo": lo, "hi": hi}]
    assert type(out[0]["lo"]) is type(lo) and type(out[0]["hi"]) is type(hi)
    for v in (lo, hi):
        if isinstance(v, float):
            assert math.copysign(1, out[0]["lo" if v is lo else "hi"]) == math.copysign(1, v)


@pytest.mark.parametrize("values,total", [
    ([1, 2, 3], 6),
    ([2**80 + 1, 5, -2**80], 6),                  # integers stay exact integers
    ([1e100, 1.0, -1e100], 1.0),                  # exact, then rounded once
    ([0.1] * 10, 1.0),                            # naive float sum: 0.9999999999999999
    ([2**53, 1, 1.0], 9007199254740994.0),        # naive: 9007199254740992.0
    ([1, 0.5], 1.5),                              # one float makes a float
    ([3, 0.0], 3.0),
    ([-0.0], -0.0), ([-0.0, -0.0], -0.0), ([-0.0, 0.0], 0.0), ([-0.0, 0], 0.0),
    ([5e-324, 5e-324], 1e-323),
    ([1.7976931348623157e308, 1.7976931348623157e308], None),  # beyond the double range
    ([1.7976931348623157e308, 1.7976931348623157e308, -1.7976931348623157e308],
     1.7976931348623157e308),
    ([10**400, -(10**400), 0.5], 0.5),
])
def test_sum_is_exact(values, total):
    out, _ = agg([{"v": v} for v in values], [], s="sum(v)")
    got = out[0]["s"]
    assert got == total and type(got) is type(total)
    if isinstance(total, float):
        assert math.copysign(1, got) == math.copysign(1, total)


def test_sum_is_correctly_rounded_like_fsum():
    rng = random.Random(5)
    for _ in range(200):
        values = [rng.uniform(-1, 1) * 10 ** rng.randint(-20, 20) for _ in range(rng.randint(1, 60))]
        out, _ = agg([{"v": v} for v in values], [], 7, s="sum(v)")
        assert out == [{"s": math.fsum(values)}]


def test_sum_rejects_what_is_not_a_number():
    recs = [{"g": "a", "v": 1}, {"g": "a", "v": "5"}, {"g": "a", "v": True}, {"g": "b", "v": [1]},
            {"g": "b", "v": {"x": 1}}, {"g": "b"}]
    out, rej = agg(recs, ["g"], n="count", s="sum(v)")
    assert out == [{"g": "a", "n": 1, "s": 1}, {"g": "b", "n": 1, "s": None}]
    assert rej == [
        (b'{"g":"a","v":"5"}', "field 'v': sum(v) needs a number, got '5'"),
        (b'{"g":"a","v":true}', "field 'v': sum(v) needs a number, got true"),
        (b'{"g":"b","v":[1]}', "field 'v': sum(v) needs a number, got [1]"),
        (b'{"g":"b","v":{"x":1}}', "field 'v': sum(v) needs a number, got {\"x\":1}")]


def test_count_distinct_compares_json_texts():
    recs = [{"v": 1}, {"v": 1.0}, {"v": "1"}, {"v": 1}, {"v": True}, {"v": None}, {},
            {"v": {"a": 1, "b": 2}}, {"v": {"b": 2, "a": 1}}, {"v": [1, 2]}, {"v": [2, 1]}]
    assert agg(recs, [], 3, d="count_distinct(v)")[0] == [{"d": 7}]


def test_two_distinct_metrics_and_repeated_metrics():
    recs = [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 2, "b": 2}]
    out, _ = agg(recs, [], da="count_distinct(a)", db="count_distinct(b)", n="count", m="count",
                 d2="count_distinct(a)")
    assert out == [{"da": 2, "db": 2, "n": 3, "m": 3, "d2": 2}]


def test_site_event_records_from_json_decode(tmp_path):
    """Structs are read by JSON name; integer timestamps stay integers."""
    from stages.json_decode import JsonDecode
    dec = JsonDecode()
    dec.open(Ctx())
    lines = [b'{"id":"a","from":"o","type":"status","site_id":7,"data":{"status":"online"},"timestamp":3}',
             b'{"id":"b","from":"o","type":"status","site_id":7,"data":{"status":"online"},"timestamp":2.5}',
             b'{"id":"c","from":"v","type":"message","site_id":"7","timestamp":1}']
    recs = list(dec.process(iter([Batch(lines)])))[0]
    out, _ = agg(recs, ["site_id", "data.status"], n="count", s="sum(timestamp)",
                 d="min(data)", f="count_distinct(from)")
    assert out == [
        {"site_id": 7, "data": {"status": "online"}, "n": 2, "s": 5.5, "d": {"status": "online"},
         "f": 1},
        {"site_id": "7", "data": {"status": None}, "n": 1, "s": 1, "d": None, "f": 1}]


# -- independent of batches, map tasks and buckets ---------------------------------------

def random_records(seed, n):
    rng = random.Random(seed)
    sites = [rng.choice([rng.randint(0, 50), "s" + str(rng.randint(0, 40)), None])
             for _ in range(60)]
    out = []
    for _ in range(n):
        r = {"site": rng.choice(sites), "type": rng.choice(["message", "status"]),
             "from": f"u{rng.randint(0, 300)}" if rng.random() < 0.9 else "x" * 40 + str(rng.randint(0, 9))}
        roll = rng.random()
        if r["type"] == "status":  # these groups sum integers only
            if roll < 0.8:
                r["v"] = rng.randint(-10**6, 10**6)
        elif roll < 0.4:
            r["v"] = rng.randint(-10**6, 10**6)
        elif roll < 0.8:
            r["v"] = rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30)
        elif roll < 0.9:
            r["v"] = rng.choice([0.1, 0.2, 0.3, 1e16, -1e16, 2**53 + 1])
        out.append(r)
    return out


METRICS = {"n": "count", "senders": "count_distinct(from)", "lo": "min(v)", "hi": "max(v)",
           "s": "sum(v)", "vs": "count_distinct(v)"}


def reference(records):
    """The expected groups, computed the plain way (Fractions for the sums)."""
    def rank(v):
        return (0,) if v is None else (1, v) if isinstance(v, int) else (2, v)
    groups = {}
    for r in records:
        groups.setdefault((json.dumps(r["site"]), r["type"]), []).append(r)
    out = []
    for (site, typ), rs in groups.items():
        vs = [r["v"] for r in rs if "v" in r]
        exact = sum(map(Fraction, vs), Fraction(0))
        s = None if not vs else int(exact) if all(type(v) is int for v in vs) else float(exact)
        lo = min(vs, key=lambda v: (v, type(v) is float)) if vs else None
        hi = max(vs, key=lambda v: (v, type(v) is float)) if vs else None
        out.append({"site": json.loads(site), "type": typ, "n": len(rs),
                    "senders": len({r["from"] for r in rs}), "lo": lo, "hi": hi, "s": s,
                    "vs": len({json.dumps(v) for v in vs})})
    out.sort(key=lambda g: (rank(g["site"]), g["type"]))
    return out


def test_the_same_result_however_the_input_is_split(tmp_path):
    records = random_records(3, 6000)
    expected = reference(records)
    assert any(isinstance(g["s"], float) for g in expected)
    assert any(isinstance(g["s"], int) for g in expected)
    assert agg(records, ["site", "type"], 6000, **METRICS)[0] == expected
    assert agg(records, ["site", "type"], 7, **METRICS)[0] == expected
    for tasks, nbuckets, batch in [(1, 1, 1000), (3, 5, 97), (4, 64, 500), (7, 300, 33)]:
        got = in_tasks(records, ["site", "type"], METRICS, tmp_path, tasks, nbuckets, batch)
        assert got == expected, (tasks, nbuckets, batch)


def test_rows_held_across_batches_spill_once_enough_are_held(tmp_path, monkeypatch):
    """update() holds rows until hold_rows, then spills them (settle); whatever the
    hold, the result is the same, and a snapshot leaves nothing held."""
    records = random_records(5, 3000)
    expected = reference(records)
    for hold in (1, 50, 1 << 20):
        monkeypatch.setattr(Aggregate, "hold_rows", hold)
        assert agg(records, ["site", "type"], 97, **METRICS)[0] == expected, hold
        got = in_tasks(records, ["site", "type"], METRICS, tmp_path / str(hold), 3, 16, 97)
        assert got == expected, hold
    stage = Aggregate(by=["site"], metrics={"n": "count"})
    stage.open(Ctx())
    stage.update(Batch(records[:100]))
    assert len(stage.held_keys) == 100  # under the default hold: nothing spilled yet
    stage.snapshot()
    assert stage.held_keys == [] and stage.spill.rows > 0
    assert sum(r["n"] for b in stage.finish() for r in b) == 100  # (and its scratch goes)


# -- options -----------------------------------------------------------------------------

HELP = ('count, count_distinct(F), approx_count_distinct(F), min(F), '
        'max(F), sum(F), avg(F), first(F), last(F), top(F, N) or percentile(F, P)')


@pytest.mark.parametrize("options,problem", [
    ({"by": ["a"], "metrics": {}}, f"`metrics` needs at least one {{name: {HELP}}}"),
    ({"by": ["a"], "metrics": {"m": "mean(x)"}}, f"metric 'm': expected {HELP}; got 'mean(x)'"),
    ({"by": ["a"], "metrics": {"m": 3}}, f"metric 'm': expected {HELP}; got 3"),
    ({"by": ["a"], "metrics": {"m": "top(x, 0)"}},
     "metric 'm': `top` takes a count from 1 to 1000, as in top(path, 5); got 'top(x, 0)'"),
    ({"by": ["a"], "metrics": {"m": "top(x, 1001)"}},
     "metric 'm': `top` takes a count from 1 to 1000, as in top(path, 5); got 'top(x, 1001)'"),
    ({"by": ["a"], "metrics": {"m": "top(x,)"}},
     "metric 'm': `top` takes a count from 1 to 1000, as in top(path, 5); got 'top(x,)'"),
    ({"by": ["a"], "metrics": {"m": "top()"}},
     "metric 'm': `top` needs a field, as in top(path, 5); got 'top()'"),
    ({"by": ["a"], "metrics": {"m": "percentile(x)"}},
     "metric 'm': `percentile` takes a percentage from 0 to 100, as in "
     "percentile(latency, 95); got 'percentile(x)'"),
    ({"by": ["a"], "metrics": {"m": "percentile(x, 100.5)"}},
     "metric 'm': `percentile` takes a percentage from 0 to 100, as in "
     "percentile(latency, 95); got 'percentile(x, 100.5)'"),
    ({"by": ["a"], "metrics": {"m": "percentile(x, -1)"}},
     "metric 'm': `percentile` takes a percentage from 0 to 100, as in "
     "percentile(latency, 95); got 'percentile(x, -1)'"),
    ({"by": ["a"], "metrics": {"m": "count_distinct(x, 2)"}},
     "metric 'm': `count_distinct` takes one field; got 'count_distinct(x, 2)'"),
    ({"by": ["a"], "metrics": {"m": "count(x)"}},
     "metric 'm': `count` counts records and takes no field; got 'count(x)'"),
    ({"by": ["a"], "metrics": {"m": "min()"}},
     "metric 'm': `min` needs a field, as in min(timestamp); got 'min()'"),
    ({"by": ["a"], "metrics": {"m": "sum"}},
     "metric 'm': `sum` needs a field, as in sum(timestamp); got 'sum'"),
    ({"by": ["a"], "metrics": {"a": "count"}},
     "metric 'a' is also a `by` field's name; output fields must differ"),
    ({"by": ["a.b"], "metrics": {"a": "count"}},
     "metric 'a' is also a `by` field's name; output fields must differ"),
    ({"by": ["a"], "metrics": {"x.y": "count"}},
     "metric names must be non-empty strings without dots; got 'x.y'"),
    ({"by": ["a", "a"], "metrics": {"n": "count"}},
     "`by` fields 'a' and 'a' would be the same output field"),
    ({"by": ["data", "data.status"], "metrics": {"n": "count"}},
     "`by` fields 'data' and 'data.status' overlap; one is inside the other"),
    ({"by": ["a", 1], "metrics": {"n": "count"}}, "`by` must be a list of field names; got ['a', 1]"),
])
def test_bad_options_are_refused(options, problem):
    assert Aggregate.check_options(options) == "stage 'aggregate': " + problem


def test_metric_spelling_is_forgiving_about_spaces():
    assert Aggregate.check_options({"by": [], "metrics": {"m": " min( ts ) ", "n": "count"}}) is None


def test_bad_metric_is_refused_at_config_load_with_its_line(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode\n"
                   "  - aggregate:\n      by: [site_id]\n      metrics: {n: median(timestamp)}\n"
                   "  - jsonl-output: {path: '-'}\n")
    p = cli("validate", "-c", str(cfg))
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: {cfg}:4: stage 'aggregate': metric 'n': expected "
                        f"{HELP}; got 'median(timestamp)'\n")


# -- through main.py, into every file output ------------------------------------------

LINES = ['{"id":"a","from":"v1","type":"message","site_id":"W","timestamp":10}',
         '{"id":"a","from":"v1","type":"message","site_id":"W","timestamp":10}',
         '{"id":"b","from":"v2","type":"message","site_id":"W","timestamp":5.5}',
         '{"id":"c","from":"o1","type":"status","site_id":124,"data":{"status":"online"},"timestamp":1}',
         '{"id":"d","from":"v3","type":"message","site_id":"W","timestamp":"x"}']
HEAD = ("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode\n  - dedupe: {field: id}\n"
        "  - aggregate:\n      by: [site_id, type]\n"
        "      metrics: {n: count, senders: count_distinct(from), total: sum(timestamp)}\n")


def run_output(tmp_path, output):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(HEAD + output)
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(LINES) + "\n")
    p = cli("-c", str(cfg), "-f", str(data), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert p.stderr.endswith("sluice: 5 lines read, 4 records, 1 duplicates skipped; rejected 1 "
                             f"of 5 lines (reasons in {tmp_path / 's' / 'dead_letter.jsonl'})\n")
    return p.stdout


def test_jsonl_output(tmp_path):
    assert run_output(tmp_path, "  - jsonl-output: {path: '-'}\n") == (
        '{"site_id":124,"type":"status","n":1,"senders":1,"total":1}\n'
        '{"site_id":"W","type":"message","n":2,"senders":2,"total":15.5}\n')


def test_csv_output(tmp_path):
    out = tmp_path / "out.csv"
    run_output(tmp_path, f"  - csv-output: {{path: '{out}', columns: [site_id, type, n, senders, total]}}\n")
    assert out.read_text() == ("site_id,type,n,senders,total\n124,status,1,1,1\n"
                               "W,message,2,2,15.5\n")


def test_summary_json_output(tmp_path):
    assert json.loads(run_output(tmp_path, "  - summary-json-output: {}\n")) == {"sites": [
        {"site_id": 124, "type": "status", "n": 1, "senders": 1, "total": 1},
        {"site_id": "W", "type": "message", "n": 2, "senders": 2, "total": 15.5}]}


# -- against DuckDB -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("agg") / "log.jsonl"
    return generate(path, 20000, 13, "--mixed-site-ids", "--conflicting-dups", "--sites", "120")


@pytest.fixture(scope="module")
def duckdb_groups(chat_log):
    pytest.importorskip("duckdb")
    return aggregate_vs_duckdb.duckdb_groups(str(chat_log))


@pytest.mark.parametrize("workers,squeeze_kb", [(1, None), (3, None), (1, 16), (3, 16)])
def test_after_dedupe_equals_a_duckdb_group_by(chat_log, duckdb_groups, tmp_path, workers,
                                               squeeze_kb):
    """One process or three, normal or tiny buckets: DuckDB's GROUP BY over the first
    record of each id, exactly (sums: exact integers, or the exactly rounded float)."""
    got, _ = aggregate_vs_duckdb.sluice_groups(str(chat_log), workers, squeeze_kb, str(tmp_path))
    assert len(duckdb_groups) > 200
    assert any(isinstance(g["site_id"], int) for g in duckdb_groups)
    assert any(isinstance(g["total"], float) for g in duckdb_groups)
    assert aggregate_vs_duckdb.differences(duckdb_groups, got) == []


def test_the_comparison_notices_differences(duckdb_groups):
    bad = [dict(g) for g in duckdb_groups]
    bad[0]["senders"] += 1
    i = next(i for i, g in enumerate(bad) if isinstance(g["total"], float))
    bad[i]["total"] = math.nextafter(bad[i]["total"], math.inf)
    j = next(j for j, g in enumerate(bad) if isinstance(g["total"], int))
    bad[j]["total"] = float(bad[j]["total"])
    problems = aggregate_vs_duckdb.differences(duckdb_groups, bad)
    assert len(problems) == 3
    assert aggregate_vs_duckdb.differences(duckdb_groups, bad[1:])[0] == (
        f"{len(bad) - 1} groups; DuckDB has {len(bad)}")


def test_sum_rejects_reach_the_dead_letter_file(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"
                   "  - aggregate: {by: [g], metrics: {n: count, s: sum(v)}}\n"
                   "  - jsonl-output: {path: '-'}\n")
    data = tmp_path / "in.jsonl"
    data.write_text('{"g":"a","v":1}\n{"g":"a","v":"2"}\n{"g":"a","v":2.5}\n')
    p = cli("-c", str(cfg), "-f", str(data), "--state-dir", str(tmp_path / "s"), "-w", "1")
    assert p.returncode == 0, p.stderr
    assert p.stdout == '{"g":"a","n":2,"s":3.5}\n'
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text().splitlines()]
    assert dead == [{"line": 2, "offset": 16, "stage": "aggregate",
                     "reason": "field 'v': sum(v) needs a number, got '2'",
                     "raw": '{"g":"a","v":"2"}'}]


def _mixed_numbers(rng, n):
    pool = [1, 1.0, 2, 2.0, -3, -3.5, 7.25, 2**52 + 1, -(2**52) - 1, 1e300, -1e300,
            1429000000, 1429000000.5, None, "absent"]
    out = []
    for _ in range(n):
        v = rng.choice(pool) if rng.random() < 0.5 else (
            rng.randrange(-10**6, 10**6) if rng.random() < 0.5 else rng.uniform(-1e6, 1e6))
        out.append(v)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_min_and_max_in_numpy_equal_the_record_by_record_path(seed, monkeypatch):
    """_numeric_extremes() (numpy) against _extremes()'s own loop on mixed ints and
    floats with ties between 1 and 1.0, nulls, missing fields and many groups; and on
    columns it must leave to the loop (a zero, an int beyond 2**53 beside floats, one
    beyond 64 bits, a string)."""
    import stages.aggregate_values as A
    rng = random.Random(seed)
    extra = [[], [0.0], [-0.0], [2**53 + 1, 0.5], [2**64], ["x"]][seed % 6]
    values = _mixed_numbers(rng, 3000) + extra
    recs = [({"g": rng.randrange(40)} if v == "absent" else {"g": rng.randrange(40), "v": v})
            for v in values]
    rng.shuffle(recs)
    fast, _ = agg(recs, ["g"], 500, lo="min(v)", hi="max(v)")
    monkeypatch.setattr(A, "_numeric_extremes", lambda *a: False)
    slow, _ = agg(recs, ["g"], 500, lo="min(v)", hi="max(v)")
    assert [(r["g"], r["lo"], type(r["lo"]), r["hi"], type(r["hi"])) for r in fast] == \
        [(r["g"], r["lo"], type(r["lo"]), r["hi"], type(r["hi"])) for r in slow]


def test_min_and_max_take_the_numpy_path_on_plain_numbers():
    """So that the comparison above compares two paths, not one path with itself."""
    import stages.aggregate_values as A
    for col in ([3, 1.5, None, 2], [5, 7, 9], [0.5, 2.5], [1, 1.0]):
        accs = [[len(col), None]]
        assert A._numeric_extremes(1, True, col, [0] * len(col), accs)
        assert accs[0][1][1] == min(v for v in col if v is not None)
    assert accs[0][1][1] == 1 and type(accs[0][1][1]) is int  # of 1 and 1.0, min is 1
    for col in ([0, 1.5], [2**53, 0.5], [2**64], ["a", 1], [True, 2], [None]):
        assert not A._numeric_extremes(1, True, col, [0] * len(col), [[len(col), None]])
