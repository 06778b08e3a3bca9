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

from typing import Any, Iterable

import numpy as np

from pipeline import keys
from pipeline.keyed import KeyedReducer, ReduceIO
from pipeline.stage import Batch

from .site_event import ONLINE, OFFLINE, Status

ID_ROW = np.dtype([("w0", "<u8"), ("w1", "<u8"), ("order", "<u8"), ("sb", "<u4"),
                   ("tag", "u1")])
SITE_ROW = np.dtype([("s0", "<u8"), ("s1", "<u8"), ("f0", "<u8"), ("f1", "<u8"),
                     ("ts", "<f8"), ("order", "<u8"), ("code", "u1")])
# code: bits 0-1 message/online/offline, 2-3 the site key's tag, 4-5 the from key's tag
KIND, SITE_TAG, FROM_TAG = 0, 2, 4


def _route_longs(longs: dict[tuple[int, int], str], words: np.ndarray, tags: np.ndarray,
                 buckets: np.ndarray) -> dict[int, list[tuple[int, int, str]]]:
    """The long strings of a batch, grouped by the bucket their rows went to."""
    out: dict[int, list[tuple[int, int, str]]] = {}
    for i in np.flatnonzero(tags == keys.LONG).tolist():
        key = (int(words[i, 0]), int(words[i, 1]))
        out.setdefault(int(buckets[i]), []).append((*key, longs[key]))
    return out


