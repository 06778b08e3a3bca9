"""Stage contracts: what each stage accepts and produces is checked before anything runs."""
from __future__ import annotations

import itertools
import json

import pytest

import main
from conftest import ROOT, cli
from pipeline import ANY, ConfigError, Role
from pipeline.config import parse_config

REGISTRY = main.build_registry()
SAMPLE = (ROOT / "tests" / "data" / "sample" / "input.jsonl").read_bytes().split(b"\n")
SMALL = b"\n".join(SAMPLE[:400] + SAMPLE[-5:])  # some good lines, the broken ones too

VARIANTS = {  # the options each built-in is tried with
    "file-input": [{"path": "in.jsonl"}],
    "json-decode": [{"schema": "site-event"}, {"schema": "object"}],
    "grok": [{"match": "%{WORD:w}"}, {"field": "type", "match": "%{WORD:w}"}],
    "dissect": [{"pattern": "%{a}:%{b}"}],
    "date": [{"field": "timestamp", "formats": ["epoch"]}],
    "kv": [{"field_split": ",", "value_split": ":"}],
    "where": [{"field": "type", "equals": "status"}],
    "mutate": [{"rename": {"from": "sender"}, "convert": {"timestamp": "str"}}],
    "dedupe": [{"field": "id"}],
    "site-state-reducer": [{}],
    "count": [{"field": "type"}],
    "aggregate": [{"by": ["type"], "metrics": {"n": "count", "who": "count_distinct(from)"}}],
    "sorted-stdout-output": [{}],
    "summary-json-output": [{"path": "out.json"}],
    "jsonl-output": [{"path": "out.jsonl"}],
    "csv-output": [{"path": "out.csv", "columns": ["type", "site_id", "n"]}],
    "parquet-output": [{"path": "out.parquet", "columns": {"type": "json", "site_id": "json",
                                                           "n": "auto"}}],
    "sqlite-output": [{"path": "out.db", "table": "t", "columns": ["type", "site_id", "n"]}],
}
# postgres-output keeps sqlite-output's contract (both are stages/table_output.py): its
# pairs run once, with the records of every kind, in test_postgres_output.py
MAKES = {  # how to get records of each kind before the stage under test
    "lines": [],
    "site-event": [("json-decode", {"schema": "site-event"})],
    "object": [("json-decode", {"schema": "object"})],
    "summary-row": [("json-decode", {}), ("site-state-reducer", {})],
    "count-row": [("json-decode", {}), ("count", {"field": "type"})],
}


def pairs():
    """Every ordered pair of built-ins that may be neighbours, with options and the kind
    the first one is given."""
    out = []
    for a, b in itertools.product(REGISTRY.names(), repeat=2):
        ca, cb = REGISTRY.get(a), REGISTRY.get(b)
        if ca.role is Role.OUTPUT or cb.role is Role.INPUT:
            continue  # never neighbours: the wiring rules, not the contracts, say so
        if getattr(ca, "part_of_route", False) or getattr(cb, "part_of_route", False):
            continue  # made by `route` only (tests/test_route.py)
        given = [None] if ca.role is Role.INPUT else (
            list(MAKES) if ANY in ca.accepts else list(ca.accepts))
        if b not in VARIANTS:
            continue
        for oa, ob, kind in itertools.product(VARIANTS[a], VARIANTS[b], given):
            if kind is not None and ca.check_kind(oa, kind):
                continue  # a variant of the first stage for other records (grok's field)
            out.append(pytest.param(a, oa, b, ob, kind, id=f"{a}>{b}-{kind or ''}-"
                                                         f"{oa.get('schema', '')}"))
    return out


def config(a, oa, b, ob, kind):
    chain = [] if kind is None else [("file-input", {"path": "in.jsonl"})] + MAKES[kind]
    chain += [(a, oa), (b, ob)]
    if REGISTRY.get(b).role is not Role.OUTPUT:
        chain.append(("jsonl-output", {"path": "sink.jsonl"}))
    text = "pipeline:\n" + "".join(f"  - {name}: {json.dumps(opts)}\n" for name, opts in chain)
    b_line = 2 + len(chain) - 1 - (REGISTRY.get(b).role is not Role.OUTPUT)  # one a line
    return text, b_line


