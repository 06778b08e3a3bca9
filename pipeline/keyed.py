"""Keyed reducers: state as hash-partitioned rows on disk, reduced one bucket at a time.

A `KeyedReducer` is how a reducer stays within the memory budget whatever the input:

    update(batch)          map side: turn records into numpy rows, route each to a
                           bucket by a hash of its key, `self.spill.add(set, buckets, rows)`
    reduce(phase, b, io)   reduce side, once per phase and bucket: `io.read(set, b)` gives
                           every row of bucket b, from every map task, in file order; a
                           phase may write rows for a later phase (`io.add`), and the
                           last phase returns (key, record) pairs sorted by key

The engine plans map tasks (input ranges), then the reduce tasks of each phase (one per
bucket), and finally merges the buckets' sorted results by key for the stages after
the reducer. A bucket's rows are all its keys' rows, so a bucket can be finished on its
own; the bucket count is chosen so that one bucket fits the memory budget.

Every row gets an *order key* when it reaches the reducer: the map task's number in the
high bits, a running count in the low 40. Map tasks are numbered in file order and read
their range in order, so comparing order keys is comparing file positions.
"""
from __future__ import annotations

import bisect
import os
import shutil
import tempfile
from operator import itemgetter
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np

from pipeline import keys
from pipeline.errors import Stopped
from pipeline.stage import Batch, Reducer
from pipeline.state.spill import (ArrowTables, Codec, Sets, SpillReader,  # noqa: F401
                                  SpillWriter)  # (ArrowTables, Codec: for reducers)

ORDER_BITS = 40
RESULT = "__result__"   # the object set holding a last phase's (key, record) pairs
RESULT_FRAME = 2000     # pairs per result frame at most; see result_frame_rows()
BATCH = 10_000


