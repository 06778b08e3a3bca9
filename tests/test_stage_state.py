"""Every registered stage: straight through == snapshot/restore at every batch boundary.

A new stage needs a sample below; the test fails until it has one.
"""
from __future__ import annotations

import pickle

import pytest

import main
from pipeline import Batch, Kind
from stages.file_input import FileInput
from stages.json_decode import JsonDecode
from stages.count import Count
from stages.csv_output import CsvOutput
from stages.dedupe import Dedupe
from stages.jsonl_output import JsonlOutput
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


def run_reducer(make, batches, cut):
    stage = make()
    for b in batches[:cut]:
        stage.update(b)
    stage2 = make()
    stage2.restore(roundtrip(stage.snapshot()))
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
    "dedupe": lambda log: ("processor", lambda: Dedupe(field="id"), decoded_batches(log)),
    "site-state-reducer": lambda log: ("reducer", SiteStateReducer, decoded_batches(log)),
    "count": lambda log: ("reducer", lambda: Count(field="from"), decoded_batches(log)),
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
        assert REGISTRY.get(name).kind is Kind.OUTPUT
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
        straight = run_reducer(make, batches, len(batches))
        for cut in range(len(batches)):
            assert run_reducer(make, batches, cut) == straight


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_reducer_merge_equals_one_pass(log, parts):
    """Reducing newline-aligned parts separately and merging in order == one pass."""
    whole = SiteStateReducer()
    for b in decoded_batches(log):
        whole.update(b)
    expected = list(whole.finish())
    merged = SiteStateReducer()
    for part in FileInput(path=str(log), block_size=1024).split(parts):
        dec, red = JsonDecode(), SiteStateReducer()
        dec.open(Ctx())
        for b in dec.process(part.read()):
            red.update(b)
        merged.merge(roundtrip(red))
    assert list(merged.finish()) == expected
    assert merged.counters() == whole.counters()


def test_merge_with_empty_partials(log):
    """Empty partial states merge as identities, on either side."""
    full = SiteStateReducer()
    for b in decoded_batches(log):
        full.update(b)
    expected = list(full.cols["ts"])
    left = SiteStateReducer()
    left.merge(full)
    left.merge(SiteStateReducer())
    assert list(left.snapshot()["cols"]["ts"].value) == expected
    assert list(left.finish()) == list(full.finish())


def test_reducer_result_shape():
    """The reducer emits (site, messages, emails, operators, visitors) tuples."""
    red = SiteStateReducer()
    assert list(red.finish()) == [Batch()]
