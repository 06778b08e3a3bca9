"""The checkpoint store: one consistent, atomic, incremental checkpoint per save.

Layout of a slot (one per config file + input path, inside the state directory):

    checkpoint-00000012     manifest: header, sha256, pickled body
    checkpoint-00000011     the previous one, kept as a fallback
    seg-00000012            new tails of every append-only sequence since seq 11

A snapshot is any picklable tree. A value wrapped in `AppendOnly(seq)` promises that
it only ever grows; the store then writes just the items added since the last save
into a new segment, so at 10M records a checkpoint costs what changed, not the whole
state. Every `compact_every` segments a sequence is written whole once more, and
segments no kept manifest refers to are deleted.

Write order makes a torn checkpoint impossible to mistake for a good one: segment
(fsync) -> manifest temp (fsync) -> rename -> fsync directory. A reader verifies the
manifest's checksum and every segment piece's CRC, and falls back to the previous
manifest, or to a fresh start, with a notice.

A save that fails (a full disk, an I/O error) removes what it half-wrote and raises
CheckpointFailed; the store is left as it was, so the previous checkpoint stands and
the next save writes everything since it.

Manifests and list segments are pickles, and unpickling runs code: state is created
0700/0600, and a file is only unpickled if it and its directory belong to this user and
nobody else can write them (`check_trusted`).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import zlib
from array import array
from typing import Any, Callable

from pipeline.errors import CheckpointFailed, DamagedState, OldState, reason
from pipeline.stage import AppendOnly
from pipeline.state.trust import check_trusted, fsync_path, make_private_dirs, open_private

MAGIC = b"SLUICE-CHECKPOINT-2\n"  # 2: the classes a manifest names moved (engine/...)
OLD = b"SLUICE-CHECKPOINT-"
KEEP = 2  # manifests kept: the newest and one fallback


class _Ref:
    """Stands in the manifest's tree for an AppendOnly at `key`."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        self.key = key


class CorruptCheckpoint(Exception):
    pass