class ReduceIO:
    """What `KeyedReducer.reduce()` may do: read buckets, write rows for later phases."""

    def __init__(self, reader: SpillReader, writer: SpillWriter | None, memory_bytes: int,
                 scratch: str):
        self.reader = reader
        self.writer = writer
        self.memory_bytes = memory_bytes  # what one bucket may use while it is reduced
        self.scratch = scratch            # a directory for temporary files
        self.counters: dict[str, int] = {}

    def read(self, name: str, bucket: int) -> Any:
        return self.reader.read(name, bucket)

    def frames(self, name: str, bucket: int) -> Iterator[Any]:
        return self.reader.frames(name, bucket)

    def nbytes(self, name: str, bucket: int) -> int:
        return self.reader.nbytes(name, bucket)

    def add(self, name: str, buckets: np.ndarray, rows: np.ndarray) -> None:
        assert self.writer is not None
        self.writer.add(name, buckets, rows)

    def add_objects(self, name: str, bucket: int, objects: list[Any]) -> None:
        assert self.writer is not None
        self.writer.add_objects(name, bucket, objects)

    def count(self, name: str, n: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + int(n)

    def strings(self, name: str, bucket: int) -> keys.StringTable:
        """The long strings `keep_longs()` put in set `name` for this bucket, checked:
        one digest never stands for two strings."""
        table = keys.StringTable()
        for frame in self.frames(name, bucket):
            table.add([((w0, w1), text) for w0, w1, text in frame])
        return table


class KeyedReducer(Reducer):
    """Base of reducers whose state lives in spill files; see the module docstring.

    Declare `spills` (set name -> numpy dtype, a Codec, or None: pickled), `phases`
    (reduce passes; a phase may read the sets of the map side and of earlier phases) and
    `reduce_row_bytes` (peak memory per spilled row while one bucket is reduced, which
    sizes the buckets). `snapshot()`/`restore()` already cover the spill files; a
    subclass that keeps more state extends them.
    """

    spills: ClassVar[Sets] = {}
    result_codec: ClassVar[Any] = None  # how the last phase's (key, record) pairs are
    #                                     stored: a Codec, or None (pickled)
    phases: ClassVar[int] = 1
    reduce_row_bytes: ClassVar[int] = 256

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.nbuckets = 1
        self.order_base = 0
        self.seq = 0
        self.spill: SpillWriter | None = None
        self._scratch: str | None = None
        self._mark: dict[str, int] | None = None
        self.reduced: dict[str, int] = {}  # counts reduce() made (io.count), when run here

    # -- the engine's side ----------------------------------------------------------
    def configure(self, directory: str, nbuckets: int, task: int = 0,
                  buffer_bytes: int = 8 << 20) -> None:
        """Where this map task's rows go, how many buckets, and the task's number."""
        self.nbuckets = nbuckets
        self.order_base = task << ORDER_BITS
        self.spill = SpillWriter(directory, self.all_sets(), nbuckets, buffer_bytes)
        if self._mark is not None:
            self.spill.restore(self._mark)

    @classmethod
    def all_sets(cls) -> Sets:
        return {**cls.spills, RESULT: cls.result_codec}

    def _writer(self) -> SpillWriter:
        if self.spill is None:  # used on its own (tests): a private scratch directory
            self._scratch = tempfile.mkdtemp(prefix=f"sluice-{self.name}-")
            self.configure(os.path.join(self._scratch, "map"), self.nbuckets)
        return self.spill  # type: ignore[return-value]

    def keep_longs(self, name: str, words: np.ndarray, tags: np.ndarray,
                   longs: dict[tuple[int, int], str], buckets: np.ndarray) -> None:
        """Spill the strings behind this batch's LONG keys (a LONG key is a digest) to
        set `name`, each to the bucket its row went to; `io.strings()` reads them back."""
        if not longs:
            return
        rows = np.flatnonzero(tags == keys.LONG)
        triples = np.empty(len(rows), [("w0", "<u8"), ("w1", "<u8"), ("b", "<i8")])
        triples["w0"], triples["w1"] = words[rows, 0], words[rows, 1]
        triples["b"] = buckets[rows]
        by_bucket: dict[int, list[tuple[int, int, str]]] = {}
        for w0, w1, b in np.unique(triples).tolist():  # each string once per bucket
            by_bucket.setdefault(b, []).append((w0, w1, longs[(w0, w1)]))
        for b, items in by_bucket.items():
            self._writer().add_objects(name, b, items)

    def orders(self, n: int) -> np.ndarray:
        """Order keys for the next n rows, in arrival (= file) order."""
        out = np.arange(self.seq, self.seq + n, dtype=np.uint64) + np.uint64(self.order_base)
        self.seq += n
        return out

    def settle(self) -> None:
        """Write to the spill what update() holds back in memory (a reducer that
        gathers several batches before it spills them). Called before the spill is
        marked: at every snapshot, and before this process reduces its own spill."""

    def snapshot(self) -> dict[str, Any]:
        self.settle()
        return {"spill": self._writer().mark(), "seq": self.seq}

    def restore(self, state: dict[str, Any]) -> None:
        self.seq = state["seq"]
        self._mark = state["spill"]
        if self.spill is not None:
            self.spill.restore(self._mark)

    def merge(self, other: "Reducer") -> None:
        raise TypeError(f"{self.name} keeps its state in buckets; the engine reduces them")

    # -- the stage's side -------------------------------------------------------------
    def reduce(self, phase: int, bucket: int, io: ReduceIO) -> Iterable[tuple[Any, Any]] | None:
        """Reduce one bucket; the last phase returns (key, record) pairs sorted by key."""
        raise NotImplementedError

    def finish(self) -> Iterator[Batch]:
        """Reduce this reducer's own spill in this process (a stage used on its own)."""
        try:
            yield from self._reduce_here(256 << 20, count=True)
        finally:
            if self._scratch:
                self.spill.close()  # type: ignore[union-attr]
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch, self.spill = None, None

    def current(self, memory_bytes: int) -> Iterator[Batch]:
        """The result so far: every row spilled until now, reduced into scratch files;
        the spill itself is only flushed, and goes on growing."""
        yield from self._reduce_here(memory_bytes, count=False)

    def reduced_pairs(self, memory_bytes: int = 256 << 20) -> Iterator[list[Any]]:
        """This reducer's own spill reduced here, as lists of (key, record) pairs in key
        order (a followed run's window, closing); counted like finish()."""
        yield from self._reduce_here(memory_bytes, count=True, pairs=True)

    def _reduce_here(self, memory_bytes: int, count: bool, pairs: bool = False
                     ) -> Iterator[Any]:
        writer = self._writer()
        self.settle()
        writer.mark(durable=False)  # every row so far readable on disk
        scratch = tempfile.mkdtemp(prefix=f"sluice-{self.name}-reduce-",
                                   dir=os.path.dirname(writer.dir))
        try:
            dirs = [writer.dir]
            for phase in range(self.phases):
                out = os.path.join(scratch, f"p{phase}")
                made = reduce_buckets(self, phase, range(self.nbuckets), dirs, out,
                                      memory_bytes=memory_bytes)
                for key, n in made.items():
                    if count and not key.startswith("_"):
                        self.reduced[key] = self.reduced.get(key, 0) + n
                dirs.append(out)
            if pairs:
                yield from merged_results(self, dirs[-1:], self.nbuckets, keyed=True)
            else:
                yield from result_batches(self, dirs[-1:], self.nbuckets)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def counters(self) -> dict[str, int]:
        return dict(self.reduced)


def split_frames(directory: str, frames: Iterable[np.ndarray], dtype: Any, k: int,
                 route: Any) -> SpillReader:
    """Spill the rows of `frames` into k sub-buckets by `route(rows) -> bucket numbers`,
    for a bucket too large for memory; read them back with the returned reader."""
    shutil.rmtree(directory, ignore_errors=True)
    writer = SpillWriter(directory, {"rows": dtype}, k, buffer_bytes=4 << 20)
    for frame in frames:
        writer.add("rows", route(frame), frame)
    writer.mark(durable=False)
    writer.close()
    return SpillReader([directory], {"rows": dtype})


def reduce_buckets(stage: KeyedReducer, phase: int, buckets: Iterable[int], inputs: list[str],
                   out_dir: str, memory_bytes: int, durable: bool = False,
                   stop: Any = None) -> dict[str, int]:
    """Run `stage.reduce(phase, b)` for each bucket, reading the writers in `inputs`
    (in order) and writing what it produces to a new writer in `out_dir`. Returns the
    counts the stage made with `io.count()`, and `_results`: result records written."""
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)  # an earlier, unfinished attempt
    reader = SpillReader(inputs, stage.all_sets())
    writer = SpillWriter(out_dir, stage.all_sets(), stage.nbuckets)
    scratch = os.path.join(out_dir, "scratch")
    io = ReduceIO(reader, writer, memory_bytes, scratch)
    last = phase == stage.phases - 1
    frame_rows = result_frame_rows(stage, memory_bytes)
    try:
        for b in buckets:
            if stop is not None and stop.is_set():
                raise Stopped(0)
            result = stage.reduce(phase, b, io)
            if last and result is not None:
                chunk: list[Any] = []
                for pair in result:
                    chunk.append(pair)
                    if len(chunk) >= frame_rows:
                        io.count("_results", len(chunk))
                        writer.add_objects(RESULT, b, chunk)
                        writer.flush()
                        chunk = []
                if chunk:
                    io.count("_results", len(chunk))
                writer.add_objects(RESULT, b, chunk)
                writer.flush()
        writer.mark(durable=durable)
    finally:
        writer.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return io.counters