def _encode_sites(sites: list[Any]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Keys of site ids (an int is its decimal string); few distinct ones per batch."""
    distinct = list(dict.fromkeys(sites))
    index = {s: i for i, s in enumerate(distinct)}
    words, tags, longs = keys.encode([s if type(s) is str else str(s) for s in distinct])
    pick = np.fromiter(map(index.__getitem__, sites), np.int64, len(sites))
    return words[pick], tags[pick], longs


def _strings(io: ReduceIO, name: str, bucket: int) -> keys.StringTable:
    table = keys.StringTable()
    for frame in io.frames(name, bucket):
        table.add(((w0, w1), s) for w0, w1, s in frame)
    return table


def _groups(h: np.ndarray, *exact: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """(group of each row, number of groups, the first row of each group)."""
    order, starts = keys.group_equal(h, *exact)
    gid = np.empty(len(h), np.int64)
    gid[order] = np.cumsum(starts) - 1
    return gid, int(starts.sum()), order[starts]


class SiteStateReducer(KeyedReducer):
    """Per-site chats, emails, distinct operators and visitors: the chat summary.

        - site-state-reducer: {}

    Emits one (site_id, messages, emails, operators, visitors) tuple per site, sorted by
    site_id. Exact at any size: its state is spilled to disk, partitioned by key, and
    reduced one bucket at a time within the memory budget (see the README, "State
    layout and memory").
    """

    name = "site-state-reducer"
    spills = {"ids": ID_ROW, "sites": SITE_ROW, "drops": np.dtype("<u8"),
              "id_longs": None, "site_longs": None}
    phases = 2
    reduce_row_bytes = 200

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
        ids["w0"], ids["w1"], ids["order"], ids["sb"], ids["tag"] = iw[:, 0], iw[:, 1], order, sb, itag
        rows = np.empty(n, SITE_ROW)
        rows["s0"], rows["s1"], rows["f0"], rows["f1"] = sw[:, 0], sw[:, 1], fw[:, 0], fw[:, 1]
        rows["ts"] = [r.timestamp for r in batch]
        rows["order"] = order
        kinds = [(ONLINE if r.data.status == "online" else OFFLINE) if type(r) is Status else 0
                 for r in batch]
        rows["code"] = np.array(kinds, np.uint8) | (stag << SITE_TAG) | (ftag << FROM_TAG)
        spill.add("ids", ib, ids)
        spill.add("sites", sb, rows)
        if ilong:
            for b, items in _route_longs(ilong, iw, itag, ib).items():
                spill.add_objects("id_longs", b, items)
        if slong or flong:
            for w, t, table in ((sw, stag, slong), (fw, ftag, flong)):
                if table:
                    for b, items in _route_longs(table, w, t, sb).items():
                        spill.add_objects("site_longs", b, items)
        self.rows += n

    # -- reduce side ------------------------------------------------------------------
    def reduce(self, phase: int, bucket: int, io: ReduceIO) -> Iterable[tuple[Any, Any]] | None:
        if phase == 0:
            self._drop_duplicates(bucket, io)
            return None
        return self._summarize(bucket, io)

    def _drop_duplicates(self, bucket: int, io: ReduceIO) -> None:
        """First id in file order wins: send the order keys of the rest to their site."""
        ids = io.read("ids", bucket)
        if not len(ids):
            return
        _strings(io, "id_longs", bucket)  # refuses two ids with one digest
        w0, w1, tag = ids["w0"], ids["w1"], ids["tag"]
        order, starts = keys.group_equal(keys.mix(w0, w1, tag), w0, w1, tag)
        later = ids[order[~starts]]
        io.count("duplicates", len(later))
        io.add("drops", later["sb"], later["order"])

    def _summarize(self, bucket: int, io: ReduceIO) -> list[tuple[str, tuple]]:
        rows = io.read("sites", bucket)
        drops = io.read("drops", bucket)
        if len(drops):
            rows = rows[~np.isin(rows["order"], drops)]
        if not len(rows):
            return []
        strings = _strings(io, "site_longs", bucket)
        code = rows["code"]
        kind = code & 3
        stag, ftag = (code >> SITE_TAG) & 3, (code >> FROM_TAG) & 3
        s0, s1 = rows["s0"], rows["s1"]
        site, nsites, first = _groups(keys.mix(s0, s1, stag), s0, s1, stag)
        names = [keys.decode(s0[i], s1[i], stag[i], strings) for i in first.tolist()]
        f0, f1 = rows["f0"], rows["f1"]
        is_status = (kind != 0).astype(np.uint8)
        # distinct senders: group (site, from, status or message) exactly
        _, _, pair_first = _groups(keys.mix(site, f0, f1, ftag, is_status, seed=1),
                                   site, f0, f1, ftag, is_status)
        st = is_status[pair_first].astype(bool)
        operators = np.bincount(site[pair_first[st]], minlength=nsites)
        visitors = np.bincount(site[pair_first[~st]], minlength=nsites)
        # each status's operator, numbered within this bucket
        frm = np.zeros(len(rows), np.int64)
        s_rows = np.flatnonzero(is_status)
        if len(s_rows):
            frm[s_rows] = _groups(keys.mix(site[s_rows], f0[s_rows], f1[s_rows], ftag[s_rows],
                                           seed=2),
                                  site[s_rows], f0[s_rows], f1[s_rows], ftag[s_rows])[0]
        chats, messages = classify_messages(
            {"site": site, "frm": frm, "ts": rows["ts"], "kind": kind}, nsites)
        out = [(names[i], (names[i], int(chats[i]), int(messages[i] - chats[i]),
                           int(operators[i]), int(visitors[i]))) for i in range(nsites)]
        out.sort(key=lambda pair: pair[0])  # code-point order
        return out


def sorted_unique(values: np.ndarray) -> np.ndarray:
    # a plain sort: numpy 2's hash-based np.unique is several times slower here
    v = np.sort(values)
    if len(v) < 2:
        return v
    return v[np.concatenate(([True], v[1:] != v[:-1]))]


def time_keys(s_ts: np.ndarray, m_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Order-preserving int64 keys for status and message times, and their bound.

    When every time is exactly a whole number of seconds, milliseconds or microseconds
    (the double nearest to k/scale), k itself, shifted to start at 0, is the key:
    distinct times give distinct k in the same order. Otherwise a time's key is the
    number of distinct status times at or before it: coarser, but a message and a
    status still compare exactly as their times do.
    """
    lo = min(s_ts.min(), m_ts.min())
    hi = max(s_ts.max(), m_ts.max())
    for scale in (1.0, 1e3, 1e6):
        if (hi - lo) * scale >= 2 ** 40 or max(abs(lo), abs(hi)) * scale >= 2 ** 52:
            break
        s_k, m_k = np.round(s_ts * scale), np.round(m_ts * scale)
        if np.array_equal(s_k / scale, s_ts) and np.array_equal(m_k / scale, m_ts):
            base = round(lo * scale)
            return ((s_k - base).astype(np.int64), (m_k - base).astype(np.int64),
                    int(round(hi * scale) - base) + 1)
    uts = sorted_unique(s_ts)
    return (np.searchsorted(uts, s_ts, side="right").astype(np.int64),
            np.searchsorted(uts, m_ts, side="right").astype(np.int64), len(uts) + 1)


COMPOSITE_LIMIT = 2 ** 62  # larger (group, time) spaces fall back to lexsort


def stable_order(groups: np.ndarray, ngroups: int, tkey: np.ndarray, width: int) -> np.ndarray:
    """Row order by (group, time key), ties in row (= file) order."""
    if ngroups * width < COMPOSITE_LIMIT:
        return np.argsort(groups.astype(np.int64) * width + tkey, kind="stable")
    return np.lexsort((tkey, groups))


def classify_messages(rows: dict[str, np.ndarray], nsites: int) -> tuple[np.ndarray, np.ndarray]:
    """(chats per site, messages per site).

    `rows` holds the deduplicated site, frm, ts and kind columns in file order; they
    are popped, so each is freed as soon as it has been split into statuses/messages.
    """
    kind = rows.pop("kind")
    st = np.flatnonzero(kind != 0)
    ms = np.flatnonzero(kind == 0)
    s_on = kind[st] == ONLINE
    del kind
    site = rows.pop("site")
    m_site, s_site = site[ms], site[st]
    del site
    s_frm = rows.pop("frm")[st]
    ts = rows.pop("ts")
    s_ts, m_ts = ts[st], ts[ms]
    del ts, st, ms
    messages = np.bincount(m_site, minlength=nsites)
    if not len(s_site) or not len(m_site):
        return np.zeros(nsites, np.int64), messages
    s_t, m_t, width = time_keys(s_ts, m_ts)
    del s_ts, m_ts
    # 1. each status's effect on its site's online-operator count (-1, 0, +1): one
    #    operator's statuses in time order, ties in file order
    nfroms = int(s_frm.max()) + 1
    op = s_site.astype(np.int64) * nfroms + s_frm
    o = stable_order(op, nsites * nfroms, s_t, width)
    on = s_on[o]
    same_op = op[o][1:] == op[o][:-1]
    was = np.zeros(len(o), dtype=bool)
    was[1:] = on[:-1] & same_op
    delta = np.empty(len(o), dtype=np.int64)
    delta[o] = on.astype(np.int64) - was
    del o, on, same_op, was, op
    # 2. the site's count after each status, statuses in (site, time, file) order
    t = stable_order(s_site, nsites, s_t, width)
    t_site, d = s_site[t], delta[t]
    total = np.cumsum(d)
    starts = np.ones(len(t), dtype=bool)
    starts[1:] = t_site[1:] != t_site[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(t)), 0))
    count = total - (total[first] - d[first])
    # 3. each message sees the last status of its site at or before its time; only
    #    per-site totals are needed, so the message keys can simply be sorted.
    #    (width <= rows + 1 or 2**40 here and nsites <= rows: no int64 overflow)
    s_key = t_site.astype(np.int64) * width + s_t[t]
    m_key = m_site.astype(np.int64)
    del m_site
    m_key *= width
    m_key += m_t
    del m_t
    m_key.sort()
    j = np.searchsorted(s_key, m_key, side="right")
    j -= 1
    m_site_sorted = m_key // width
    del m_key
    jc = np.maximum(j, 0)
    online = (j >= 0) & (t_site[jc] == m_site_sorted) & (count[jc] > 0)
    return np.bincount(m_site_sorted[online], minlength=nsites), messages
