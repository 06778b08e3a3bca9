"""aggregate's avg, first, last, top, percentile and approx_count_distinct: exact values
on small cases, a plain-Python reference on mixed, missing and null data however the
input is split (map tasks, buckets, batches, 1 and 2 workers, tiny buckets), and the
bounded ones within their stated error and the same to the last bit however split."""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from fractions import Fraction

import pytest

from conftest import cli
from stages import aggregate_sketches as sketches
from test_aggregate import agg, in_tasks


def number_rank(v):
    return (v, type(v) is float)  # ints before equal floats


def value_rank(v):
    """The order of values, for the reference's data: null, bools, numbers, strings,
    lists, objects (as aggregate documents it)."""
    if v is None:
        return (0,)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, (int, float)):
        return (2, *number_rank(v))
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, list):
        return (4, tuple(value_rank(x) for x in v))
    return (5, json.dumps(v, sort_keys=True, separators=(",", ":")))


def identity(v):
    return json.dumps(v, sort_keys=True)


def ref_percentile(values, p):
    doubles = sorted((float(v) for v in values), key=lambda x: (x, math.copysign(1, x)))
    pick = doubles[max(1, math.ceil(Fraction(p) * len(doubles) / 100)) - 1]
    return int(pick) if all(type(v) is int for v in values) else pick


def reference(records, n_top=3):
    """Every new metric of each site, the plain way, records in file order."""
    groups = {}
    for r in records:
        groups.setdefault(identity(r.get("site")), []).append(r)
    out = []
    for site, rs in groups.items():
        vs = [r["v"] for r in rs if r.get("v") is not None]
        ws = [r["w"] for r in rs if r.get("w") is not None]
        senders = Counter(identity(r["from"]) for r in rs if r.get("from") is not None)
        top = sorted(senders.items(), key=lambda kv: (-kv[1], value_rank(json.loads(kv[0]))))
        out.append({
            "site": json.loads(site), "n": len(rs),
            "mean": float(sum(map(Fraction, vs)) / len(vs)) if vs else None,
            "first_w": ws[0] if ws else None, "last_w": ws[-1] if ws else None,
            "top": [{"value": json.loads(k), "count": c} for k, c in top[:n_top]],
            "p0": ref_percentile(vs, 0) if vs else None,
            "p50": ref_percentile(vs, 50) if vs else None,
            "p95": ref_percentile(vs, "95") if vs else None,
            "p99_9": ref_percentile(vs, "99.9") if vs else None,
            "senders": len(senders)})
    out.sort(key=lambda g: value_rank(g["site"]))
    return out


METRICS = {"n": "count", "mean": "avg(v)", "first_w": "first(w)", "last_w": "last(w)",
           "top": "top(from, 3)", "p0": "percentile(v, 0)", "p50": "percentile(v, 50)",
           "p95": "percentile(v, 95)", "p99_9": "percentile(v, 99.9)",
           "senders": "approx_count_distinct(from)"}


def mixed_records(seed, n, sites=40):
    rng = random.Random(seed)
    site_ids = [None] + [rng.choice([rng.randint(0, 30), f"s{rng.randint(0, 30)}"])
                         for _ in range(sites - 1)]
    senders = [f"u{i}" for i in range(60)] + [7, 7.0, True, None]
    out = []
    for _ in range(n):
        r = {"from": rng.choice(senders[:rng.randint(1, len(senders))])}
        if rng.random() < 0.99:
            r["site"] = rng.choice(site_ids)
        roll = rng.random()
        if roll < 0.35:
            r["v"] = rng.randint(-1000, 1000)
        elif roll < 0.7:
            r["v"] = rng.choice([rng.uniform(-50, 50), 0.1, -0.0, 1e300, 2**53 + 1])
        elif roll < 0.8:
            r["v"] = None
        roll = rng.random()
        if roll < 0.6:
            r["w"] = rng.choice([rng.randint(0, 9), "x", "y", [1, {"k": 2}], {"b": 1, "a": [2]},
                                 False, 2.5, None])
        if rng.random() < 0.05:
            del r["from"]
        out.append(r)
    return out


# -- exact values on small cases ---------------------------------------------------------

