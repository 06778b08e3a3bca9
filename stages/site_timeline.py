"""The time-ordered part of the chat summary: when each site is online, and which
messages are chats. Pure numpy over the columns of one bucket; used by
site_state_reducer."""
from __future__ import annotations

import numpy as np

from .site_event import ONLINE


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


class Timeline:
    """Each site's online-operator count after each of its statuses, ready to classify
    any number of messages (all at once, or chunk by chunk).

    `t` are integer time keys (see time_keys) below `width`; ties keep row (= file) order.
    """

    def __init__(self, s_site: np.ndarray, s_frm: np.ndarray, s_t: np.ndarray,
                 s_on: np.ndarray, nsites: int, width: int):
        # 1. each status's effect on its site's online-operator count (-1, 0, +1): one
        #    operator's statuses in time order, ties in file order
        nfroms = int(s_frm.max()) + 1 if len(s_frm) else 1
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
        self.t_site, d = s_site[t], delta[t]
        total = np.cumsum(d)
        starts = np.ones(len(t), dtype=bool)
        starts[1:] = self.t_site[1:] != self.t_site[:-1]
        first = np.maximum.accumulate(np.where(starts, np.arange(len(t)), 0))
        self.count = total - (total[first] - d[first])
        # (width <= rows + 1 or 2**40 here and nsites <= rows: no int64 overflow)
        self.s_key = self.t_site.astype(np.int64) * width + s_t[t]
        self.width, self.nsites = width, nsites

    def chats(self, m_site: np.ndarray, m_t: np.ndarray) -> np.ndarray:
        """3. Chats per site among these messages: each sees the last status of its
        site at or before its time. Only totals are needed, so the keys are sorted."""
        if not len(self.s_key) or not len(m_site):
            return np.zeros(self.nsites, np.int64)
        m_key = m_site.astype(np.int64)
        m_key *= self.width
        m_key += m_t
        m_key.sort()
        j = np.searchsorted(self.s_key, m_key, side="right")
        j -= 1
        m_site_sorted = m_key // self.width
        del m_key
        jc = np.maximum(j, 0)
        online = (j >= 0) & (self.t_site[jc] == m_site_sorted) & (self.count[jc] > 0)
        return np.bincount(m_site_sorted[online], minlength=self.nsites)


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
    timeline = Timeline(s_site, s_frm, s_t, s_on, nsites, width)
    return timeline.chats(m_site, m_t), messages
