"""Key-partitioned state on disk: append-only spill files, read back bucket by bucket.

A keyed reducer never holds its rows in memory. It routes each row to one of `n`
buckets by a hash of its key and hands them to a `SpillWriter`, which buffers a few MB
and then appends one *frame* per (set, bucket) to its data file:

    DIR/spill.dat   frames, back to back: raw numpy rows, or a pickled list of objects
    DIR/spill.idx   one 33-byte entry per frame: set, bucket, offset, bytes, rows, and
                    the CRC-32 of the frame's bytes
    DIR/spill.seal  the lengths of both files at the last mark(), and the CRC-32 of the
                    index up to there (checksummed JSON)

A *set* is one kind of row (the summary reducer writes "ids" and "sites"); each set
has a numpy dtype, or None for pickled Python objects (or a Codec of its own). Every map task and every reduce
task has its own writer, and a writer only appends, so the files are their own
checkpoint: `mark()` flushes and fsyncs both and returns their lengths, a checkpoint
records them, and `restore(mark)` cuts the files back after a crash. Nothing is ever
written twice and no second copy of the rows is kept.

Nothing is read back unverified. A reader takes only what the seal describes, checks the
index against the seal's CRC and every frame against its own CRC before using it (and
before unpickling it); a restored writer checks the index it keeps against the
checkpoint's CRC. Damage is DamagedState (or CorruptCheckpoint on restore), naming the
file: the engine then starts the task, or the run, over.

A `SpillReader` over writers listed in input order returns a bucket's rows in that
order, so row order within a bucket is file order: "first in file order wins" and
"ties in file order" can be decided from row positions.

Failures: rows that cannot be written would be lost, so a write error stops the run
(WriteFailed, one line; the last checkpoint still matches the files once cut back);
an fsync that fails at a checkpoint only fails that checkpoint (CheckpointFailed).
Files are created 0600, and an object frame (a pickle) is only read from a file that
is this user's and writable by nobody else (checkpoint.check_trusted).
"""
from __future__ import annotations

import os
import pickle
import zlib
from typing import Any, Iterator

import numpy as np

from pipeline.errors import CheckpointFailed, DamagedState, WriteFailed, reason
from pipeline.state.checkpoint import CorruptCheckpoint, read_checked_json, write_checked_json
from pipeline.state.trust import check_trusted, make_private_dirs, open_private

INDEX = np.dtype([("set", "u1"), ("bucket", "<u4"), ("offset", "<u8"), ("nbytes", "<u8"),
                  ("nrows", "<u8"), ("crc", "<u4")])
DATA, IDX, SEAL = "spill.dat", "spill.idx", "spill.seal"
Sets = dict[str, Any]  # set name -> numpy dtype, a Codec, or None for pickled objects


class Codec:
    """How an object set's frames are stored: by default, the list pickled. A reducer
    may declare a set with its own codec (a compact form for its usual records); its
    frames are still read only from a trusted file, since a codec may fall back on a
    pickle."""

    def encode(self, objects: list[Any]) -> bytes:
        return pickle.dumps(objects, protocol=5)

    def decode(self, data: bytes) -> list[Any]:
        return pickle.loads(data)

    def nbytes(self, objects: list[Any]) -> int:
        """About how much memory `objects` hold while they wait to be written."""
        return 64 * len(objects)

    def nrows(self, objects: list[Any]) -> int:
        return len(objects)


PICKLE = Codec()


class ArrowTables(Codec):
    """Frames of Arrow tables of one schema: a frame is the pending tables as one Arrow
    IPC stream, and reads back as a list of one table. Nothing in it is executed when
    read (unlike a pickle), and it is as compact as the columns themselves."""

    def encode(self, objects: list[Any]) -> bytes:
        import pyarrow as pa
        table = pa.concat_tables(objects)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def decode(self, data: bytes) -> list[Any]:
        import pyarrow as pa
        return [pa.ipc.open_stream(data).read_all()]

    def nbytes(self, objects: list[Any]) -> int:
        return sum(t.nbytes for t in objects)

    def nrows(self, objects: list[Any]) -> int:
        return sum(t.num_rows for t in objects)


def _set_kinds(sets: Sets) -> dict[str, Any]:
    """Each set's numpy dtype, or its Codec (PICKLE for None)."""
    return {name: PICKLE if dt is None else dt if isinstance(dt, Codec) else np.dtype(dt)
            for name, dt in sets.items()}


