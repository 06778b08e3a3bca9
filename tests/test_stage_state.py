"""Every registered stage: straight through == snapshot/restore at every batch boundary.

A new stage needs a sample below; the test fails until it has one.
"""
from __future__ import annotations

import pickle
import shutil

import pytest

import main
from pipeline import Batch, KeyedReducer, Role
from pipeline.keyed import reduce_buckets, result_batches
from stages.file_input import FileInput
from stages.json_decode import JsonDecode
from stages.aggregate import Aggregate
from stages.count import Count
from stages.csv_output import CsvOutput
from stages.dedupe import Dedupe
from stages.jsonl_output import JsonlOutput
from stages.mutate import Mutate
from stages.site_state_reducer import SiteStateReducer
from stages.where import Where
from conftest import generate

REGISTRY = main.build_registry()


class Ctx:
    def __init__(self):
        self.rejected = []

    def reject(self, raw, reason, **where):
        self.rejected.append((raw, reason, where))


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


def roundtrip(state):
    return pickle.loads(pickle.dumps(state))


def run_input(make, cut):
    """Records (batch boundaries may move after a resume) and counters."""
    stage = make()
    out, it = [], stage.read()
    for i, batch in enumerate(it):
        out.extend(batch)
        if i + 1 == cut:
            it.close()
            stage2 = make()
            stage2.restore(roundtrip(stage.snapshot()))
            for b in stage2.read():
                out.extend(b)
            return out, stage2.counters()
    return out, stage.counters()


def run_processor(make, batches, cut):
    stage, ctx = make(), Ctx()
    stage.open(ctx)
    out = []
    gen = stage.process(iter(batches[:cut]))
    out.extend(list(b) for b in gen)
    if cut < len(batches):
        stage2 = make()
        stage2.open(ctx)
        stage2.restore(roundtrip(stage.snapshot()))
        out.extend(list(b) for b in stage2.process(iter(batches[cut:])))
        stage = stage2
    return out, stage.counters(), ctx.rejected


def run_reducer(make, batches, cut, spill_dir):
    """Fold `cut` batches, snapshot, fold two more (work a kill would lose), then a new
    instance over the same spill directory restores the snapshot and finishes."""
    shutil.rmtree(spill_dir, ignore_errors=True)
    stage = make()
    if isinstance(stage, KeyedReducer):
        stage.configure(str(spill_dir), nbuckets=3)
    for b in batches[:cut]:
        stage.update(b)
    state = roundtrip(stage.snapshot())
    for b in batches[cut:cut + 2]:
        stage.update(b)
    if isinstance(stage, KeyedReducer):
        stage.spill.flush()  # the lost work reached the files: restore must cut it off
        stage.spill.close()
    stage2 = make()
    if isinstance(stage2, KeyedReducer):
        stage2.configure(str(spill_dir), nbuckets=3)
    stage2.restore(state)
    for b in batches[cut:]:
        stage2.update(b)
    return [list(b) for b in stage2.finish()], stage2.counters()


def run_output(make, batches, cut, path):
    """Write `cut` batches, snapshot at the barrier, die; a new instance finishes."""
    if path.exists():
        path.unlink()
    first = make()
    state = None

    def feed():
        nonlocal state
        for i, b in enumerate(batches):
            if i == cut:
                state = roundtrip(first.snapshot())
                raise KeyboardInterrupt  # killed between batches
            yield b
    try:
        first.write(feed())
    except KeyboardInterrupt:
        second = make()
        second.restore(state)
        second.write(iter(batches[cut:]))
    return path.read_bytes()


def file_output(cls, **opts):
    def sample(log):
        path = log.parent / f"out-{cls.name}"
        return ("output", lambda: cls(path=str(path), **opts), decoded_batches(log), path)
    return sample


SAMPLES = {
    "file-input": lambda log: ("input", lambda: FileInput(path=str(log), block_size=4096)),
    "json-decode": lambda log: ("processor", JsonDecode, raw_batches(log)),
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
                                         "total": "sum(timestamp)"}), decoded_batches(log)),
    "jsonl-output": file_output(JsonlOutput),
    "csv-output": file_output(CsvOutput, columns=["id", "from", "timestamp"]),
    # run once at the end and hold no state between batches:
    "sorted-stdout-output": None,
    "summary-json-output": None,
}


@pytest.mark.parametrize("name", REGISTRY.names())
def test_snapshot_restore_at_every_batch_boundary(name, log):
    """Restoring a snapshot at any batch boundary gives the same output and counters."""
    assert name in SAMPLES, f"add a sample for stage {name!r} to SAMPLES"
    sample = SAMPLES[name]
    if sample is None:
        assert REGISTRY.get(name).role is Role.OUTPUT
        return
    kind, make, *rest = sample(log)
    if kind == "input":
        straight = run_input(make, cut=None)
        n_batches = len(list(make().read()))
        assert n_batches > 3
        for cut in range(1, n_batches):
            assert run_input(make, cut) == straight
    elif kind == "processor":
        batches = rest[0]
        straight = run_processor(make, batches, len(batches))
        assert straight[2] or name != "json-decode", "the sample should exercise rejects"
        assert sum(map(len, straight[0])) > 0
        for cut in range(len(batches)):
            assert run_processor(make, batches, cut) == straight
    elif kind == "output":
        batches, path = rest
        straight = run_output(make, batches, len(batches), path)
        assert straight.count(b"\n") >= sum(map(len, batches))
        for cut in range(len(batches)):
            assert run_output(make, batches, cut, path) == straight
    else:
        batches = rest[0]
        spill = log.parent / f"spill-{name}"
        straight = run_reducer(make, batches, len(batches), spill)
        assert sum(map(len, straight[0])) > 0
        for cut in range(len(batches)):
            assert run_reducer(make, batches, cut, spill) == straight


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
        red.spill.mark(durable=False)
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
        red.spill.mark(durable=False)
        dirs.append(str(tmp_path / f"m{i}"))
    assert reduce_tasks(SiteStateReducer, dirs, 2)[0] == expected


def test_reducer_result_shape():
    """The reducer emits (site, messages, emails, operators, visitors) tuples."""
    red = SiteStateReducer()
    assert list(red.finish()) == [Batch()]
