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

from array import array
from typing import Any, Iterator

import numpy as np

from pipeline import AppendOnly, Batch, Reducer, unwrap

from .site_event import ONLINE, OFFLINE, Status

STRING_ID = 4
_DASH_COLS = np.array([8, 13, 18, 23])
_HEX_COLS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])
_HEX_VALUE = np.full(256, 255, dtype=np.uint8)  # lower-case hex only: canonical form
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_FILLER = "00000000-0000-0000-0000-000000000000"
COLUMNS = (("ids", "Q"), ("ts", "d"), ("site", "I"), ("frm", "I"), ("code", "B"))


class Interner:
    """Strings <-> dense indices; `keys` may hold aliases (int 123 for "123")."""

    def __init__(self, names: list[str] | None = None):
        self.names: list[str] = names or []
        self.index: dict[Any, int] = {n: i for i, n in enumerate(self.names)}

    def add(self, key: Any) -> int:
        # store a fresh copy: keys allocated back to back stay close in memory, which
        # halved the cost of looking up 50k visitor names (cache misses dominate)
        name = (key + " ")[:-1] if isinstance(key, str) else str(key)
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.names)
            self.names.append(name)
        if not isinstance(key, str):
            self.index[key] = i  # an int site_id is an alias of its decimal string
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
        # partial states merged in after this one's own rows, already re-indexed; kept
        # as separate numpy segments so a merge never reallocates the growing columns
        self.merged: list[dict[str, np.ndarray]] = []
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
        """16 bytes per id, and the rows whose id is not a canonical UUID.

        Vectorised: the ids are joined, viewed as an (n, 36) byte matrix, checked
        against the canonical lower-case layout and hex-decoded by table lookup.
        """
        n = len(ids)
        fixed = ids  # copied only when some id must be replaced by a filler
        odd = []
        if list(map(len, ids)).count(36) != n:
            odd = [i for i, x in enumerate(ids) if len(x) != 36]
            fixed = list(ids)
            for i in odd:
                fixed[i] = _FILLER
        joined = "".join(fixed)
        if not joined.isascii():
            fixed = list(fixed)
            for i, x in enumerate(fixed):
                if not x.isascii():
                    odd.append(i)
                    fixed[i] = _FILLER
            joined = "".join(fixed)
        grid = np.frombuffer(joined.encode("ascii"), np.uint8).reshape(n, 36)
        nibbles = _HEX_VALUE[grid[:, _HEX_COLS]]
        ok = (nibbles < 16).all(axis=1) & (grid[:, _DASH_COLS] == 45).all(axis=1)
        raw = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).astype(np.uint8)
        bad = sorted(set(odd).union(np.flatnonzero(~ok).tolist()))
        return raw.tobytes(), bad

    # -- state --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cols["ts"]) + sum(len(seg["ts"]) for seg in self.merged)

    def _fold(self) -> None:
        """Move merged segments into the array columns (only needed for a snapshot)."""
        for seg in self.merged:
            for name, _ in COLUMNS:
                self.cols[name].frombytes(memoryview(np.ascontiguousarray(seg[name])).cast("B"))
        self.merged = []

    def snapshot(self) -> dict[str, Any]:
        self._fold()
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
        other._fold()
        if not len(other):
            return
        remap = {}
        for attr in ("sites", "froms", "str_ids"):
            mine: Interner = getattr(self, attr)
            remap[attr] = np.array([mine.add(n) for n in getattr(other, attr).names] or [0],
                                   dtype=np.uint32)
        oc = other.cols
        seg = {name: np.frombuffer(oc[name], code) for name, code in
               (("ts", np.float64), ("code", np.uint8))}
        ids = np.frombuffer(oc["ids"], np.uint64)
        strings = np.flatnonzero(seg["code"] & STRING_ID)
        if len(strings):
            ids = ids.copy()
            ids[2 * strings] = remap["str_ids"][ids[2 * strings]]
        seg["ids"] = ids
        for name, attr in (("site", "sites"), ("frm", "froms")):
            seg[name] = remap[attr][np.frombuffer(oc[name], np.uint32)]
        self.merged.append(seg)

    def counters(self) -> dict[str, int]:
        return {"rows": len(self), "duplicates": self.duplicates}

    # -- result -------------------------------------------------------------------
    def _take(self, name: str) -> np.ndarray:
        """One whole column as a numpy array, released from this reducer."""
        dtype = {"Q": np.uint64, "d": np.float64, "I": np.uint32, "B": np.uint8}[
            self.cols[name].typecode]
        parts = [np.frombuffer(self.cols[name], dtype)] if len(self.cols[name]) else []
        parts += [seg.pop(name) for seg in self.merged]
        self.cols[name] = array(self.cols[name].typecode)
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    def finish(self) -> Iterator[Batch]:
        """The summary. Consumes the rows: columns are freed as soon as they are used,
        which keeps the peak at 10M rows well under the sum of all temporaries."""
        ids = self._take("ids").reshape(-1, 2)
        code = self._take("code")
        n = len(code)
        keep = first_occurrences(ids[:, 0], ids[:, 1], code >> 2)
        del ids
        self.duplicates = int(n - np.count_nonzero(keep))
        kind = (code & 3)[keep]
        del code
        site = self._take("site")[keep]
        frm = self._take("frm")[keep]
        ts = self._take("ts")[keep]
        del keep
        self.merged = []
        nsites, nfroms = len(self.sites.names), max(len(self.froms.names), 1)
        is_status = kind != 0
        operators = distinct_per_site(site[is_status], frm[is_status], nsites, nfroms)
        visitors = distinct_per_site(site[~is_status], frm[~is_status], nsites, nfroms)
        del is_status
        present = np.bincount(site, minlength=nsites) > 0
        rows = {"site": site, "frm": frm, "ts": ts, "kind": kind}
        del site, frm, ts, kind
        chats, messages = classify_messages(rows, nsites)
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