class SpillWriter:
    """Buffered, append-only writer of bucketed rows; see the module docstring."""

    def __init__(self, directory: str, sets: Sets, nbuckets: int,
                 buffer_bytes: int = 8 << 20):
        self.dir = directory
        self.sets = _set_kinds(sets)
        self.set_ids = {name: i for i, name in enumerate(self.sets)}
        self.codecs = {i: kind for i, kind in enumerate(self.sets.values())}
        self.nbuckets = nbuckets
        self.buffer_bytes = buffer_bytes
        self.pending: dict[tuple[int, int], list[Any]] = {}
        self.pending_bytes = 0
        self.rows = 0
        self._dat: Any = None
        self._idx: Any = None
        self._keep: dict[str, int] | None = None
        self._icrc = 0  # CRC-32 of the index written so far

    # -- files --------------------------------------------------------------------
    def restore(self, mark: dict[str, int]) -> None:
        """Continue after a checkpoint: the files are cut back to `mark` when opened.
        Raises CorruptCheckpoint if they are shorter than the checkpoint says, or the
        index kept differs from the one the checkpoint recorded."""
        for key, name in (("dat", DATA), ("idx", IDX)):
            path = os.path.join(self.dir, name)
            size = os.path.getsize(path) if os.path.exists(path) else 0
            if size < mark[key]:
                raise CorruptCheckpoint(f"{path} has {size:,} bytes; the checkpoint "
                                        f"recorded {mark[key]:,}")
        path = os.path.join(self.dir, IDX)
        kept = b""
        if mark["idx"]:
            with open(path, "rb") as fh:
                kept = fh.read(mark["idx"])
        if zlib.crc32(kept) != mark["icrc"]:
            raise CorruptCheckpoint(f"{path} is damaged: its first {mark['idx']:,} bytes "
                                    f"fail the checkpoint's CRC")
        self._keep = dict(mark)
        self._icrc = mark["icrc"]

    def _open(self) -> None:
        keep = self._keep or {"dat": 0, "idx": 0}
        path = self.dir
        try:
            make_private_dirs(self.dir)
            if os.path.exists(os.path.join(self.dir, SEAL)):  # it may describe more than
                os.unlink(os.path.join(self.dir, SEAL))  # is kept; the next mark seals
            for attr, name in (("_dat", DATA), ("_idx", IDX)):
                path = os.path.join(self.dir, name)
                fh = open(open_private(path, os.O_RDWR | os.O_CREAT), "r+b")
                setattr(self, attr, fh)
                fh.truncate(keep["dat" if name == DATA else "idx"])
                fh.seek(0, os.SEEK_END)
        except OSError as exc:
            raise WriteFailed("spill file", path, reason(exc)) from None

    # -- writing ------------------------------------------------------------------
    def add(self, name: str, buckets: np.ndarray, rows: np.ndarray) -> None:
        """Append `rows` (a structured array of the set's dtype), row i to buckets[i]."""
        if not len(rows):
            return
        sid = self.set_ids[name]
        if self.nbuckets == 1:
            self._queue(sid, 0, rows)
            return
        if self.nbuckets <= 1 << 16:  # a radix sort: 8x faster than on 32-bit keys
            buckets = buckets.astype(np.uint16, copy=False)
        order = np.argsort(buckets, kind="stable")
        counts = np.bincount(buckets, minlength=self.nbuckets)
        ends = np.cumsum(counts)
        rows = rows[order]
        for b in np.flatnonzero(counts).tolist():
            self._queue(sid, b, rows[ends[b] - counts[b]:ends[b]])

    def add_objects(self, name: str, bucket: int, objects: list[Any]) -> None:
        """Append picklable objects to one bucket of an object set."""
        if objects:
            self._queue(self.set_ids[name], bucket, list(objects))

    def _queue(self, sid: int, bucket: int, piece: Any) -> None:
        self.pending.setdefault((sid, bucket), []).append(piece)
        if isinstance(piece, np.ndarray):
            self.pending_bytes += piece.nbytes
            self.rows += len(piece)
        else:
            self.pending_bytes += self.codecs[sid].nbytes(piece)
            self.rows += self.codecs[sid].nrows(piece)
        if self.pending_bytes >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Write every buffered piece: one frame per (set, bucket)."""
        if self._dat is None:
            self._open()
        if not self.pending:
            return
        entries = np.zeros(len(self.pending), INDEX)
        offset = self._dat.tell()
        fh, name = self._dat, DATA
        try:
            for i, ((sid, bucket), pieces) in enumerate(sorted(self.pending.items())):
                if isinstance(pieces[0], np.ndarray):
                    data = b"".join(p.tobytes() for p in pieces)
                    nrows = sum(len(p) for p in pieces)
                else:
                    objects = [o for p in pieces for o in p]
                    codec = self.codecs[sid]
                    data, nrows = codec.encode(objects), codec.nrows(objects)
                fh.write(data)
                entries[i] = (sid, bucket, offset, len(data), nrows, zlib.crc32(data))
                offset += len(data)
            fh, name = self._idx, IDX
            raw = entries.tobytes()
            fh.write(raw)
            self._icrc = zlib.crc32(raw, self._icrc)
        except OSError as exc:
            raise WriteFailed("spill file", os.path.join(self.dir, name), reason(exc)) from None
        self.pending.clear()
        self.pending_bytes = 0

    def mark(self, durable: bool = True) -> dict[str, int]:
        """Flush (and fsync) everything and seal it: the lengths and index CRC a
        checkpoint records, and what a reader may read. WriteFailed if the rows cannot
        be written; CheckpointFailed if only the fsync (or the seal) fails."""
        self.flush()
        for fh, name in ((self._dat, DATA), (self._idx, IDX)):
            path = os.path.join(self.dir, name)
            try:
                fh.flush()
            except OSError as exc:
                raise WriteFailed("spill file", path, reason(exc)) from None
            if durable:
                try:
                    os.fsync(fh.fileno())
                except OSError as exc:
                    raise CheckpointFailed("spill file", path, reason(exc), "sync") from None
        mark = {"dat": self._dat.tell(), "idx": self._idx.tell(), "icrc": self._icrc}
        write_checked_json(os.path.join(self.dir, SEAL), mark, durable=durable)
        return mark

    def close(self) -> None:
        for fh in (self._dat, self._idx):
            if fh is not None:
                try:
                    fh.close()
                except OSError:
                    pass  # after mark() nothing is buffered; after a failure it is moot
        self._dat = self._idx = None


def _frame(fh: Any, path: str, entry: Any) -> bytes:
    """The bytes of one frame, checked against its index entry's length and CRC."""
    fh.seek(int(entry["offset"]))
    data = fh.read(int(entry["nbytes"]))
    if len(data) != int(entry["nbytes"]) or zlib.crc32(data) != int(entry["crc"]):
        raise DamagedState(path, f"the frame at byte {int(entry['offset']):,} fails its CRC")
    return data


