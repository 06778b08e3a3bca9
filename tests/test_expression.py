"""Expressions (stages/expression.py) in `where: {if: ...}` and `mutate: {compute: ...}`:
each operator and function of the README's table, the rules for missing, null and mixed
types (against a plain-Python reference, through whole runs with 1 and 2 workers),
errors with file:line:column, safety, rejects and resume."""
from __future__ import annotations

import datetime
import json
import random
import re
from pathlib import Path

import pytest

from conftest import ROOT, cli
from pipeline import Batch
from pipeline.columns import Columns
from pipeline.errors import SluiceError
from pipeline.testing import check_resume
from stages import expression
from stages.expression import FUNCTIONS, OPERATORS, ExpressionError, connection, parse
from stages.mutate import Mutate
from stages.where import Where


def value(text, record):
    """The expression's value for one record, the same on records and on columns;
    ('rejected', reason) where it cannot be computed."""
    got = []
    for batch in (Batch([record]), Columns.from_records([record])):
        out = parse(text).evaluate(batch)
        if out.failed:
            got.append(("rejected", out.failed[0]))
        else:
            got.append(out.values[0] if isinstance(out.values, list) else
                       out.values.to_pylist()[0])
    assert got[0] == got[1], (text, record, got)
    return got[0]


# -- the README's table: every operator and function, one row each -------------------
ROWS = [
    # operators
    ("a + b", {"a": 2, "b": 3}, 5),
    ("a - b", {"a": 2, "b": 3}, -1),
    ("a * b", {"a": 2, "b": 3.5}, 7.0),
    ("a / b", {"a": 7, "b": 2}, 3.5),
    ("a // b", {"a": 7, "b": 2}, 3),
    ("a % b", {"a": 7, "b": 3}, 1),
    ("a ** b", {"a": 2, "b": 10}, 1024.0),
    ("a ^ b", {"a": 2, "b": 3}, 8.0),
    ("-a", {"a": 2}, -2),
    ("s || t", {"s": "ab", "t": "cd"}, "abcd"),
    ("a = b", {"a": 1, "b": 1.0}, True),
    ("a <> b", {"a": 1, "b": 2}, True),
    ("a != b", {"a": 1, "b": 1}, False),
    ("a < b", {"a": 1, "b": 2}, True),
    ("a <= b", {"a": 2, "b": 2}, True),
    ("a > b", {"a": 1, "b": 2}, False),
    ("a >= b", {"a": 2, "b": 2}, True),
    ("a AND b", {"a": True, "b": None}, None),
    ("a OR b", {"a": True, "b": None}, True),
    ("NOT a", {"a": False}, True),
    ("a IS NULL", {}, True),
    ("a IS NOT NULL", {"a": None}, False),
    ("a IS DISTINCT FROM b", {"a": 1}, True),
    ("a IN (1, 2)", {"a": 2}, True),
    ("a NOT IN ('x', 'y')", {"a": "z"}, True),
    ("a BETWEEN 1 AND 5", {"a": 5}, True),
    ("s LIKE 'ab%'", {"s": "abc"}, True),
    ("s NOT LIKE 'ab%'", {"s": "abc"}, False),
    ("s ILIKE 'AB%'", {"s": "abc"}, True),
    ("s NOT ILIKE 'AB%'", {"s": "abc"}, False),
    ("s SIMILAR TO 'a.c'", {"s": "abc"}, True),
    ("CASE WHEN a > 1 THEN 'big' ELSE 'small' END", {"a": 2}, "big"),
    ("CAST(s AS BIGINT) + 1", {"s": "41"}, 42),
    ("s::DOUBLE", {"s": "1.5"}, 1.5),
    ("TRY_CAST(s AS BIGINT)", {"s": "x"}, None),
    ("TRY(CAST(s AS BIGINT))", {"s": "x"}, None),
    ("coalesce(a, b, 0)", {"b": 7}, 7),
    ("ifnull(a, 'none')", {}, "none"),
    ("if(a > 1, 'yes', 'no')", {"a": 0}, "no"),
    ("data.status = 'online'", {"data": {"status": "online"}}, True),
    ("\"odd-name\" + 1", {"odd-name": 1}, 2),
    # functions
    ("lower(s)", {"s": "ÀBC"}, "àbc"),
    ("upper(s)", {"s": "abc"}, "ABC"),
    ("length(s)", {"s": "héllo😀"}, 6),
    ("trim(s)", {"s": "  x  "}, "x"),
    ("ltrim(s, '-')", {"s": "--x--"}, "x--"),
    ("rtrim(s)", {"s": "  x  "}, "  x"),
    ("concat(s, '-', a)", {"s": "x", "a": None}, "x-"),
    ("concat_ws('/', s, a, t)", {"s": "x", "t": "z"}, "x/z"),
    ("substr(s, 2, 3)", {"s": "abcdef"}, "bcd"),
    ("replace(s, 'a', 'o')", {"s": "banana"}, "bonono"),
    ("starts_with(s, '/api')", {"s": "/api/v1"}, True),
    ("ends_with(s, '.json')", {"s": "a.json"}, True),
    ("contains(s, 'err')", {"s": "an error"}, True),
    ("strpos(s, 'c')", {"s": "abc"}, 3),
    ("left(s, 2)", {"s": "abc"}, "ab"),
    ("right(s, 2)", {"s": "abc"}, "bc"),
    ("split_part(s, '/', 2)", {"s": "a/b/c"}, "b"),
    ("regexp_matches(s, '^[0-9]+$')", {"s": "123"}, True),
    ("regexp_full_match(s, '[a-c]+')", {"s": "abcd"}, False),
    ("regexp_extract(s, '([0-9]+)ms', 1)", {"s": "took 35ms"}, "35"),
    ("regexp_replace(s, '[0-9]', '#', 'g')", {"s": "a1b22"}, "a#b##"),
    ("nullif(s, '-')", {"s": "-"}, None),
    ("abs(a)", {"a": -3}, 3),
    ("round(a, 1)", {"a": 2.25}, 2.3),
    ("floor(a)", {"a": 2.7}, 2.0),
    ("ceil(a)", {"a": 2.1}, 3.0),
    ("sign(a)", {"a": -0.5}, -1),
    ("sqrt(a)", {"a": 16}, 4.0),
    ("ln(a)", {"a": 1}, 0.0),
    ("log10(a)", {"a": 1000}, 3.0),
    ("pow(a, 2)", {"a": 3}, 9.0),
    ("greatest(a, b, c)", {"a": 1, "b": 5, "c": None}, 5),
    ("least(a, b)", {"a": 1, "b": 5}, 1),
]