def test_avg_is_the_exact_sum_over_the_count_rounded_once():
    recs = [{"v": 0.1}, {"v": 0.2}, {"v": 0.3}, {"v": None}, {}, {"v": 2**60}, {"v": -(2**60)}]
    out, rej = agg(recs, [], a="avg(v)", s="sum(v)")
    assert rej == []
    exact = Fraction(0.1) + Fraction(0.2) + Fraction(0.3)
    assert out == [{"a": float(exact / 5), "s": float(exact)}]
    assert out[0]["a"] != (0.1 + 0.2 + 0.3) / 5  # naive float arithmetic is off by one ulp
    assert agg([{"v": 1}, {"v": 2}], [], a="avg(v)")[0] == [{"a": 1.5}]
    assert agg([{"v": 2}, {"v": 2}], [], a="avg(v)")[0] == [{"a": 2.0}]
    assert agg([{"v": -0.0}], [], a="avg(v)")[0][0]["a"] == -0.0
    assert math.copysign(1, agg([{"v": -0.0}], [], a="avg(v)")[0][0]["a"]) == -1
    assert agg([{"g": 1}], ["g"], a="avg(v)")[0] == [{"g": 1, "a": None}]
    assert agg([{"v": 10**400}, {"v": 1}], [], a="avg(v)")[0] == [{"a": None}]  # beyond doubles


def test_first_and_last_are_in_file_order_and_skip_missing_values():
    recs = [{"g": "a"}, {"g": "a", "w": None}, {"g": "a", "w": {"z": 1, "a": [2]}},
            {"g": "b", "w": 3}, {"g": "a", "w": "mid"}, {"g": "a", "w": [1]}, {"g": "a"}]
    out, _ = agg(recs, ["g"], 2, f="first(w)", l="last(w)")
    assert out == [{"g": "a", "f": {"z": 1, "a": [2]}, "l": [1]}, {"g": "b", "f": 3, "l": 3}]
    assert agg([{"g": 1}], ["g"], f="first(w)")[0] == [{"g": 1, "f": None}]


def test_top_counts_values_most_frequent_first_ties_in_value_order():
    recs = [{"p": p} for p in ["/b", "/a", "/b", 10, 9, "/c", 10, 9, 10.0, True, None]] + [{}]
    out, _ = agg(recs, [], t="top(p, 4)", all="top(p)")
    assert out[0]["t"] == [{"value": 9, "count": 2}, {"value": 10, "count": 2},
                           {"value": "/b", "count": 2}, {"value": True, "count": 1}]
    assert out[0]["all"] == [{"value": 9, "count": 2}, {"value": 10, "count": 2},
                             {"value": "/b", "count": 2}, {"value": True, "count": 1},
                             {"value": 10.0, "count": 1}, {"value": "/a", "count": 1},
                             {"value": "/c", "count": 1}]
    assert agg([{"g": 1}], ["g"], t="top(p, 2)")[0] == [{"g": 1, "t": []}]


def test_percentile_is_the_nearest_rank_like_duckdb_quantile_disc():
    duckdb = pytest.importorskip("duckdb")
    values = [15, 20, 35, 40, 50, 7, 3, 99, 1, 42]
    recs = [{"v": v} for v in values] + [{"v": None}, {}]
    for p in ("0", "10", "25", "33.3", "50", "90", "95", "99.99", "100"):
        got = agg(recs, [], q=f"percentile(v, {p})")[0][0]["q"]
        expected = duckdb.sql(f"SELECT quantile_disc(x, {p} / 100) FROM "
                              f"(SELECT unnest({values}) AS x)").fetchone()[0]
        assert got == expected and type(got) is int, p
    out = agg([{"v": 1}, {"v": 2.5}, {"v": 4}], [], q="percentile(v, 50)")[0]
    assert out == [{"q": 2.5}]
    assert agg([{"v": 1}, {"v": 3}], [], q="percentile(v, 50)")[0] == [{"q": 1}]
    assert agg([{"g": 1}], ["g"], q="percentile(v, 50)")[0] == [{"g": 1, "q": None}]


@pytest.mark.parametrize("order", [[0.0, -0.0, 0.0, -0.0], [-0.0, 0.0, -0.0, 0.0]])
def test_percentile_ranks_minus_zero_before_zero_in_any_order(order, tmp_path):
    recs = [{"v": v} for v in order]
    metrics = {"lo": "percentile(v, 0)", "mid": "percentile(v, 50)", "hi": "percentile(v, 75)",
               "top": "percentile(v, 100)"}
    for out in (agg(recs, [], 1, **metrics)[0][0],
                in_tasks(recs, [], metrics, tmp_path, 4, 2, 1)[0]):  # merged one by one
        assert [math.copysign(1, out[k]) for k in metrics] == [-1, -1, 1, 1]


def test_approx_count_distinct_is_exact_up_to_1024_values():
    recs = [{"v": v} for v in [1, 1.0, "1", True, None, [1], {"a": 1}, 1]] + [{}]
    assert agg(recs, [], a="approx_count_distinct(v)", d="count_distinct(v)")[0] == [
        {"a": 6, "d": 6}]
    recs = [{"v": f"user{i % 1024}"} for i in range(3000)]
    assert agg(recs, [], 100, a="approx_count_distinct(v)")[0] == [{"a": 1024}]
    assert agg([{"g": 1}], ["g"], a="approx_count_distinct(v)")[0] == [{"g": 1, "a": 0}]


