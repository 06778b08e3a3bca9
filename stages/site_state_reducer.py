"""site-state-reducer: the chat summary, exact, within a memory budget at any input size.

The state is rows on disk (pipeline.keyed), never Python objects per record. Each valid
record becomes two rows, routed by hash:

    ids    by its id:    id key (16 bytes), order key, the bucket of its site    29 bytes
    sites  by its site:  site key, from key, timestamp, order key, kind          49 bytes

Keys are exact (pipeline.keys: a UUID's 128 bits, a short string's bytes, or a digest of
a long string confirmed against the string itself). Two reduce phases finish the job:

    0  per id bucket: every id's rows meet here, in file order; all but the first are
       duplicates, whose order keys go to the bucket of *their* site ("drops")
    1  per site bucket: drop the duplicates, then count distinct operators and visitors
       and classify each message by its site's state at its time, with numpy sorts in
       which ties keep file order

A bucket holds every row of its keys, so each is finished on its own; the engine picks
enough buckets for one to fit the memory budget.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from pipeline import keys
from pipeline.keyed import KeyedReducer, ReduceIO, split_frames
from pipeline.stage import Batch
from pipeline.state.spill import SpillReader, SpillWriter

from .site_event import ONLINE, OFFLINE, Status
from .site_timeline import Timeline, classify_messages, sorted_unique

ID_ROW = np.dtype([("w0", "<u8"), ("w1", "<u8"), ("order", "<u8"), ("sb", "<u4"),
                   ("tag", "u1")])
SITE_ROW = np.dtype([("s0", "<u8"), ("s1", "<u8"), ("f0", "<u8"), ("f1", "<u8"),
                     ("ts", "<f8"), ("order", "<u8"), ("code", "u1")])
# code: bits 0-1 message/online/offline, 2-3 the site key's tag, 4-5 the from key's tag
SUMMARY_FIELDS = ("site_id", "messages", "emails", "operators", "visitors")
ID_ROW_BYTES = 96  # memory per id row while duplicates are found
KIND, SITE_TAG, FROM_TAG = 0, 2, 4


def _encode_sites(sites: list[Any]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Keys of site ids (an int is its decimal string); few distinct ones per batch."""
    distinct = list(dict.fromkeys(sites))
    index = {s: i for i, s in enumerate(distinct)}
    words, tags, longs = keys.encode([s if type(s) is str else str(s) for s in distinct])
    pick = np.fromiter(map(index.__getitem__, sites), np.int64, len(sites))
    return words[pick], tags[pick], longs