class CheckpointStore:
    def __init__(self, directory: str, compact_every: int = 32):
        self.dir = directory
        self.compact_every = compact_every
        self.seq = 0
        # key -> list of pieces (segment, offset, length, crc, typecode or None, count)
        self.index: dict[str, list[tuple[str, int, int, int, str | None, int]]] = {}
        self.saved_len: dict[str, int] = {}
        self.bytes_written = 0
        self.loaded: dict[str, Any] | None = None  # the tree load() returned

    # -- saving -------------------------------------------------------------------
    def save(self, body: dict[str, Any]) -> None:
        """Write `body` (a snapshot tree) as the next checkpoint, atomically; or raise
        CheckpointFailed, having removed what this save wrote (see the docstring)."""
        seq = self.seq + 1
        seg_name = f"seg-{seq:08d}"
        pieces: list[Any] = []
        pos = 0
        new_index = {k: list(v) for k, v in self.index.items()}
        new_len = dict(self.saved_len)

        def tail(key: str, seq_value: Any) -> _Ref:
            nonlocal pos
            n = len(seq_value)
            start = new_len.get(key, 0)
            if n < start:
                raise ValueError(f"checkpoint: AppendOnly {key!r} shrank from {start} to {n}")
            if len(new_index.get(key, ())) >= self.compact_every:
                start, new_index[key] = 0, []  # compaction: write it whole once more
            if n > start or key not in new_index:
                if isinstance(seq_value, array):
                    # a view, not a copy: a first save of 10M rows would double memory
                    size = seq_value.itemsize
                    data = memoryview(seq_value).cast("B")[start * size:n * size]
                    code = seq_value.typecode
                else:
                    data, code = pickle.dumps(list(seq_value[start:n]), 5), None
                pieces.append(data)
                new_index.setdefault(key, []).append(
                    (seg_name, pos, len(data), zlib.crc32(data), code, n - start))
                pos += len(data)
            new_len[key] = n
            return _Ref(key)

        tree = _replace(body, "", tail)
        seg = os.path.join(self.dir, seg_name)
        final = os.path.join(self.dir, f"checkpoint-{seq:08d}")
        # a failure at any step is not a checkpoint: remove all of it, the renamed
        # manifest too (its directory entry may not be durable), leaving the previous one
        step = _Steps(seg, final + ".tmp", final)
        try:
            with step:
                step("create", "checkpoint directory", self.dir)
                make_private_dirs(self.dir)
                if pieces:
                    step("write", "checkpoint file", seg)
                    self._write_durably(seg, pieces)
                manifest = pickle.dumps({"seq": seq, "tree": tree, "index": new_index}, 5)
                step("write", "checkpoint file", final + ".tmp")
                self._write_durably(final + ".tmp",
                                    [MAGIC, hashlib.sha256(manifest).digest(), manifest])
                step("rename", "checkpoint file", final + ".tmp")
                os.replace(final + ".tmp", final)
                step("sync", "checkpoint directory", self.dir)
                fsync_path(self.dir)
        finally:
            for piece in pieces:  # release the views so the arrays may grow again
                if isinstance(piece, memoryview):
                    piece.release()
            pieces.clear()
        self.seq, self.index, self.saved_len = seq, new_index, new_len
        self.bytes_written += pos + len(manifest)
        try:
            self._collect_garbage()
        except OSError:
            pass  # the checkpoint is written; old files go at the next save

    def _write_durably(self, path: str, pieces: list[Any]) -> None:
        with open(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as fh:
            for p in pieces:
                fh.write(p)
            fh.flush()
            os.fsync(fh.fileno())

    def _collect_garbage(self) -> None:
        manifests = self._manifests()
        for name in manifests[KEEP:]:
            os.unlink(os.path.join(self.dir, name))
        live = set()
        for name in manifests[:KEEP]:
            try:
                live |= {p[0] for pieces in self._read_manifest(name)["index"].values()
                         for p in pieces}
            except CorruptCheckpoint:
                pass
        for name in os.listdir(self.dir):
            if (name.startswith("seg-") and name not in live) or name.endswith(".tmp"):
                os.unlink(os.path.join(self.dir, name))

    # -- loading ------------------------------------------------------------------
    def _manifests(self) -> list[str]:
        if not os.path.isdir(self.dir):
            return []
        names = [n for n in os.listdir(self.dir)
                 if n.startswith("checkpoint-") and not n.endswith(".tmp")]
        return sorted(names, reverse=True)

    def _read_manifest(self, name: str) -> dict[str, Any]:
        path = os.path.join(self.dir, name)
        check_trusted(path, "checkpoint")
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw.startswith(OLD) and not raw.startswith(MAGIC):
            raise OldState(self.dir)
        if not raw.startswith(MAGIC):
            raise CorruptCheckpoint("bad header" if raw else "empty file")
        digest, body = raw[len(MAGIC):len(MAGIC) + 32], raw[len(MAGIC) + 32:]
        if hashlib.sha256(body).digest() != digest:
            raise CorruptCheckpoint("checksum mismatch")
        try:
            return pickle.loads(body)
        except Exception as exc:  # checksum passed: a bug or a foreign file
            raise CorruptCheckpoint(f"unreadable ({exc})") from None

    def _materialize(self, index: dict[str, list[Any]]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        handles: dict[str, Any] = {}
        try:
            for key, pieces in index.items():
                acc: Any = None
                for seg, off, length, crc, code, _count in pieces:
                    fh = handles.get(seg)
                    if fh is None:
                        path = os.path.join(self.dir, seg)
                        try:
                            check_trusted(path, "checkpoint segment")
                            fh = handles[seg] = open(path, "rb")
                        except OSError:
                            raise CorruptCheckpoint(f"segment {seg} is missing") from None
                    fh.seek(off)
                    data = fh.read(length)
                    if len(data) != length or zlib.crc32(data) != crc:
                        raise CorruptCheckpoint(f"segment {seg} is damaged")
                    if code is not None:
                        acc = array(code) if acc is None else acc
                        acc.frombytes(data)
                    else:
                        acc = [] if acc is None else acc
                        acc.extend(pickle.loads(data))
                values[key] = acc
        finally:
            for fh in handles.values():
                fh.close()
        return values

    def load(self, notice: Callable[[str], None]) -> dict[str, Any] | None:
        """The newest good checkpoint's tree, or None. Corrupt ones are reported."""
        for name in self._manifests():
            try:
                manifest = self._read_manifest(name)
                values = self._materialize(manifest["index"])
            except (CorruptCheckpoint, OSError) as exc:
                notice(f"checkpoint {os.path.join(self.dir, name)} is unusable ({exc}); "
                       f"trying an older one")
                continue
            self.seq = manifest["seq"]
            self.index = manifest["index"]
            self.saved_len = {k: len(v) for k, v in values.items()}
            self.loaded = _replace(manifest["tree"], "", lambda key, ref, v=values: v[ref.key],
                                   wrapped=_Ref)
            return self.loaded
        return None

    def size_bytes(self) -> int:
        if not os.path.isdir(self.dir):
            return 0
        return sum(os.path.getsize(os.path.join(self.dir, n)) for n in os.listdir(self.dir))


def _replace(tree: Any, key: str, fn: Callable[[str, Any], Any],
             wrapped: type = AppendOnly) -> Any:
    """Copy of `tree` with each `wrapped` leaf replaced by fn(path, leaf)."""
    if isinstance(tree, wrapped):
        return fn(key, tree.value if wrapped is AppendOnly else tree)
    if isinstance(tree, dict):
        return {k: _replace(v, f"{key}/{k}", fn, wrapped) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)) and not isinstance(tree, array):
        items = [_replace(v, f"{key}/{i}", fn, wrapped) for i, v in enumerate(tree)]
        return items if isinstance(tree, list) else tuple(items)
    return tree


def _checksum(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_checked_json(path: str, value: Any, durable: bool = True) -> None:
    """Write `value` as JSON with its sha256 to `path` atomically (temp file, fsync,
    rename, dir fsync), 0600; CheckpointFailed (with the temp file removed) if it
    cannot. `read_checked_json` refuses it if a byte of it changes."""
    tmp = path + ".tmp"
    directory = os.path.dirname(os.path.abspath(path))
    with (step := _Steps(tmp)):
        step("write", "checkpoint file", tmp)
        with open(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w",
                  encoding="utf-8") as fh:
            json.dump({"sha256": _checksum(value), "data": value}, fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        step("rename", "checkpoint file", tmp)
        os.replace(tmp, path)
        if durable:
            step("sync", "checkpoint directory", directory)
            fsync_path(directory)


def read_checked_json(path: str) -> Any:
    """The value `write_checked_json` wrote to `path`; None if there is no such file;
    DamagedState if it is not what was written."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DamagedState(path, f"cannot read it: {reason(exc)}") from None
    try:
        doc = json.loads(raw)
        value = doc["data"]
        good = doc["sha256"] == _checksum(value)
    except (ValueError, TypeError, KeyError, RecursionError):
        raise DamagedState(path, "it is not the JSON Sluice wrote") from None
    if not good:
        raise DamagedState(path, "it fails its checksum")
    return value


class _Steps:
    """The step of a durable write under way, named in CheckpointFailed if an OSError
    ends it; the files given are removed then (what the failed write left)."""

    def __init__(self, *leftovers: str):
        self.leftovers = leftovers
        self.doing = ("write", "checkpoint file", leftovers[0])

    def __call__(self, verb: str, what: str, path: str) -> None:
        self.doing = (verb, what, path)

    def __enter__(self) -> "_Steps":
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, OSError):
            for path in self.leftovers:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            verb, what, path = self.doing
            raise CheckpointFailed(what, path, reason(exc), verb) from None