@pytest.mark.parametrize("func", ["avg", "percentile"])
def test_avg_and_percentile_reject_what_is_not_a_number(func):
    spec = f"{func}(v)" if func == "avg" else "percentile(v, 50)"
    recs = [{"v": 1}, {"v": "2"}, {"v": True}, {"v": [3]}, {"v": 5}]
    out, rej = agg(recs, [], n="count", m=spec)
    assert out == [{"n": 2, "m": 3.0 if func == "avg" else 1}]
    assert rej == [(b'{"v":"2"}', f"field 'v': {func}(v) needs a number, got '2'"),
                   (b'{"v":true}', f"field 'v': {func}(v) needs a number, got true"),
                   (b'{"v":[3]}', f"field 'v': {func}(v) needs a number, got [3]")]


# -- against the reference, however the input is split -------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_every_new_metric_equals_the_reference_however_split(seed, tmp_path):
    records = mixed_records(seed, 5000)
    expected = reference(records)
    assert max(g["n"] for g in expected) <= sketches.EXACT_MAX  # exact percentiles
    assert any(g["first_w"] is not None and g["first_w"] != g["last_w"] for g in expected)
    assert any(len({t["count"] for t in g["top"]}) < 3 for g in expected)  # ties decided
    assert agg(records, ["site"], 5000, **METRICS)[0] == expected
    assert agg(records, ["site"], 13, **METRICS)[0] == expected
    for tasks, nbuckets, batch in [(2, 3, 250), (5, 64, 77), (3, 300, 1000)]:
        got = in_tasks(records, ["site"], METRICS, tmp_path, tasks, nbuckets, batch)
        assert got == expected, (tasks, nbuckets, batch)


def test_large_groups_stay_within_the_stated_error_and_split_the_same(tmp_path):
    """Beyond 1,024 values a percentile is within 1% and a distinct count a HyperLogLog
    estimate; both are the same to the last bit however the records were split."""
    rng = random.Random(7)
    records = [{"g": i % 2, "lat": round(rng.lognormvariate(3, 1.2), 3) if i % 7 else
                rng.randint(1, 5000), "u": f"user{rng.randint(0, 40000)}"} for i in range(60000)]
    metrics = {"n": "count", "p50": "percentile(lat, 50)", "p95": "percentile(lat, 95)",
               "p100": "percentile(lat, 100)", "users": "approx_count_distinct(u)",
               "exact": "count_distinct(u)"}
    whole = agg(records, ["g"], 60000, **metrics)[0]
    assert agg(records, ["g"], 999, **metrics)[0] == whole
    assert in_tasks(records, ["g"], metrics, tmp_path, 4, 7, 3000) == whole
    for group in whole:
        lats = [r["lat"] for r in records if r["g"] == group["g"]]
        for p in (50, 95, 100):
            exact = ref_percentile(lats, p)
            assert abs(group[f"p{p}"] / exact - 1) <= sketches.ALPHA, (p, exact)
        assert group["p100"] == max(lats)
        assert group["exact"] > 20000
        assert abs(group["users"] / group["exact"] - 1) < 0.05  # 3 standard errors


def write_log(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("workers,squeeze_kb", [(1, None), (2, None), (1, "16"), (2, "16")])
def test_through_main_with_workers_and_tiny_buckets(tmp_path, workers, squeeze_kb):
    records = mixed_records(11, 4000, sites=25)
    write_log(tmp_path / "in.jsonl", records)
    cfg = tmp_path / "p.yaml"
    metrics = "".join(f"        {k}: {json.dumps(v)}\n" for k, v in METRICS.items())
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n"
                   "  - json-decode: {schema: object}\n"
                   f"  - aggregate:\n      by: [site]\n      metrics:\n{metrics}"
                   "  - jsonl-output: {path: '-'}\n")
    env = {"SLUICE_TEST_BUCKET_KB": squeeze_kb} if squeeze_kb else {}
    p = cli("-c", str(cfg), "-f", str(tmp_path / "in.jsonl"), "-w", str(workers),
            "--memory-mb", "1024", "--state-dir", str(tmp_path / "s"), "-q", env=env)
    assert p.returncode == 0, p.stderr
    assert [json.loads(x) for x in p.stdout.splitlines()] == reference(records)