@pytest.mark.parametrize("text,record,expected", ROWS, ids=[r[0] for r in ROWS])
def test_each_row_of_the_table(text, record, expected):
    got = value(text, record)
    assert got == expected and type(got) is type(expected), (got, expected)


def test_the_table_covers_every_function_and_operator_and_the_readme_lists_them():
    used = " ".join(r[0] for r in ROWS)
    assert [f for f in FUNCTIONS if not re.search(rf"\b{f}\(", used)] == []
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Expressions"):]
    section = section[:section.index("\n## ", 3)]
    functions = section[section.index("| function | value |"):]
    listed = set(re.findall(r"^\| `([a-z_0-9]+)\(", functions, re.M))
    assert listed == set(FUNCTIONS)
    for op in OPERATORS - {"regexp_full_match", "~~", "!~~", "~~*", "!~~*"}:
        assert f"`{op}`" in section, op
    for word in ("LIKE", "ILIKE", "SIMILAR TO", "IS NULL", "IS DISTINCT FROM", "BETWEEN",
                 "IN (", "CASE", "CAST", "TRY_CAST", "TRY(", "coalesce", "ifnull", "if("):
        assert word in section, word


# -- the rules for values --------------------------------------------------------------
@pytest.mark.parametrize("record,expected", [
    ({"a": 5}, 6), ({"a": 5.5}, 6.5), ({"a": 2 ** 70}, None), ({}, None), ({"a": None}, None),
])
def test_missing_and_null_are_null_and_types_are_kept(record, expected):
    got = value("a + 1", record)
    if record.get("a") == 2 ** 70:  # beyond 64 bits: DECIMAL(38,0), exactly
        assert int(got) == 2 ** 70 + 1
    else:
        assert got == expected and type(got) is type(expected)


