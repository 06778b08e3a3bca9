"""site-state-reducer: SPEC.md's per-site summary, with compact exact state.

State layout (see README "State layout"): one row per valid record, in input order,
in five `array` columns, 33 bytes a row:

    ids   'Q' x2  the id as 16 bytes: a canonical (lower-case) UUID's 128 bits, or,
                  for any other id, its index in `str_ids` (flag 4 in `code`)
    ts    'd'     timestamp
    site  'I'     index into `sites` (site ids as decimal strings)
    frm   'I'     index into `froms`
    code  'B'     0 message, 1 online, 2 offline; +4 when the id is a string

Everything order-dependent (first id wins, ties in file order) is resolved once, in
`finish()`, with numpy sorts over these columns. Rows are kept in input order and
`merge()` appends the later partition after the earlier, so row order *is* file order.
"""
from __future__ import annotations

import re
from array import array
from typing import Any, Iterator

import numpy as np

from pipeline import AppendOnly, Batch, Reducer, unwrap

from .site_event import ONLINE, OFFLINE, Status

STRING_ID = 4
_UUIDS = re.compile(r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})*")
_FILLER = "00000000-0000-0000-0000-000000000000"
COLUMNS = (("ids", "Q"), ("ts", "d"), ("site", "I"), ("frm", "I"), ("code", "B"))


class Interner:
    """Strings <-> dense indices; `keys` may hold aliases (int 123 for "123")."""

    def __init__(self, names: list[str] | None = None):
        self.names: list[str] = names or []
        self.index: dict[Any, int] = {n: i for i, n in enumerate(self.names)}

    def add(self, key: Any) -> int:
        name = key if isinstance(key, str) else str(key)
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.names)
            self.names.append(name)
        self.index[key] = i
        return i

    def lookup_all(self, keys: list[Any]) -> list[int]:
        get = self.index.__getitem__
        try:
            return list(map(get, keys))
        except KeyError:
            for key in set(keys).difference(self.index):
                self.add(key)
            return list(map(get, keys))


