"""Every registered stage: straight through == snapshot/restore at every batch boundary.

A new stage needs a sample below; the test fails until it has one.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import main
from pipeline import Batch, Processor, Role
from pipeline.keyed import reduce_buckets, result_batches
from pipeline.testing import Context, ResumeMismatch, check_resume
from stages.file_input import FileInput
from stages.date import Date
from stages.dissect import Dissect
from stages.grok import Grok
from stages.json_decode import JsonDecode
from stages.kv import Kv
from stages.aggregate import Aggregate
from stages.count import Count
from stages.csv_output import CsvOutput
from stages.dedupe import Dedupe
from stages.jsonl_output import JsonlOutput
from stages.parquet_output import ParquetOutput
from stages.mutate import Mutate
from stages.site_state_reducer import SiteStateReducer
from stages.route import Route, RouteBranch
from stages.where import Where
from conftest import generate

REGISTRY = main.build_registry()


Ctx = Context


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "log.jsonl"
    return generate(path, 600, 11, "--mixed-site-ids", "--bad-rate", "0.05",
                    "--conflicting-dups", "--sites", "7")


def raw_batches(log):
    return list(FileInput(path=str(log), block_size=4096).read())


def decoded_batches(log):
    dec = JsonDecode()
    dec.open(Ctx())
    return list(dec.process(iter(raw_batches(log))))


def decoded_object_batches(log):
    dec = JsonDecode(schema="object")
    dec.open(Ctx())
    return list(dec.process(iter(raw_batches(log))))


def file_output(cls, **opts):
    def sample(log):
        path = log.parent / f"out-{cls.name}"
        return ("output", lambda: cls(path=str(path), **opts), decoded_batches(log), path)
    return sample


ROUTE = {"if": {"a": "site_id = '76'", "b": "type = 'status'"}, "mode": "all",
         "default": True}


def routed(log):
    route, ctx = Route(**ROUTE), Ctx()
    route.open(ctx)
    return list(route.process(iter(decoded_batches(log))))


SAMPLES = {
    "file-input": lambda log: ("input", lambda: FileInput(path=str(log), block_size=4096)),
    "json-decode": lambda log: ("processor", JsonDecode, raw_batches(log)),
    "date": lambda log: ("processor", lambda: Date(
        field="timestamp", formats=["epoch"], target="at", on_failure="keep", **{"as": "iso"}),
        decoded_object_batches(log)),
    "kv": lambda log: ("processor", lambda: Kv(field_split=",", value_split=":",
                                               on_failure="keep"), raw_batches(log)),
    "dissect": lambda log: ("processor", lambda: Dissect(
        pattern='{"id":"%{id}","from":"%{from}"%{?rest}', on_failure="drop"), raw_batches(log)),
    "grok": lambda log: ("processor", lambda: Grok(
        match=['"from":"%{DATA:from}".*"timestamp":%{NUMBER:ts:float}', '"id":"%{UUID:id}"'],
        on_failure="keep"), raw_batches(log)),
    "where": lambda log: ("processor", lambda: Where(field="site_id", **{"in": ["76", "dc"]}),
                          decoded_batches(log)),
    "dedupe": lambda log: ("reducer", lambda: Dedupe(field="id"), decoded_batches(log)),
    "site-state-reducer": lambda log: ("reducer", SiteStateReducer, decoded_batches(log)),
    "count": lambda log: ("reducer", lambda: Count(field="from"), decoded_batches(log)),
    "mutate": lambda log: ("processor", lambda: Mutate(
        rename={"from": "sender"}, remove=["id"], set={"meta.seen": True},
        copy={"timestamp": "meta.ts"}, convert={"site_id": "int"}), decoded_batches(log)),
    "aggregate": lambda log: ("reducer", lambda: Aggregate(
        by=["site_id", "type"], metrics={"n": "count", "senders": "count_distinct(from)",
                                         "first": "min(timestamp)", "last": "max(timestamp)",
                                         "total": "sum(timestamp)", "mean": "avg(timestamp)",
                                         "earliest": "first(from)", "latest": "last(from)",
                                         "top": "top(from, 3)", "p90": "percentile(timestamp, 90)",
                                         "approx": "approx_count_distinct(from)"}),
        decoded_batches(log)),
    "jsonl-output": file_output(JsonlOutput),
    "csv-output": file_output(CsvOutput, columns=["id", "from", "timestamp"]),
    "parquet-output": file_output(ParquetOutput, columns={
        "id": "auto", "from": "string", "timestamp": "float", "type": "auto", "site_id": "json"},
                                  row_group_rows=7),
    "route": lambda log: ("processor", lambda: Route(**ROUTE), decoded_batches(log)),
    "routed": lambda log: ("processor", lambda: RouteBranch(branch=1), routed(log)),
    # run once at the end and hold no state between batches:
    "sorted-stdout-output": None,
    "summary-json-output": None,
    # its state is in its database (rows committed, by job): tests/test_sqlite_output.py
    # kills runs at random and checks the tables row for row
    "sqlite-output": None,
    "postgres-output": None,  # the same, tests/test_postgres_output.py
}


@pytest.mark.parametrize("name", REGISTRY.names())
def test_snapshot_restore_at_every_batch_boundary(name, log, tmp_path):
    """Restoring a snapshot at any batch boundary gives the same output and counters
    (pipeline.testing.check_resume, the check plugin authors run too)."""
    assert name in SAMPLES, f"add a sample for stage {name!r} to SAMPLES"
    sample = SAMPLES[name]
    if sample is None:
        assert REGISTRY.get(name).role is Role.OUTPUT
        return
    kind, make, *rest = sample(log)
    out = check_resume(make, rest[0] if rest else None, tmp_path)
    if kind == "input":
        assert len(list(make().read())) > 3
    elif kind == "output":
        if name == "parquet-output":  # the same rows, in the same bytes at every cut
            rows = pq.read_table(pa.BufferReader(out.records)).num_rows
            assert rows == sum(map(len, rest[0]))
        else:
            assert out.records.count(b"\n") >= sum(map(len, rest[0]))
    else:
        assert out.rejected or name != "json-decode", "the sample should exercise rejects"
        assert sum(map(len, out.records)) > 0


def test_check_resume_finds_a_stage_that_forgets(log):
    """A processor whose snapshot forgets what it counted is caught, at batch 1."""
    class Forgetful(Processor):
        name = "forgetful"

        def __init__(self):
            super().__init__()
            self.seen = 0

        def process(self, batches):
            for batch in batches:
                self.seen += len(batch)
                yield batch

        def counters(self):
            return {"seen": self.seen}
    with pytest.raises(ResumeMismatch, match=r"stage 'forgetful': resumed after batch 1, "
                                             r"its counters differ from a straight run's"):
        check_resume(Forgetful, decoded_batches(log))


def reduce_tasks(reducer_cls, dirs, nbuckets):
    """What the engine does after the map tasks: every phase over every bucket."""
    stage = reducer_cls()
    stage.nbuckets = nbuckets
    out = dirs[0] + "-reduce"
    inputs = list(dirs)
    counters = {}
    for phase in range(stage.phases):
        counters.update(reduce_buckets(stage, phase, range(nbuckets), inputs, f"{out}{phase}",
                                       memory_bytes=64 << 20))
        inputs.append(f"{out}{phase}")
    return [r for b in result_batches(stage, inputs[-1:], nbuckets) for r in b], counters


@pytest.mark.parametrize("reducer_cls", [SiteStateReducer, lambda: Count(field="from"),
                                         lambda: Dedupe(field="id")])
@pytest.mark.parametrize("target", [10**9, 20000, 7000, 3000])
def test_map_tasks_then_reduce_equals_one_pass(log, tmp_path, reducer_cls, target):
    """Map tasks over newline-aligned ranges, then the reduce phases, equal one pass."""
    whole = reducer_cls()
    for b in decoded_batches(log):
        whole.update(b)
    expected = [r for b in whole.finish() for r in b]
    source = FileInput(path=str(log), block_size=1024)
    ranges, _ = source.ranges(target)
    dirs = []
    for i, where in enumerate(ranges):
        dec, red = JsonDecode(), reducer_cls()
        dec.open(Ctx())
        red.configure(str(tmp_path / f"m{i}"), nbuckets=4, task=i)
        for b in dec.process(source.part(where).read()):
            red.update(b)
        red.snapshot()  # the engine's end of a map task
        red.spill.close()
        dirs.append(str(tmp_path / f"m{i}"))
    got, counters = reduce_tasks(reducer_cls, dirs, 4)
    assert got == expected
    assert counters.get("duplicates", 0) == whole.counters().get("duplicates", 0)


def test_empty_map_tasks_reduce_as_identities(log, tmp_path):
    """Map tasks that saw no records, before and after, change nothing."""
    whole = SiteStateReducer()
    for b in decoded_batches(log):
        whole.update(b)
    expected = [r for b in whole.finish() for r in b]
    dirs = []
    for i, batches in enumerate(([], decoded_batches(log), [])):
        red = SiteStateReducer()
        red.configure(str(tmp_path / f"m{i}"), nbuckets=2, task=i)
        for b in batches:
            red.update(b)
        red.snapshot()  # the engine's end of a map task
        dirs.append(str(tmp_path / f"m{i}"))
    assert reduce_tasks(SiteStateReducer, dirs, 2)[0] == expected


def test_reducer_result_shape():
    """The reducer emits (site, messages, emails, operators, visitors) tuples."""
    red = SiteStateReducer()
    assert list(red.finish()) == [Batch()]