def test_a_record_is_judged_on_its_own_values_whatever_its_batch_holds():
    records = [{"s": 600}, {"s": "-"}, {"s": 400.5}, {}, {"s": None}, {"s": True},
               {"s": [1]}, {"s": {"x": 1}}, {"s": 2 ** 64}]
    alone = [value("s >= 500", r) for r in records]
    for batch in (Batch(records), Columns.from_records(records)):
        out = parse("s >= 500").evaluate(batch)
        together = [("rejected", out.failed[i]) if i in out.failed else
                    (out.values[i] if isinstance(out.values, list) else
                     out.values.to_pylist()[i]) for i in range(len(records))]
        assert together == alone
    assert alone[:5] == [True, ("rejected", "Cannot compare values of type VARCHAR and "
                                            "type INTEGER_LITERAL - an explicit cast is "
                                            "required"), False, None, None]


def test_a_value_error_rejects_only_the_records_it_is_in():
    records = [{"s": str(i)} for i in range(100)]
    records[37] = {"s": "x"}
    records[80] = {"s": "9" * 30}
    out = parse("CAST(s AS BIGINT) * 2").evaluate(Batch(records))
    assert out.failed == {
        37: "Could not convert string 'x' to INT64 when casting from source column s",
        80: "Could not convert string '999999999999999999999999999999' to INT64 when "
            "casting from source column s"}
    got = out.values.to_pylist()
    assert [v for i, v in enumerate(got) if i not in (37, 80)] == \
        [2 * i for i in range(100) if i not in (37, 80)]


def test_many_value_errors_in_a_batch_stop_the_run_with_a_hint(monkeypatch):
    monkeypatch.setattr(expression, "MAX_ISOLATING", 8)
    with pytest.raises(SluiceError, match=r"the expression `CAST\(s AS BIGINT\)` fails for "
                                          r"many records of one batch .*TRY_CAST"):
        parse("CAST(s AS BIGINT)").evaluate(Batch([{"s": "x"}] * 50))


# -- safety and load-time checks --------------------------------------------------------
@pytest.mark.parametrize("text,message,offset", [
    ("read_csv('/etc/passwd')", "unknown function 'read_csv' (the README's \"Expressions\" "
                                "lists the functions)", 0),
    ("getenv('HOME') = 'x'", "unknown function 'getenv' (the README's \"Expressions\" lists "
                             "the functions)", 0),
    ("current_setting('threads')", "unknown function 'current_setting' (the README's "
                                   "\"Expressions\" lists the functions)", 0),
    ("a IN (SELECT 1)", "a subquery is not allowed in an expression", 2),
    ("list_transform(a, x -> x + 1)", "unknown function 'list_transform' (the README's "
                                      "\"Expressions\" lists the functions)", 0),
    ("sum(a) OVER ()", "a window function is not allowed in an expression", 0),
    ("1 FROM t", "must be one expression, not a query (no FROM, WHERE, GROUP BY, ORDER BY "
                 "or LIMIT)", None),
    ("1; DROP TABLE t", "must be one expression, not SQL statements", None),
    ("a, b", "must be one expression; got 2 separated by commas", 3),
    ("a AS b", "takes no alias (AS ...): the field it goes to is named in the config", 0),
    ("lowr(a)", "unknown function 'lowr' (did you mean 'lower'?) (the README's "
                "\"Expressions\" lists the functions)", 0),
    ("lower(a, b)", "function lower() takes 1 argument; got 2", 0),
    ("substr(a)", "function substr() takes 2 to 3 arguments; got 1", 0),
    ("a >", "syntax error at end of input", 3),
    ("a ==", "'==' is missing a value on one side", 2),
    ("", "must be a non-empty SQL expression; got ''", None),
])
def test_what_is_refused_at_load(text, message, offset):
    with pytest.raises(ExpressionError) as exc:
        parse(text)
    assert (str(exc.value), exc.value.offset) == (message, offset)