class SiteStateReducer(KeyedReducer):
    """Per-site chats, emails, distinct operators and visitors: the chat summary.

        - site-state-reducer: {}

    Emits one (site_id, messages, emails, operators, visitors) tuple per site, sorted by
    site_id. Exact at any size: its state is spilled to disk, partitioned by key, and
    reduced one bucket at a time within the memory budget (see the README, "State
    layout and memory").
    """

    name = "site-state-reducer"
    accepts = ("site-event",)
    produces = "summary-row"

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        return SUMMARY_FIELDS
    spills = {"ids": ID_ROW, "sites": SITE_ROW, "drops": np.dtype("<u8"),
              "id_longs": None, "site_longs": None}
    phases = 2
    reduce_row_bytes = 200
    reports = ("duplicates",)

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.rows = 0

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "rows": self.rows}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.rows = state["rows"]

    def counters(self) -> dict[str, int]:
        return {"rows": self.rows, "duplicates": 0, **super().counters()}

    # -- map side ---------------------------------------------------------------------
    def update(self, batch: Batch) -> None:
        n = len(batch)
        if not n:
            return
        spill = self._writer()
        nb = self.nbuckets
        iw, itag, ilong = keys.encode([r.id for r in batch])
        sw, stag, slong = _encode_sites([r.site_id for r in batch])
        fw, ftag, flong = keys.encode([r.from_ for r in batch])
        order = self.orders(n)
        sb = keys.bucket_of(keys.mix(sw[:, 0], sw[:, 1], stag), nb)
        ib = keys.bucket_of(keys.mix(iw[:, 0], iw[:, 1], itag), nb)
        ids = np.empty(n, ID_ROW)
        ids["w0"], ids["w1"], ids["order"] = iw[:, 0], iw[:, 1], order
        ids["sb"], ids["tag"] = sb, itag
        rows = np.empty(n, SITE_ROW)
        rows["s0"], rows["s1"], rows["f0"], rows["f1"] = sw[:, 0], sw[:, 1], fw[:, 0], fw[:, 1]
        rows["ts"] = [r.timestamp for r in batch]
        rows["order"] = order
        kinds = [(ONLINE if r.data.status == "online" else OFFLINE) if type(r) is Status else 0
                 for r in batch]
        rows["code"] = np.array(kinds, np.uint8) | (stag << SITE_TAG) | (ftag << FROM_TAG)
        spill.add("ids", ib, ids)
        spill.add("sites", sb, rows)
        self.keep_longs("id_longs", iw, itag, ilong, ib)
        self.keep_longs("site_longs", sw, stag, slong, sb)
        self.keep_longs("site_longs", fw, ftag, flong, sb)
        self.rows += n

    # -- reduce side ------------------------------------------------------------------
    def reduce(self, phase: int, bucket: int, io: ReduceIO) -> Iterable[tuple[Any, Any]] | None:
        if phase == 0:
            self._drop_duplicates(bucket, io)
            return None
        return self._summarize(bucket, io)

    def _drop_duplicates(self, bucket: int, io: ReduceIO) -> None:
        """First id in file order wins: send the order keys of the rest to their site."""
        io.strings("id_longs", bucket)  # refuses two ids with one digest
        rows = io.nbytes("ids", bucket) // ID_ROW.itemsize
        if rows * ID_ROW_BYTES <= io.memory_bytes:
            _drop_later(io.read("ids", bucket), io)
            return
        # too many rows for memory: split by another hash of the id (every copy of an
        # id lands in the same part, still in file order), then a part at a time
        k = int(min(2 * -(-rows * ID_ROW_BYTES // io.memory_bytes), 4096))
        parts = split_frames(os.path.join(io.scratch, f"ids{bucket}"), io.frames("ids", bucket),
                             ID_ROW, k, lambda r: keys.bucket_of(
                                 keys.mix(r["w0"], r["w1"], r["tag"], seed=5), k))
        for b in range(k):
            if parts.nrows("rows", b) * ID_ROW_BYTES <= io.memory_bytes:
                _drop_later(parts.read("rows", b), io)
            else:  # a few ids repeated very many times: a frame at a time
                seen: set[tuple[int, int, int]] = set()
                for frame in parts.frames("rows", b):
                    _drop_later(frame, io, seen)
        shutil.rmtree(os.path.join(io.scratch, f"ids{bucket}"), ignore_errors=True)

    def _summarize(self, bucket: int, io: ReduceIO) -> list[tuple[str, tuple]]:
        drops = np.sort(io.read("drops", bucket))
        strings = io.strings("site_longs", bucket)
        rows = io.nbytes("sites", bucket) // SITE_ROW.itemsize
        if rows * self.reduce_row_bytes <= io.memory_bytes:
            return _summarize_rows(_kept(io.read("sites", bucket), drops), strings)
        big = BigBucket(io, strings, self.reduce_row_bytes, f"b{bucket}")
        return big.summarize(lambda: io.frames("sites", bucket), rows, drops)


def _drop_later(ids: np.ndarray, io: ReduceIO, seen: set | None = None) -> None:
    """Send every id row but the first of its id (rows in file order) to "drops".
    With `seen` (ids met in earlier frames), a first row of an id in it drops too."""
    if not len(ids):
        return
    w0, w1, tag = ids["w0"], ids["w1"], ids["tag"]
    gid, _, first = keys.groups(keys.mix(w0, w1, tag), w0, w1, tag)
    later = np.flatnonzero(first[gid] != np.arange(len(ids)))  # rows are in file order
    if seen is not None:
        firsts = first.tolist()
        met = [i for i in firsts if (int(w0[i]), int(w1[i]), int(tag[i])) in seen]
        seen.update((int(w0[i]), int(w1[i]), int(tag[i])) for i in firsts)
        later = np.concatenate([later, np.array(met, dtype=later.dtype)])
    dropped = ids[later]
    io.count("duplicates", len(dropped))
    io.add("drops", dropped["sb"], dropped["order"])


def _kept(rows: np.ndarray, drops: np.ndarray) -> np.ndarray:
    """The rows whose order key is not among the (sorted) dropped duplicates."""
    if not len(drops) or not len(rows):
        return rows
    at = np.minimum(np.searchsorted(drops, rows["order"]), len(drops) - 1)
    return rows[drops[at] != rows["order"]]


def _summarize_rows(rows: np.ndarray, strings: keys.StringTable) -> list[tuple[str, tuple]]:
    """The summary of every site in `rows` (no duplicates among them), in memory."""
    if not len(rows):
        return []
    code = rows["code"]
    kind = code & 3
    stag, ftag = (code >> SITE_TAG) & 3, (code >> FROM_TAG) & 3
    s0, s1 = rows["s0"], rows["s1"]
    site, nsites, first = keys.groups(keys.mix(s0, s1, stag), s0, s1, stag)
    names = keys.decode_all(s0[first], s1[first], stag[first], strings)
    f0, f1 = rows["f0"], rows["f1"]
    is_status = (kind != 0).astype(np.uint8)
    # distinct senders: group (site, from, status or message) exactly
    _, _, pair_first = keys.groups(keys.mix(site, f0, f1, ftag, is_status, seed=1),
                               site, f0, f1, ftag, is_status)
    st = is_status[pair_first].astype(bool)
    operators = np.bincount(site[pair_first[st]], minlength=nsites)
    visitors = np.bincount(site[pair_first[~st]], minlength=nsites)
    # each status's operator, numbered within this bucket
    frm = np.zeros(len(rows), np.int64)
    s_rows = np.flatnonzero(is_status)
    if len(s_rows):
        frm[s_rows] = keys.groups(keys.mix(site[s_rows], f0[s_rows], f1[s_rows], ftag[s_rows],
                                       seed=2),
                              site[s_rows], f0[s_rows], f1[s_rows], ftag[s_rows])[0]
    chats, messages = classify_messages(
        {"site": site, "frm": frm, "ts": rows["ts"], "kind": kind}, nsites)
    return _result(names, chats, messages, operators, visitors)


def _result(names: list[str], chats: np.ndarray, messages: np.ndarray,
            operators: np.ndarray, visitors: np.ndarray) -> list[tuple[str, tuple]]:
    out = [(names[i], (names[i], int(chats[i]), int(messages[i] - chats[i]),
                       int(operators[i]), int(visitors[i]))) for i in range(len(names))]
    out.sort(key=lambda pair: pair[0])  # code-point order
    return out


PAIR_ROW = np.dtype([("site", "<u4"), ("f0", "<u8"), ("f1", "<u8"), ("tag", "u1")])


class BigBucket:
    """A site bucket larger than its memory share (skew: a few very large sites).

    It is split by another hash of the site into sub-buckets on disk; one that fits is
    summarized in memory. One that still does not fit holds one or a few huge sites and
    is streamed: its statuses are kept (they build each site's timeline), its messages
    are classified a frame at a time, and their distinct senders are spilled by hash and
    counted a sub-bucket at a time. Only one site's statuses must fit in memory.
    """

    def __init__(self, io: ReduceIO, strings: keys.StringTable, row_bytes: int, name: str):
        self.io, self.strings, self.row_bytes, self.name = io, strings, row_bytes, name

    def _scratch(self, label: str, sets: dict[str, Any], n: int) -> SpillWriter:
        path = os.path.join(self.io.scratch, f"{self.name}-{label}")
        shutil.rmtree(path, ignore_errors=True)
        return SpillWriter(path, sets, n, buffer_bytes=4 << 20)

    def summarize(self, frames: Callable[[], Iterator[np.ndarray]], nrows: int,
                  drops: np.ndarray, depth: int = 0) -> list[tuple[str, tuple]]:
        memory = self.io.memory_bytes
        k = int(min(2 * -(-nrows * self.row_bytes // memory), 4096))
        seen: dict[int, set[int]] = {}  # sub-bucket -> up to 2 of its site hashes

        def route(frame: np.ndarray) -> np.ndarray:
            h = keys.mix(frame["s0"], frame["s1"], (frame["code"] >> SITE_TAG) & 3,
                         seed=11 + depth)
            sites = np.unique(h)  # few per frame: the sites of a skewed bucket
            for b, site in zip(keys.bucket_of(sites, k).tolist(), sites.tolist()):
                got = seen.setdefault(b, set())
                if len(got) < 2:
                    got.add(site)
            return keys.bucket_of(h, k)
        where = os.path.join(self.io.scratch, f"{self.name}-split{depth}")
        reader = split_frames(where, (_kept(f, drops) for f in frames()), SITE_ROW, k, route)
        out: list[tuple[str, tuple]] = []
        none = np.zeros(0, np.uint64)
        for b in sorted(seen):
            n = reader.nrows("rows", b)
            sub_frames = (lambda b=b: reader.frames("rows", b))
            if n * self.row_bytes <= memory:
                out += _summarize_rows(reader.read("rows", b), self.strings)
            elif len(seen[b]) > 1 and depth < 3:
                out += self.summarize(sub_frames, n, none, depth + 1)
            else:
                out += self.stream(sub_frames)
        shutil.rmtree(where, ignore_errors=True)
        out.sort(key=lambda pair: pair[0])
        return out

    def stream(self, frames: Callable[[], Iterator[np.ndarray]]) -> list[tuple[str, tuple]]:
        # pass 1: the sites, and every status
        table: dict[tuple[int, int, int], int] = {}
        statuses = []
        for frame in frames():
            stag = (frame["code"] >> SITE_TAG) & 3
            _, _, first = keys.groups(keys.mix(frame["s0"], frame["s1"], stag),
                                  frame["s0"], frame["s1"], stag)
            for i in first.tolist():
                table.setdefault((int(frame["s0"][i]), int(frame["s1"][i]), int(stag[i])),
                                 len(table))
            statuses.append(frame[(frame["code"] & 3) != 0])
        nsites = len(table)
        names = [keys.decode(w0, w1, t, self.strings) for w0, w1, t in table]
        lookup = _SiteLookup(table)
        s = np.concatenate(statuses) if statuses else np.zeros(0, SITE_ROW)
        del statuses
        s_site = lookup(s)
        ftag = (s["code"] >> FROM_TAG) & 3
        s_frm, _, firsts = keys.groups(keys.mix(s_site, s["f0"], s["f1"], ftag, seed=2),
                                   s_site, s["f0"], s["f1"], ftag)
        operators = np.bincount(s_site[firsts], minlength=nsites)
        uts = sorted_unique(s["ts"])  # times as ranks among the status times: exact
        s_t = np.searchsorted(uts, s["ts"], side="right").astype(np.int64)
        timeline = Timeline(s_site, s_frm, s_t, (s["code"] & 3) == ONLINE, nsites, len(uts) + 1)
        del s, s_site, s_frm, s_t, ftag
        # pass 2: messages, a frame at a time; their (site, sender) pairs to disk
        chats = np.zeros(nsites, np.int64)
        messages = np.zeros(nsites, np.int64)
        npairs = int(sum(len(f) for f in frames()))
        k = int(min(max(-(-npairs * 64 // self.io.memory_bytes), 1), 4096))
        pairs = self._scratch("pairs", {"pairs": PAIR_ROW}, k)
        for frame in frames():
            m = frame[(frame["code"] & 3) == 0]
            if not len(m):
                continue
            m_site = lookup(m)
            messages += np.bincount(m_site, minlength=nsites)
            chats += timeline.chats(m_site, np.searchsorted(uts, m["ts"], side="right"))
            ftag = (m["code"] >> FROM_TAG) & 3
            h = keys.mix(m_site, m["f0"], m["f1"], ftag, seed=3)
            _, _, firsts = keys.groups(h, m_site, m["f0"], m["f1"], ftag)
            p = np.empty(len(firsts), PAIR_ROW)
            p["site"], p["f0"], p["f1"], p["tag"] = (m_site[firsts], m["f0"][firsts],
                                                     m["f1"][firsts], ftag[firsts])
            pairs.add("pairs", keys.bucket_of(h[firsts], k), p)
        pairs.mark(durable=False)
        pairs.close()
        # pass 3: distinct senders of messages, a pair bucket at a time
        visitors = np.zeros(nsites, np.int64)
        reader = SpillReader([pairs.dir], {"pairs": PAIR_ROW})
        for b in range(k):
            p = reader.read("pairs", b)
            if len(p):
                h = keys.mix(p["site"], p["f0"], p["f1"], p["tag"], seed=3)
                _, _, firsts = keys.groups(h, p["site"], p["f0"], p["f1"], p["tag"])
                visitors += np.bincount(p["site"][firsts], minlength=nsites)
        shutil.rmtree(pairs.dir, ignore_errors=True)
        return _result(names, chats, messages, operators, visitors)


class _SiteLookup:
    """Rows -> index of their site in a small table, by hash, confirmed exactly."""

    def __init__(self, table: dict[tuple[int, int, int], int]):
        words = np.array(list(table) or [(0, 0, 0)], dtype=np.uint64).reshape(-1, 3)
        h = keys.mix(words[:, 0], words[:, 1], words[:, 2])
        self.order = np.argsort(h)
        self.h, self.words = h[self.order], words[self.order]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        stag = (rows["code"] >> SITE_TAG) & 3
        at = np.minimum(np.searchsorted(self.h, keys.mix(rows["s0"], rows["s1"], stag)),
                        len(self.h) - 1)
        w = self.words[at]
        if not ((w[:, 0] == rows["s0"]) & (w[:, 1] == rows["s1"]) & (w[:, 2] == stag)).all():
            raise ValueError("two sites share a 64-bit hash in one bucket; rerun with a "
                             "larger --memory-mb so that the bucket fits in memory")
        return self.order[at].astype(np.int64)