def result_frame_rows(stage: KeyedReducer, memory_bytes: int) -> int:
    """Pairs per result frame. Merging the results holds about two frames per bucket
    (the frames in hand, and a round taken from them), in whichever process merges, so
    frames shrink as buckets multiply: all of them together stay within a sixteenth of a
    reduce's memory (`memory_bytes`), at `reduce_row_bytes` a row; 64 pairs at least."""
    rows = memory_bytes // (32 * max(stage.nbuckets, 1) * stage.reduce_row_bytes)
    return int(min(max(rows, 64), RESULT_FRAME))


def merge_sorted_frames(streams: list[Iterator[list[Any]]]) -> Iterator[list[Any]]:
    """Merge streams of frames, each a list of (key, value) pairs sorted by key (and
    the frames of a stream in key order), into lists of pairs in key order: a frame at
    a time, not a pair at a time. Each round takes, from every stream's frame in hand,
    the pairs up to the smallest last key among them (nothing later in any stream can
    come before those) and sorts them together (Timsort merges sorted runs in C): on
    a million pairs from 16 streams, a third of heapq.merge's time. A key is in one
    stream only (a key's rows are all in one bucket); within a stream, equal keys keep
    their order. One frame per stream is in memory."""
    head: list[list[Any]] = []  # each live stream's frame in hand
    live: list[Iterator[list[Any]]] = []
    for stream in streams:
        frame = next((f for f in stream if f), None)
        if frame is not None:
            head.append(frame)
            live.append(stream)
    key = itemgetter(0)
    while head:
        bound = min(frame[-1][0] for frame in head)
        out: list[Any] = []
        for i, frame in enumerate(head):
            cut = bisect.bisect_right(frame, bound, key=key)
            out.extend(frame[:cut] if cut < len(frame) else frame)
            head[i] = frame[cut:] if cut < len(frame) else []
        out.sort(key=key)
        yield out
        for i in range(len(head) - 1, -1, -1):
            if not head[i]:
                frame = next((f for f in live[i] if f), None)
                if frame is None:
                    del head[i], live[i]
                else:
                    head[i] = frame


def merged_results(stage: KeyedReducer, dirs: list[str], nbuckets: int,
                   keyed: bool = False) -> Iterator[list[Any]]:
    """Every bucket's result records (or, `keyed`, (key, record) pairs), merged by key,
    a list at a time; one frame per bucket in memory."""
    reader = SpillReader(dirs, stage.all_sets())
    for pairs in merge_sorted_frames([reader.frames(RESULT, b) for b in range(nbuckets)]):
        yield pairs if keyed else [record for _key, record in pairs]


def bucket_batches(stage: KeyedReducer, dirs: list[str], buckets: Iterable[int]
                   ) -> Iterator[Batch]:
    """The result records of some buckets, bucket after bucket, each in key order: for
    stages that do not depend on the order of their records (Stage.order_free), which
    can read the buckets in parallel, with no merge."""
    reader = SpillReader(dirs, stage.all_sets())
    pending: list[Any] = []
    for b in buckets:
        for frame in reader.frames(RESULT, b):
            pending.extend(record for _key, record in frame)
            if len(pending) >= BATCH:
                yield Batch(pending)
                pending = []
    yield Batch(pending)


def result_batches(stage: KeyedReducer, dirs: list[str], nbuckets: int) -> Iterator[Batch]:
    pending: list[Any] = []
    for records in merged_results(stage, dirs, nbuckets):
        pending.extend(records)
        full = len(pending) - len(pending) % BATCH
        for i in range(0, full, BATCH):  # whole batches; the rest waits for more
            yield Batch(pending[i:i + BATCH])
        del pending[:full]
    yield Batch(pending)