def test_the_database_cannot_reach_outside():
    con = connection()
    assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == \
        (False,)
    with pytest.raises(Exception, match="lock_configuration|locked"):
        con.execute("SET enable_external_access = true")


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


HEAD = "pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"
TAIL = "  - jsonl-output: {path: '-'}\n"


@pytest.mark.parametrize("stage,where,message", [
    ("  - where: {if: \"status >= 500 AND lowr(path) = 'x'\"}\n", "4:36",
     "stage 'where': option 'if' is not a valid expression: unknown function 'lowr' (did "
     "you mean 'lower'?) (the README's \"Expressions\" lists the functions), at column 19 "
     "of `status >= 500 AND lowr(path) = 'x'`"),
    ("  - where:\n      if: status >\n", "5:19",
     "stage 'where': option 'if' is not a valid expression: syntax error at end of input, "
     "at column 9 of `status >`"),
    ("  - where:\n      if: |\n        status >= 500\n          OR foo(x)\n", "7:14",
     "stage 'where': option 'if' is not a valid expression: unknown function 'foo' (did "
     "you mean 'floor'?) (the README's \"Expressions\" lists the functions), in `status "
     ">= 500 OR foo(x)`"),
    ("  - mutate:\n      compute:\n        a: \"1\"\n        b: 'x + (SELECT 1)'\n", "7:17",
     "stage 'mutate': option 'compute' is not a valid expression: 'b': a subquery is not "
     "allowed in an expression, at column 5 of `x + (SELECT 1)`"),
    ("  - where: {if: 'a', field: b}\n", "4",
     "stage 'where': `field` goes with `equals` or `in`; an `if` condition names its "
     "fields itself"),
    ("  - where: {equals: 1}\n", "4", "stage 'where': `equals` needs `field`, the field to "
                                      "test"),
])
def test_validate_names_file_line_and_column(tmp_path, stage, where, message):
    cfg = write(tmp_path, "p.yaml", HEAD + stage + TAIL)
    p = cli("validate", "-c", cfg)
    assert (p.returncode, p.stderr) == (2, f"sluice: error: {cfg}:{where}: {message}\n")


def test_a_field_a_known_schema_lacks_is_a_config_error(tmp_path):
    cfg = write(tmp_path, "p.yaml", HEAD.replace("object", "site-event")
                + "  - where: {if: \"data.status = 'x' AND sites = 1\"}\n" + TAIL)
    p = cli("validate", "-c", cfg)
    assert p.returncode == 2
    assert p.stderr.startswith(f"sluice: error: {cfg}:4: stage 'where': field 'sites' "
                               f"(did you mean 'site_id'?) is not among")


# -- whole runs against a plain-Python reference ---------------------------------------
def mixed_records(n: int, seed: int) -> list[str]:
    """Lines of records whose fields are of every JSON type, missing or null."""
    rnd = random.Random(seed)
    statuses = [200, 404, 500, 503, 599, 99.5, 500.0, "500", "-", None, True, 2 ** 64,
                [500], {"code": 500}]
    paths = ["/api/v1", "/api", "/", "/API/x", "", None, 7]
    lines = []
    for i in range(n):
        r: dict = {"id": i}
        if rnd.random() < 0.9:
            r["status"] = rnd.choice(statuses)
        if rnd.random() < 0.9:
            r["path"] = rnd.choice(paths)
        r["ms"] = rnd.choice([1, 2.5, -3, 10 ** 6, "7", None])
        lines.append(json.dumps(r))
        if rnd.random() < 0.01:
            lines.append("{not json")
    return lines


def sql_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def ref_condition(r):
    """`status >= 500 AND starts_with(path, '/api')`, by hand: (value, failure)."""
    s, p = r.get("status"), r.get("path")
    if s is None:
        left = None
    elif sql_number(s):
        left = s >= 500
    elif isinstance(s, bool):  # BOOLEAN >= INTEGER compares the boolean as 0 or 1
        left = int(s) >= 500
    else:  # text, an array (its JSON text) or an object: not comparable with a number
        return None, ("Cannot compare values of type VARCHAR and type INTEGER_LITERAL - an "
                      "explicit cast is required" if not isinstance(s, dict) else "struct")
    if p is None:
        right = None
    elif isinstance(p, str):
        right = p.startswith("/api")
    else:
        return None, "number"
    if left is False or right is False:
        return False, None
    if left is None or right is None:
        return None, None
    return True, None