@pytest.mark.parametrize("a,oa,b,ob,kind", pairs())
def test_every_pair_of_neighbours_runs_or_is_refused_at_load(tmp_path, a, oa, b, ob, kind):
    """Allowed: it runs on a small input, exit 0. Refused: at load, naming both stages
    (by kind, or by a field the first one's records lack)."""
    text, b_line = config(a, oa, b, ob, kind)
    try:
        parse_config(text, "p.yaml", REGISTRY)
    except ConfigError as exc:
        by_kind = f"stage {b!r} accepts " in str(exc) and f"but {a!r}" in str(exc)
        by_field = f"stage {b!r}: " in str(exc) and \
            f"the fields of the records {a!r}" in str(exc)
        by_options = f"stage {b!r}: " in str(exc) and f"(from {a!r}" in str(exc)  # check_kind
        assert by_kind or by_field or by_options, str(exc)
        assert str(exc).startswith(f"p.yaml:{b_line}: "), text
        return
    (tmp_path / "in.jsonl").write_bytes(SMALL)
    (tmp_path / "p.yaml").write_text(text)
    p = cli("-c", "p.yaml", "--state-dir", "s", "-q", cwd=tmp_path)
    assert p.returncode == 0, text + p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("schema,message", [
    ("object", "stage 'site-state-reducer' accepts site-event records, but 'json-decode' "
               "(schema: object) produces object records"),
    (None, "stage 'site-state-reducer' accepts site-event records, but 'file-input' "
           "produces lines records"),
])
def test_the_two_reproductions_are_refused_before_reading(tmp_path, schema, message):
    """validate and a run both refuse them with exit 2 and one line; no input is read."""
    decode = f"  - json-decode: {{schema: {schema}}}\n" if schema else ""
    cfg = tmp_path / "x.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: missing.jsonl}\n" + decode +
                   "  - site-state-reducer: {}\n  - sorted-stdout-output: {}\n")
    line = 4 if schema else 3
    for args in (["validate", "-c", str(cfg)], ["-c", str(cfg), "--state-dir", "s"]):
        p = cli(*args, cwd=tmp_path)
        assert p.returncode == 2
        assert p.stderr == f"sluice: error: {cfg}:{line}: {message}\n"
    assert not (tmp_path / "s").exists()


def test_a_fork_branch_is_checked_against_what_reaches_the_fork(tmp_path):
    """A branch's first stage must accept what the trunk produces; the error names it."""
    text = ("pipeline:\n  - file-input: {path: x}\n  - json-decode: {schema: object}\n"
            "  - fork:\n      a:\n        - jsonl-output: {path: a.jsonl}\n"
            "      b:\n        - site-state-reducer: {}\n        - sorted-stdout-output\n")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "f.yaml", REGISTRY)
    assert str(err.value) == ("f.yaml:8: fork branch 'b': stage 'site-state-reducer' accepts "
                              "site-event records, but 'json-decode' (schema: object) produces "
                              "object records")


def test_a_plugin_that_declares_nothing_is_any_to_any():
    """Stages without a contract accept and produce anything, so nothing is refused."""
    from pipeline import Processor

    class Loose(Processor):
        """Passes batches on.

            - loose: {}
        """
        name = "loose"

        def process(self, batches):
            yield from batches
    assert (Loose.accepts, Loose.produces) == (("any",), "any")
    reg = main.build_registry()
    reg.register(Loose, "test")
    cfg = parse_config("pipeline:\n  - file-input: {path: x}\n  - loose\n"
                       "  - site-state-reducer\n  - sorted-stdout-output\n", "l.yaml", reg)
    assert [s.name for s in cfg.stages][2] == "site-state-reducer"


def test_stages_name_shows_the_contract():
    """`main.py stages NAME` says what the stage accepts and produces."""
    p = cli("stages", "site-state-reducer")
    assert "accepts:  site-event records\nproduces: summary-row records\n" in p.stdout
    p = cli("stages", "where")
    assert "accepts:  object, site-event records\nproduces: the records it is given\n" in p.stdout


