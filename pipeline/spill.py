"""Key-partitioned state on disk: append-only spill files, read back bucket by bucket.

A keyed reducer never holds its rows in memory. It routes each row to one of `n`
buckets by a hash of its key and hands them to a `SpillWriter`, which buffers a few MB
and then appends one *frame* per (set, bucket) to its data file:

    DIR/spill.dat   frames, back to back: raw numpy rows, or a pickled list of objects
    DIR/spill.idx   one 29-byte entry per frame: set, bucket, offset, bytes, rows

A *set* is one kind of row (the summary reducer writes "ids" and "sites"); each set
has a numpy dtype, or None for pickled Python objects. Every map task and every reduce
task has its own writer, and a writer only appends, so the files are their own
checkpoint: `mark()` flushes and fsyncs both and returns their lengths, a checkpoint
records them, and `restore(mark)` cuts the files back after a crash. Nothing is ever
written twice and no second copy of the rows is kept.

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
from typing import Any, Iterator

import numpy as np

from .checkpoint import (CorruptCheckpoint, check_trusted, make_private_dirs, open_private)
from .errors import CheckpointFailed, WriteFailed, reason

INDEX = np.dtype([("set", "u1"), ("bucket", "<u4"), ("offset", "<u8"), ("nbytes", "<u8"),
                  ("nrows", "<u8")])
DATA, IDX = "spill.dat", "spill.idx"
Sets = dict[str, Any]  # set name -> numpy dtype, or None for pickled objects


class SpillWriter:
    """Buffered, append-only writer of bucketed rows; see the module docstring."""

    def __init__(self, directory: str, sets: Sets, nbuckets: int,
                 buffer_bytes: int = 8 << 20):
        self.dir = directory
        self.sets = {name: (np.dtype(dt) if dt is not None else None) for name, dt in sets.items()}
        self.set_ids = {name: i for i, name in enumerate(self.sets)}
        self.nbuckets = nbuckets
        self.buffer_bytes = buffer_bytes
        self.pending: dict[tuple[int, int], list[Any]] = {}
        self.pending_bytes = 0
        self.rows = 0
        self._dat: Any = None
        self._idx: Any = None
        self._keep: dict[str, int] | None = None

    # -- files --------------------------------------------------------------------
    def restore(self, mark: dict[str, int]) -> None:
        """Continue after a checkpoint: the files are cut back to `mark` when opened.
        Raises CorruptCheckpoint if they are shorter than the checkpoint says."""
        for key, name in (("dat", DATA), ("idx", IDX)):
            path = os.path.join(self.dir, name)
            size = os.path.getsize(path) if os.path.exists(path) else 0
            if size < mark[key]:
                raise CorruptCheckpoint(f"{path} has {size:,} bytes; the checkpoint "
                                        f"recorded {mark[key]:,}")
        self._keep = dict(mark)

    def _open(self) -> None:
        keep = self._keep or {"dat": 0, "idx": 0}
        path = self.dir
        try:
            make_private_dirs(self.dir)
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
        size = piece.nbytes if isinstance(piece, np.ndarray) else 64 * len(piece)
        self.pending_bytes += size
        self.rows += len(piece)
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
                    data, nrows = pickle.dumps(objects, protocol=5), len(objects)
                fh.write(data)
                entries[i] = (sid, bucket, offset, len(data), nrows)
                offset += len(data)
            fh, name = self._idx, IDX
            fh.write(entries.tobytes())
        except OSError as exc:
            raise WriteFailed("spill file", os.path.join(self.dir, name), reason(exc)) from None
        self.pending.clear()
        self.pending_bytes = 0

    def mark(self, durable: bool = True) -> dict[str, int]:
        """Flush (and fsync) everything; the lengths a checkpoint records. WriteFailed
        if the rows cannot be written; CheckpointFailed if only the fsync fails."""
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
        return {"dat": self._dat.tell(), "idx": self._idx.tell()}

    def close(self) -> None:
        for fh in (self._dat, self._idx):
            if fh is not None:
                try:
                    fh.close()
                except OSError:
                    pass  # after mark() nothing is buffered; after a failure it is moot
        self._dat = self._idx = None


class SpillReader:
    """Read buckets across several writers' directories, in the order given."""

    def __init__(self, directories: list[str], sets: Sets):
        self.sets = {name: (np.dtype(dt) if dt is not None else None) for name, dt in sets.items()}
        self.set_ids = {name: i for i, name in enumerate(self.sets)}
        self.writers: list[tuple[str, np.ndarray]] = []
        self.trusted: set[str] = set()
        for d in directories:
            path = os.path.join(d, IDX)
            if not os.path.exists(path):
                continue
            raw = open(path, "rb").read()
            usable = len(raw) - len(raw) % INDEX.itemsize
            self.writers.append((os.path.join(d, DATA), np.frombuffer(raw[:usable], INDEX)))

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
            if dtype is None and path not in self.trusted:  # pickles: see the docstring
                check_trusted(path, "spill file")
                self.trusted.add(path)
            with open(path, "rb") as fh:
                for e in hit:
                    fh.seek(int(e["offset"]))
                    data = fh.read(int(e["nbytes"]))
                    if len(data) != int(e["nbytes"]):
                        raise OSError(f"spill file {path} is shorter than its index says")
                    yield np.frombuffer(data, dtype) if dtype is not None else pickle.loads(data)

    def read(self, name: str, bucket: int) -> Any:
        """All rows of one bucket: one array (or one list), writers in order."""
        dtype = self.sets[name]
        parts = list(self.frames(name, bucket))
        if dtype is None:
            return [o for p in parts for o in p]
        if not parts:
            return np.zeros(0, dtype)
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)