def run_1_and_2(tmp_path: Path, lines: list[str], stage: str) -> tuple[str, list[dict]]:
    """The output file and the dead-letter entries of a run of `stage` on `lines`, the
    same with 1 worker and with 2 (the input cut into two parts)."""
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cfg = write(tmp_path, "p.yaml", HEAD.replace("in.jsonl", str(data)) + stage +
                f"  - jsonl-output: {{path: {tmp_path}/out.jsonl}}\n")
    outs = []
    for workers in ("1", "2"):
        p = cli("-c", cfg, "--state-dir", str(tmp_path / f"s{workers}"), "-w", workers,
                "--fresh", "--memory-mb", "1024")  # room for 2 workers with DuckDB
        assert p.returncode == 0, p.stderr
        assert "fits 1 of 2" not in p.stderr
        assert bool(list((tmp_path / f"s{workers}").glob("*/plan.json"))) == (workers == "2")
        dead = [json.loads(x) for x in (tmp_path / f"s{workers}" / "dead_letter.jsonl")
                .read_text().splitlines()]
        outs.append(((tmp_path / "out.jsonl").read_text(), dead))
    assert outs[0] == outs[1]
    return outs[0]


def judged(lines: list[str], reference) -> list[tuple[int, dict, object, object]]:
    """(line number, record, value, failure) of the reference on each JSON line."""
    out = []
    for number, line in enumerate(lines, 1):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        out.append((number, r, *reference(r)))
    return out


def test_where_if_matches_the_reference_with_1_and_2_workers(tmp_path):
    lines = mixed_records(12000, 7)  # over 512 KiB: 2 workers run it in parts
    kept, dead = run_1_and_2(tmp_path, lines, "  - where: {if: \"status >= 500 AND "
                                              "starts_with(path, '/api')\"}\n")
    expect_kept, expect_failed = [], []
    for number, r, got, failure in judged(lines, ref_condition):
        if failure is not None:
            expect_failed.append(number)
        elif got:
            expect_kept.append(r["id"])
    assert [json.loads(x)["id"] for x in kept.splitlines()] == expect_kept
    failed = [d for d in dead if d["stage"] == "where"]
    assert [d["line"] for d in failed] == expect_failed
    assert all(d["reason"].startswith("condition `status >= 500 AND starts_with(path, "
                                      "'/api')`: ") for d in failed)
    assert len(expect_kept) > 50 and len(expect_failed) > 50


def ref_compute(r):
    """`mutate: compute: {kms: "ms / 1000", big: "status >= 500"}` on numbers, by hand."""
    ms = r.get("ms")
    if ms is None:
        return {**r, "kms": None}, None
    if isinstance(ms, str):
        return None, "No function matches"
    return {**r, "kms": ms / 1000}, None


def test_mutate_compute_matches_the_reference_with_1_and_2_workers(tmp_path):
    lines = mixed_records(12000, 11)
    out, dead = run_1_and_2(tmp_path, lines, "  - mutate: {compute: {kms: \"ms / 1000\"}}\n")
    expect, failed = [], []
    for number, _, got, failure in judged(lines, ref_compute):
        if failure:
            failed.append(number)
        else:
            expect.append(got)
    assert [json.loads(x) for x in out.splitlines()] == expect
    assert [d["line"] for d in dead if d["stage"] == "mutate"] == failed
    assert {d["reason"] for d in dead if d["stage"] == "mutate"} == {
        "compute 'kms': No function matches the given name and argument types "
        "'/(VARCHAR, INTEGER_LITERAL)'. You might need to add explicit type casts."}