# -- what the stages after a stage read (Stage.reads, contracts.fields_needed) -------------
NEEDED = [
    ("  - dedupe: {field: id}\n  - count: {field: type}\n"
     "  - csv-output: {path: o.csv, columns: [type, count]}\n",
     {"dedupe": ("type",), "count": ("count", "type"), "json-decode": ("id", "type")}),
    ("  - dedupe: {field: id}\n  - where: {field: data.status, equals: online}\n"
     "  - aggregate: {by: [site_id], metrics: {n: count, who: count_distinct(from), "
     "t: max(timestamp)}}\n  - csv-output: {path: o.csv, columns: [site_id, n]}\n",
     {"dedupe": ("data", "from", "site_id", "timestamp"),
      "where": ("from", "site_id", "timestamp")}),
    # a sum rejects a record whole; jsonl-output and mutate may read anything
    ("  - dedupe: {field: id}\n  - aggregate: {by: [site_id], metrics: {s: sum(timestamp)}}\n"
     "  - csv-output: {path: o.csv, columns: [site_id, s]}\n", {"dedupe": None}),
    ("  - dedupe: {field: id}\n  - jsonl-output: {path: o.jsonl}\n", {"dedupe": None}),
    ("  - dedupe: {field: id}\n  - mutate: {remove: [data]}\n  - count: {field: type}\n"
     "  - csv-output: {path: o.csv, columns: [type, count]}\n", {"dedupe": None}),
    # a fork: what any branch reads
    ("  - dedupe: {field: id}\n  - fork:\n      a:\n        - count: {field: type}\n"
     "        - csv-output: {path: a.csv, columns: [type, count]}\n"
     "      b:\n        - csv-output: {path: b.csv, columns: [site_id]}\n",
     {"dedupe": ("site_id", "type")}),
]


@pytest.mark.parametrize("middle,want", NEEDED)
def test_fields_needed_after_each_stage(middle, want):
    text = ("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"
            + middle)
    cfg = parse_config(text, "x.yaml", REGISTRY)
    got = {s.name: s.needed for s in cfg.stages}
    assert {name: got[name] for name in want} == want
    assert cfg.stages[0].needed is None  # lines: json-decode reads them whole


def test_dedupe_spills_only_the_fields_read_after_it(tmp_path):
    """dedupe -> count by type: the run's state holds the types, not the messages; the
    count is the one a plain Python dedupe-and-count gives."""
    lines = [json.dumps({"id": f"i{k % 700}", "type": ["message", "status"][k % 3 == 0],
                         "data": {"message": "x" * 200}, "site_id": k % 5})
             for k in range(2000)]
    log = tmp_path / "in.jsonl"
    log.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: x}\n  - json-decode: {schema: object}\n"
                   "  - dedupe: {field: id}\n  - count: {field: type}\n"
                   "  - csv-output: {path: '-', columns: [type, count]}\n")
    p = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    first: dict[str, str] = {}
    for line in lines:
        rec = json.loads(line)
        first.setdefault(rec["id"], rec["type"])
    counts = {t: list(first.values()).count(t) for t in ("message", "status")}
    assert p.stdout == f"type,count\nmessage,{counts['message']}\nstatus,{counts['status']}\n"
    spilled = b"".join(f.read_bytes() for f in (tmp_path / "s").rglob("spill.dat"))
    assert spilled and b"x" * 200 not in spilled and b"message" in spilled


def test_dedupe_projection_keeps_each_records_own_order():
    from stages.dedupe import _project
    records = [{"a": 1, "b": 2, "c": 3}, {"c": 5, "a": None}, {"b": [1]}]
    assert _project(records, ("a", "c")) == [{"a": 1, "c": 3}, {"c": 5, "a": None}, {}]
    assert [list(r) for r in _project(records, ("a", "c"))] == [["a", "c"], ["c", "a"], []]
    assert _project(records, ("b",)) == [{"b": 2}, {}, {"b": [1]}]
    assert _project(records[:1], ("b",)) == [{"b": 2}]
    assert _project(records, ()) == [{}, {}, {}]