class SiteStateReducer(Reducer):
    """Per-site chats, emails, distinct operators and visitors, exactly per SPEC.md.

        - site-state-reducer: {}

    Emits one batch: a (site_id, messages, emails, operators, visitors) tuple per
    site, sorted by site_id.
    """

    name = "site-state-reducer"

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.sites = Interner()
        self.froms = Interner()
        self.str_ids = Interner()
        self.cols = {name: array(code) for name, code in COLUMNS}
        self.duplicates = 0

    # -- ingest -------------------------------------------------------------------
    def update(self, batch: Batch) -> None:
        if not batch:
            return
        c = self.cols
        ids = [r.id for r in batch]
        raw, string_rows = self._id_bytes(ids)
        codes = [(ONLINE if r.data.status == "online" else OFFLINE)
                 if type(r) is Status else 0 for r in batch]
        if string_rows:
            id_words = array("Q", raw)
            for i in string_rows:
                id_words[2 * i] = self.str_ids.add(ids[i])
                id_words[2 * i + 1] = 0
                codes[i] |= STRING_ID
            c["ids"].extend(id_words)
        else:
            c["ids"].frombytes(raw)
        c["code"].fromlist(codes)
        c["ts"].fromlist([r.timestamp for r in batch])
        c["site"].fromlist(self.sites.lookup_all([r.site_id for r in batch]))
        c["frm"].fromlist(self.froms.lookup_all([r.from_ for r in batch]))

    @staticmethod
    def _id_bytes(ids: list[str]) -> tuple[bytes, list[int]]:
        """16 bytes per id, and the rows whose id is not a canonical UUID."""
        bad = []
        if list(map(len, ids)).count(36) != len(ids):
            bad = [i for i, x in enumerate(ids) if len(x) != 36]
            ids = list(ids)
            for i in bad:
                ids[i] = _FILLER
        joined = "".join(ids)
        pos, end, more = 0, len(joined), []
        while True:  # each match runs up to the next 36-char id that is not a UUID
            stop = _UUIDS.match(joined, pos).end()
            if stop >= end:
                break
            more.append(stop // 36)
            pos = stop + 36
        if more:
            ids = list(ids)
            for i in more:
                ids[i] = _FILLER
            joined = "".join(ids)
            bad = sorted(bad + more)
        return bytes.fromhex(joined.replace("-", "")), bad

    # -- state --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cols["ts"])

    def snapshot(self) -> dict[str, Any]:
        # live references, all grow-only: the checkpoint store saves just the new tails
        return {"cols": {k: AppendOnly(v) for k, v in self.cols.items()},
                "sites": AppendOnly(self.sites.names), "froms": AppendOnly(self.froms.names),
                "str_ids": AppendOnly(self.str_ids.names)}

    def restore(self, state: dict[str, Any]) -> None:
        cols = state["cols"]
        self.cols = {name: array(code, unwrap(cols[name])) for name, code in COLUMNS}
        self.sites = Interner(list(unwrap(state["sites"])))
        self.froms = Interner(list(unwrap(state["froms"])))
        self.str_ids = Interner(list(unwrap(state["str_ids"])))

    def merge(self, other: "SiteStateReducer") -> None:
        """Append `other`, which covers input after this one's, re-indexing its tables."""
        if not len(other):
            return
        remap = {}
        for attr in ("sites", "froms", "str_ids"):
            mine: Interner = getattr(self, attr)
            remap[attr] = np.array([mine.add(n) for n in getattr(other, attr).names] or [0],
                                   dtype=np.uint64)
        oc = other.cols
        code = np.frombuffer(oc["code"], np.uint8)
        ids = np.frombuffer(oc["ids"], np.uint64).reshape(-1, 2).copy()
        strings = (code & STRING_ID).astype(bool)
        ids[strings, 0] = remap["str_ids"][ids[strings, 0]]
        self.cols["ids"].frombytes(ids.tobytes())
        for name, attr in (("site", "sites"), ("frm", "froms")):
            col = remap[attr][np.frombuffer(oc[name], np.uint32)].astype(np.uint32)
            self.cols[name].frombytes(col.tobytes())
        self.cols["ts"].extend(oc["ts"])
        self.cols["code"].extend(oc["code"])

    def counters(self) -> dict[str, int]:
        return {"rows": len(self), "duplicates": self.duplicates}

    # -- result -------------------------------------------------------------------
    def finish(self) -> Iterator[Batch]:
        n = len(self)
        c = self.cols
        code = np.frombuffer(c["code"], np.uint8) if n else np.zeros(0, np.uint8)
        ids = np.frombuffer(c["ids"], np.uint64).reshape(n, 2) if n else np.zeros((0, 2), np.uint64)
        keep = first_occurrences(ids[:, 0], ids[:, 1], code >> 2)
        self.duplicates = int(n - keep.sum())
        site = (np.frombuffer(c["site"], np.uint32) if n else np.zeros(0, np.uint32))[keep]
        frm = (np.frombuffer(c["frm"], np.uint32) if n else np.zeros(0, np.uint32))[keep]
        ts = (np.frombuffer(c["ts"], np.float64) if n else np.zeros(0))[keep]
        kind = (code & 3)[keep]
        del code, ids, keep
        nsites, nfroms = len(self.sites.names), max(len(self.froms.names), 1)
        is_status = kind != 0
        operators = distinct_per_site(site[is_status], frm[is_status], nsites, nfroms)
        visitors = distinct_per_site(site[~is_status], frm[~is_status], nsites, nfroms)
        chats, messages = classify_messages(site, frm, ts, kind, nsites)
        present = np.bincount(site, minlength=nsites) > 0
        names = self.sites.names
        yield Batch(sorted((names[i], int(chats[i]), int(messages[i] - chats[i]),
                            int(operators[i]), int(visitors[i]))
                           for i in np.flatnonzero(present)))


def first_occurrences(hi: np.ndarray, lo: np.ndarray, tag: np.ndarray) -> np.ndarray:
    """Mask of rows whose key (hi, lo, tag) has not appeared in an earlier row."""
    n = len(hi)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    # sort on one word first; only rows sharing it need the exact, stable sort
    order = np.argsort(hi)
    hs = hi[order]
    same = hs[1:] == hs[:-1]
    shared = np.zeros(n, dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    rows = np.sort(order[shared])
    if len(rows):
        sub = np.lexsort((rows, lo[rows], tag[rows], hi[rows]))
        r = rows[sub]
        later = ((hi[r][1:] == hi[r][:-1]) & (lo[r][1:] == lo[r][:-1])
                 & (tag[r][1:] == tag[r][:-1]))
        keep[r[1:][later]] = False
    return keep


def sorted_unique(values: np.ndarray) -> np.ndarray:
    # a plain sort: numpy 2's hash-based np.unique is several times slower here
    v = np.sort(values)
    if len(v) < 2:
        return v
    return v[np.concatenate(([True], v[1:] != v[:-1]))]


def distinct_per_site(site: np.ndarray, frm: np.ndarray, nsites: int, nfroms: int) -> np.ndarray:
    pairs = sorted_unique(site.astype(np.int64) * nfroms + frm)
    return np.bincount(pairs // nfroms, minlength=nsites)


def classify_messages(site: np.ndarray, frm: np.ndarray, ts: np.ndarray, kind: np.ndarray,
                      nsites: int) -> tuple[np.ndarray, np.ndarray]:
    """(chats per site, messages per site); rows are deduplicated and in file order."""
    st = np.flatnonzero(kind != 0)
    ms = np.flatnonzero(kind == 0)
    m_site, m_ts = site[ms], ts[ms]
    messages = np.bincount(m_site, minlength=nsites)
    if not len(st) or not len(ms):
        return np.zeros(nsites, np.int64), messages
    s_site, s_frm, s_ts = site[st], frm[st], ts[st]
    s_on = kind[st] == ONLINE
    # 1. each status's effect on its site's online-operator count (-1, 0, +1): an
    #    operator's statuses in time order, ties in file order (lexsort is stable)
    o = np.lexsort((s_ts, s_frm, s_site))
    on = s_on[o]
    same_op = (s_site[o][1:] == s_site[o][:-1]) & (s_frm[o][1:] == s_frm[o][:-1])
    was = np.zeros(len(o), dtype=bool)
    was[1:] = on[:-1] & same_op
    delta = np.empty(len(o), dtype=np.int64)
    delta[o] = on.astype(np.int64) - was
    # 2. the site's count after each status, statuses in (site, time, file) order
    t = np.lexsort((s_ts, s_site))
    t_site, t_ts, d = s_site[t], s_ts[t], delta[t]
    total = np.cumsum(d)
    starts = np.ones(len(t), dtype=bool)
    starts[1:] = t_site[1:] != t_site[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(t)), 0))
    count = total - (total[first] - d[first])
    # 3. each message sees the last status of its site at or before its time: rank
    #    times by the distinct status times so (site, rank) is one sortable integer
    uts = sorted_unique(t_ts)
    width = len(uts) + 1
    s_key = t_site.astype(np.int64) * width + np.searchsorted(uts, t_ts, side="right")
    m_key = m_site.astype(np.int64) * width + np.searchsorted(uts, m_ts, side="right")
    j = np.searchsorted(s_key, m_key, side="right") - 1
    jc = np.maximum(j, 0)
    online = (j >= 0) & (t_site[jc] == m_site) & (count[jc] > 0)
    return np.bincount(m_site[online], minlength=nsites), messages