@pytest.mark.parametrize("workers", [1, 2])
def test_first_and_last_after_dedupe_keep_file_order(tmp_path, workers):
    """After dedupe the records come from its buckets: with first() or last(),
    aggregate is not order-free, so the engine reads them merged in file order."""
    rng = random.Random(3)
    records = [{"id": rng.randint(0, 3000), "site": rng.randint(0, 9), "w": i}
               for i in range(8000)]
    firsts, seen = [], set()
    for r in records:
        if r["id"] not in seen:
            seen.add(r["id"])
            firsts.append(r)
    expected = []
    for site in range(10):
        ws = [r["w"] for r in firsts if r["site"] == site]
        expected.append({"site": site, "f": ws[0], "l": ws[-1]})
    write_log(tmp_path / "in.jsonl", records)
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n"
                   "  - json-decode: {schema: object}\n  - dedupe: {field: id}\n"
                   "  - aggregate: {by: [site], metrics: {f: first(w), l: last(w)}}\n"
                   "  - jsonl-output: {path: '-'}\n")
    p = cli("-c", str(cfg), "-f", str(tmp_path / "in.jsonl"), "-w", str(workers),
            "--memory-mb", "1024", "--state-dir", str(tmp_path / "s"), "-q",
            env={"SLUICE_TEST_BUCKET_KB": "16"})
    assert p.returncode == 0, p.stderr
    assert [json.loads(x) for x in p.stdout.splitlines()] == expected


def test_only_first_and_last_make_aggregate_depend_on_order():
    from stages.aggregate import Aggregate
    assert Aggregate.is_order_free({"by": [], "metrics": {"a": "avg(x)", "t": "top(x)"}})
    assert not Aggregate.is_order_free({"by": [], "metrics": {"a": "last(x)"}})
    assert not Aggregate.is_order_free({"by": [], "metrics": {"a": "first(x)"}})


def test_rejects_of_avg_and_percentile_reach_the_dead_letter_file(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"
                   "  - aggregate: {by: [g], metrics: {a: avg(v), p: 'percentile(v, 90)'}}\n"
                   "  - jsonl-output: {path: '-'}\n")
    (tmp_path / "in.jsonl").write_text('{"g":"a","v":1}\n{"g":"a","v":"-"}\n{"g":"a","v":4}\n')
    p = cli("-c", str(cfg), "-f", str(tmp_path / "in.jsonl"), "--state-dir",
            str(tmp_path / "s"), "-w", "1")
    assert p.returncode == 0, p.stderr
    assert p.stdout == '{"g":"a","a":2.5,"p":4}\n'
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text().splitlines()]
    assert dead == [{"line": 2, "offset": 16, "stage": "aggregate",
                     "reason": "field 'v': avg(v) needs a number, got '-'",
                     "raw": '{"g":"a","v":"-"}'}]


# -- the sketches on their own -------------------------------------------------------------

def test_quantile_state_merges_the_same_in_any_order():
    rng = random.Random(1)
    values = [rng.expovariate(0.01) * rng.choice([1, -1, 0]) for _ in range(5000)]
    import numpy as np
    pieces = [values[i:i + 700] for i in range(0, 5000, 700)]
    states = [sketches.quantile_state(np.array(p), False) for p in pieces]
    forward, backward = states[0], sketches.quantile_state(np.array(pieces[-1]), False)
    for s in states[1:]:
        sketches.merge_quantiles(forward, s)
    for p in reversed(pieces[:-1]):
        sketches.merge_quantiles(backward, sketches.quantile_state(np.array(p), False))
    for p in (Fraction(1), Fraction(25), Fraction(50), Fraction(999, 10)):
        got = sketches.quantile(forward, p)
        assert got == sketches.quantile(backward, p)
        exact = ref_percentile(values, p)
        assert abs(got - exact) <= sketches.ALPHA * abs(exact), p


def test_hyperloglog_is_unbiased_within_its_standard_error():
    errors = []
    for seed in range(20):
        texts = {f'"visitor{seed}-{i}"'.encode() for i in range(5000)}
        errors.append(sketches.distinct_estimate(sketches.distinct_state(texts)) / 5000 - 1)
    mean = sum(errors) / len(errors)
    assert abs(mean) < 0.01 and max(map(abs, errors)) < 0.06


def test_the_percentile_measurement_script_runs_small():
    import subprocess
    import sys
    from conftest import ROOT
    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "percentile_choice.py"),
                        "--values", "20000", "--pieces", "5"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "the same from 5 pieces in two orders: True" in p.stdout
    errors = [float(line.split("error ")[1].split("%")[0]) for line in p.stdout.splitlines()
              if "error " in line]
    assert len(errors) == 3 and all(abs(e) <= 1.0 for e in errors)