class SpillReader:
    """Read buckets across several writers' directories, in the order given: what each
    writer's seal (its last mark) covers, verified (see the module docstring)."""

    def __init__(self, directories: list[str], sets: Sets):
        self.sets = _set_kinds(sets)
        self.set_ids = {name: i for i, name in enumerate(self.sets)}
        self.writers: list[tuple[str, np.ndarray]] = []
        self.trusted: set[str] = set()
        for d in directories:
            index = self._index(d)
            if index is not None:
                self.writers.append((os.path.join(d, DATA), index))

    def _index(self, d: str) -> np.ndarray | None:
        """A writer's index, checked against its seal; None if it never wrote."""
        path, seal_path = os.path.join(d, IDX), os.path.join(d, SEAL)
        seal = read_checked_json(seal_path)
        if seal is None:
            if not os.path.exists(path):
                return None
            raise DamagedState(seal_path, "missing: the spill files beside it are not sealed")
        try:
            with open(path, "rb") as fh:
                raw = fh.read(seal["idx"])
            size = os.path.getsize(os.path.join(d, DATA))
        except FileNotFoundError as exc:
            raise DamagedState(exc.filename, "missing") from None
        if len(raw) != seal["idx"] or raw and len(raw) % INDEX.itemsize:
            raise DamagedState(path, f"{len(raw):,} bytes; its seal says {seal['idx']:,}")
        if zlib.crc32(raw) != seal["icrc"]:
            raise DamagedState(path, "its bytes fail the CRC in its seal")
        if size < seal["dat"]:
            raise DamagedState(os.path.join(d, DATA),
                               f"{size:,} bytes; its seal says {seal['dat']:,}")
        index = np.frombuffer(raw, INDEX)
        if len(index) and (int((index["offset"] + index["nbytes"]).max()) > seal["dat"]
                           or int(index["set"].max()) >= len(self.sets)):
            raise DamagedState(path, "an entry points outside its data file")
        return index

    def _entries(self, name: str, bucket: int) -> Iterator[tuple[str, Any]]:
        sid = self.set_ids[name]
        for path, index in self.writers:
            hit = index[(index["set"] == sid) & (index["bucket"] == bucket)]
            if len(hit):
                yield path, hit

    def nbytes(self, name: str, bucket: int) -> int:
        return int(sum(int(hit["nbytes"].sum()) for _, hit in self._entries(name, bucket)))

    def nrows(self, name: str, bucket: int) -> int:
        return int(sum(int(hit["nrows"].sum()) for _, hit in self._entries(name, bucket)))

    def frames(self, name: str, bucket: int) -> Iterator[Any]:
        """Each frame of one bucket in order: a numpy array, or a list of objects."""
        dtype = self.sets[name]
        for path, hit in self._entries(name, bucket):
            objects = isinstance(dtype, Codec)
            if objects and path not in self.trusted:  # pickles: see the docstring
                check_trusted(path, "spill file")
                self.trusted.add(path)
            with open(path, "rb") as fh:
                for e in hit:
                    data = _frame(fh, path, e)
                    if objects:
                        yield dtype.decode(data)
                    elif len(data) != int(e["nrows"]) * dtype.itemsize:
                        raise DamagedState(path, f"the frame at byte {int(e['offset']):,} "
                                                 f"does not hold {int(e['nrows']):,} rows")
                    else:
                        yield np.frombuffer(data, dtype)

    def verify(self) -> None:
        """Check every frame's CRC without using it: for readers whose data must be
        known good before anything is output (a damaged frame found halfway through an
        output that cannot be taken back would be too late)."""
        for path, index in self.writers:
            with open(path, "rb") as fh:
                for e in index:
                    _frame(fh, path, e)

    def read(self, name: str, bucket: int) -> Any:
        """All rows of one bucket: one array (or one list), writers in order."""
        dtype = self.sets[name]
        parts = list(self.frames(name, bucket))
        if isinstance(dtype, Codec):
            return [o for p in parts for o in p]
        if not parts:
            return np.zeros(0, dtype)
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)