# -- compute's values -------------------------------------------------------------------
def mutate(records, **options):
    class Ctx:
        rejected: list = []

        def reject(self, raw, reason, **where):
            self.rejected.append((json.loads(raw), reason))
    ctx = Ctx()
    ctx.rejected = []
    stage = Mutate(**options)
    stage.open(ctx)
    outs = []
    for batch in (Batch([dict(r) for r in records]), Columns.from_records(records)):
        out = list(stage.process(iter([batch])))[0]
        outs.append(out.records() if isinstance(out, Columns) else list(out))
    assert outs[0] == outs[1] and [list(r) for r in outs[0]] == [list(r) for r in outs[1]]
    return outs[0], ctx.rejected[:len(ctx.rejected) // 2]


@pytest.mark.parametrize("text,record,expected", [
    ("a // 10", {"a": 57}, 5),
    ("a / 2", {"a": 5}, 2.5),
    ("a * 1.5", {"a": 2}, 3.0),  # a DECIMAL with a fraction: a number
    ("CAST(a AS DECIMAL(20, 0))", {"a": 7}, 7),
    ("upper(s)", {"s": "x"}, "X"),
    ("s IS NULL", {}, True),
    ("s", {}, None),  # NULL: the field is set to JSON null
    ("CAST('2024-01-02' AS DATE)", {}, "2024-01-02"),
    ("CAST('2024-01-02 03:04:05' AS TIMESTAMP)", {}, "2024-01-02T03:04:05"),
    ("data", {"data": {"k": 1}}, {"k": 1}),
])
def test_compute_values_become_json(text, record, expected):
    out, rejected = mutate([record], compute={"v": text})
    assert rejected == []
    assert out[0]["v"] == expected and type(out[0]["v"]) is type(expected)


@pytest.mark.parametrize("text,reason", [
    ("1 / a", "compute 'v': the value is inf, which JSON cannot hold"),
    ("CAST(s AS BLOB)", "compute 'v': the value is binary (BLOB), which JSON cannot hold"),
])
def test_compute_values_json_cannot_hold_are_rejected(text, reason):
    out, rejected = mutate([{"a": 0, "s": "x"}, {"a": 1, "s": "y"}][:1], compute={"v": text})
    assert out == [] and rejected == [({"a": 0, "s": "x"}, reason)]


def test_compute_runs_last_in_order_and_sets_nested_fields():
    out, rejected = mutate([{"n": "x"}, {"n": "41", "d": {"x": 1}}, {"n": "1", "d": "text"}],
                           convert={"n": "int"},
                           compute={"m": "n + 1", "d.y": "m * 2", "z": "d.y"})
    assert out == [{"n": 41, "d": {"x": 1, "y": 84}, "m": 42, "z": 84}]
    assert rejected == [  # each as it came to the stage: a reject can be replayed
        ({"n": "x"}, "field 'n': cannot convert 'x' to int"),
        ({"n": "1", "d": "text"}, "compute 'd.y': cannot set it: 'd' is a string, not an "
                                  "object")]


def test_where_if_and_compute_resume_at_every_boundary(tmp_path):
    batches = [Batch([{"a": i, "s": str(i)} for i in range(k, k + 5)]) for k in (0, 5, 10)]
    batches[1][2] = {"a": "x"}
    out = check_resume(lambda: Where(**{"if": "a % 2 = 0"}), batches, tmp_path)
    assert [r["a"] for b in out.records for r in b] == [0, 2, 4, 6, 8, 10, 12, 14]
    assert [(raw, reason) for raw, reason, _ in out.rejected] == [
        (b'{"a":"x"}', "condition `a % 2 = 0`: No function matches the given name and "
                       "argument types '%(VARCHAR, INTEGER_LITERAL)'. You might need to add "
                       "explicit type casts.")]
    out = check_resume(lambda: Mutate(compute={"b": "a * 10"}), batches, tmp_path / "m")
    assert [r["b"] for b in out.records for r in b] == [10 * i for i in range(15) if i != 7]


def test_the_example_config_runs(tmp_path):
    p = cli("-c", str(ROOT / "configs" / "web_errors.yaml"), "-f",
            str(ROOT / "tests" / "data" / "web" / "access.jsonl"), "--state-dir",
            str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == (ROOT / "tests" / "data" / "web" / "errors.expected.jsonl").read_text()


def test_dates_render_as_iso_text():
    assert expression.json_value(datetime.date(2024, 1, 2)) == "2024-01-02"
