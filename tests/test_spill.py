"""Spill files: append-only frames per bucket, read back in writer order, cut back on resume."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.state.checkpoint import CorruptCheckpoint
from pipeline.state.spill import SpillReader, SpillWriter

ROW = np.dtype([("k", "<u8"), ("v", "<u4")])
SETS = {"rows": ROW, "objects": None}


def rows(ks):
    r = np.zeros(len(ks), ROW)
    r["k"] = ks
    r["v"] = [k * 10 for k in ks]
    return r


def test_buckets_come_back_in_writer_then_arrival_order(tmp_path):
    """Rows of a bucket read back writer by writer, each in the order they were added."""
    dirs = []
    for w in range(3):
        writer = SpillWriter(str(tmp_path / f"w{w}"), SETS, 4, buffer_bytes=64)
        for start in range(0, 40, 7):
            ks = list(range(w * 100 + start, w * 100 + start + 7))
            writer.add("rows", np.array([k % 4 for k in ks], np.uint32), rows(ks))
        writer.add_objects("objects", 2, [("w", w)])
        writer.mark(durable=False)
        writer.close()
        dirs.append(str(tmp_path / f"w{w}"))
    reader = SpillReader(dirs, SETS)
    for b in range(4):
        got = reader.read("rows", b)["k"].tolist()
        assert got == [k for w in range(3) for k in range(w * 100, w * 100 + 42) if k % 4 == b]
    assert reader.read("objects", 2) == [("w", 0), ("w", 1), ("w", 2)]
    assert reader.read("objects", 1) == []
    assert reader.nrows("rows", 1) == len(reader.read("rows", 1))


def test_restore_cuts_off_what_was_written_after_the_mark(tmp_path):
    """Rows written after a checkpoint's mark are gone after restore: none counted twice."""
    w = SpillWriter(str(tmp_path), SETS, 2)
    w.add("rows", np.array([0, 1], np.uint32), rows([1, 2]))
    mark = w.mark(durable=False)
    w.add("rows", np.array([0, 1], np.uint32), rows([3, 4]))
    w.mark(durable=False)
    w.close()
    again = SpillWriter(str(tmp_path), SETS, 2)
    again.restore(mark)
    again.add("rows", np.array([1], np.uint32), rows([5]))
    again.mark(durable=False)
    reader = SpillReader([str(tmp_path)], SETS)
    assert reader.read("rows", 0)["k"].tolist() == [1]
    assert reader.read("rows", 1)["k"].tolist() == [2, 5]


def test_restore_refuses_files_shorter_than_the_mark(tmp_path):
    """Lost spill data is a damaged checkpoint, never silently zero-filled."""
    w = SpillWriter(str(tmp_path), SETS, 1)
    w.add("rows", np.zeros(3, np.uint32), rows([1, 2, 3]))
    mark = w.mark(durable=False)
    w.close()
    with open(tmp_path / "spill.dat", "r+b") as fh:
        fh.truncate(5)
    with pytest.raises(CorruptCheckpoint, match=r"spill.dat has 5 bytes; the checkpoint "
                                                r"recorded 36"):
        SpillWriter(str(tmp_path), SETS, 1).restore(mark)


@pytest.mark.parametrize("seed", range(40))
def test_merging_result_frames_gives_heapq_merge_order(seed):
    """Result frames of all buckets merge, a frame at a time, into exactly the order a
    pair-at-a-time heapq.merge gives: keys unique across buckets, repeated within one,
    empty frames and empty buckets, frames cut anywhere."""
    import heapq
    import random
    from operator import itemgetter

    from pipeline.keyed import merge_sorted_frames

    rnd = random.Random(seed)
    pool = rnd.sample(range(1000), 200)
    streams = []
    for s in range(rnd.randint(0, 6)):
        own = sorted(pool[s::6] * rnd.randint(1, 2))  # a key in one stream only
        pairs = [(k, (s, i)) for i, k in enumerate(own)]
        frames, i = [], 0
        while i < len(pairs):
            n = rnd.randint(0, 5)
            frames.append(pairs[i:i + n])
            i += n
        streams.append(frames)
    want = list(heapq.merge(*[(p for f in fr for p in f) for fr in streams],
                            key=itemgetter(0)))
    got = [p for out in merge_sorted_frames([iter(fr) for fr in streams]) for p in out]
    assert got == want


def test_result_frames_shrink_as_buckets_multiply():
    """Merging keyed results holds about two frames per bucket in one process: the
    frames together stay within a sixteenth of a reduce's memory (the 10M-line
    count_by_type run merged 58 buckets of 2,000-record frames in ~400 MB before)."""
    from pipeline.keyed import RESULT_FRAME, result_frame_rows

    class Stage:
        reduce_row_bytes = 800
        nbuckets = 1

    memory = 139 << 20
    assert result_frame_rows(Stage, memory) == RESULT_FRAME
    for n in (6, 20, 58):
        Stage.nbuckets = n
        rows = result_frame_rows(Stage, memory)
        assert 64 <= rows < RESULT_FRAME
        assert 2 * n * rows * Stage.reduce_row_bytes <= memory // 16
    Stage.nbuckets = 4096
    assert result_frame_rows(Stage, memory) == 64  # at least 64 pairs a frame


def test_arrow_tables_spill_as_ipc_frames_and_a_flipped_bit_is_refused(tmp_path):
    """An ArrowTables set: a frame is the pending tables of a bucket as one IPC stream,
    read back as one table; its size counts against the buffer (a frame is written once
    the tables' bytes reach it); a damaged frame is refused, never read."""
    import os
    import pyarrow as pa
    from pipeline.errors import DamagedState
    from pipeline.state.spill import ArrowTables

    sets = {"t": ArrowTables()}
    writer = SpillWriter(str(tmp_path / "w"), sets, 2, buffer_bytes=10_000)
    tables = [pa.table({"k": pa.array(range(i, i + 500), pa.int64()),
                        "v": pa.array([b"x" * (i % 7) for i in range(500)], pa.binary())})
              for i in range(0, 2000, 500)]
    for t in tables:
        writer.add_objects("t", 1, [t])
    assert writer.rows == 2000
    writer.mark(durable=False)
    writer.close()
    reader = SpillReader([str(tmp_path / "w")], sets)
    frames = list(reader.frames("t", 1))
    assert len(frames) > 1  # 8,000 bytes of int64 per table: the buffer flushed on the way
    got = pa.concat_tables([t for frame in frames for t in frame])
    assert got.equals(pa.concat_tables(tables))
    assert reader.nrows("t", 1) == 2000 and list(reader.frames("t", 0)) == []
    path = str(tmp_path / "w" / "spill.dat")
    with open(path, "r+b") as fh:
        fh.seek(os.path.getsize(path) // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 4]))
    with pytest.raises(DamagedState):
        list(SpillReader([str(tmp_path / "w")], sets).frames("t", 1))
