"""Exact, fixed-width keys for strings, so that spilled state is numpy rows, not objects.

Every key is two uint64 words plus a 2-bit tag:

    UUID   a canonical (lower-case, dashed) UUID: its 128 bits
    SHORT  a string of at most 15 UTF-8 bytes: the bytes, zero-padded, and the length
    LONG   anything longer: a 128-bit BLAKE2b digest of its UTF-8 bytes

UUID and SHORT keys are the value itself, so equal keys are equal strings. A LONG key is
a digest; `encode()` hands back each LONG string with its key, a reducer keeps them in
a string table beside its rows, and `StringTable.add()` refuses two different strings
with one digest, so two keys only ever count as one after the real values were compared.

    encode(["visitor7", "45094d07-e2cf-11e4-9454-56847afe9799"])
    -> words [[b'visitor7'..., 8], [0x45094d07e2cf11e4, 0x945456847afe9799]], tags [1, 0]

`mix()` turns keys into well-spread 64-bit hashes for routing rows to buckets and for
sorting; a hash only groups keys, never decides that two keys are equal.
"""
from __future__ import annotations

import binascii
import hashlib
import uuid
from operator import itemgetter
from typing import Any, Iterable

import numpy as np

UUID, SHORT, LONG = 0, 1, 2
SHORT_MAX = 15

_DASHES = np.array([8, 13, 18, 23])


_CLASS = bytes(ord("h") if chr(c) in "0123456789abcdef" else ord("-") if c == 45 else ord("x")
                for c in range(256))
_PATTERN = b"hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh"
_PATTERN_ROW = np.frombuffer(_PATTERN, np.uint8)
_FILLER = np.frombuffer(b"00000000-0000-0000-0000-000000000000", np.uint8)


def _uuid_rows(text: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Words of n 36-byte strings laid end to end, and which are canonical UUIDs.

    A canonical UUID is lower-case hex with dashes at 8, 13, 18 and 23; its 16 bytes
    are kept in order, each word 8 of them read little-endian. Rows that are not
    canonical get meaningless words and False.
    """
    shape = text.translate(_CLASS)
    if shape == _PATTERN * n:
        ok = np.ones(n, dtype=bool)
    else:
        grid = np.frombuffer(text, np.uint8).reshape(n, 36).copy()
        bad = np.unique(np.flatnonzero(
            np.frombuffer(shape, np.uint8).reshape(n, 36) != _PATTERN_ROW) // 36)
        ok = np.ones(n, dtype=bool)
        ok[bad] = False
        grid[bad] = _FILLER
        text = grid.tobytes()
    raw = binascii.unhexlify(text.translate(None, b"-"))
    return np.frombuffer(raw, "<u8").reshape(n, 2).copy(), ok


def encode(values: list[str]) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], str]]:
    """(words (n, 2) uint64, tags (n,) uint8, {LONG key: its string}) for `values`."""
    n = len(values)
    tags = np.full(n, SHORT, np.uint8)
    longs: dict[tuple[int, int], str] = {}
    if not n:
        return np.zeros((n, 2), np.uint64), tags, longs
    lens_list = list(map(len, values))
    joined = "".join(values)
    ascii_only = joined.isascii()
    if ascii_only and lens_list.count(36) == n:  # ids: usually all UUIDs
        words, ok = _uuid_rows(joined.encode("ascii"), n)
        tags = np.where(ok, UUID, LONG).astype(np.uint8)
        for i in np.flatnonzero(~ok).tolist():
            words[i] = _long(values[i], longs)
        return words, tags, longs
    if ascii_only:
        raw: Any = values
        blens = np.array(lens_list, np.int64)
    else:
        raw = [v.encode("utf-8") for v in values]
        blens = np.fromiter(map(len, raw), np.int64, n)
    words = np.zeros((n, 2), np.uint64)
    short = np.flatnonzero(blens <= SHORT_MAX)
    if len(short):
        picked = raw if len(short) == n else _pick(raw, short)
        grid = np.zeros((len(short), 16), np.uint8)
        grid[:, :SHORT_MAX] = np.array(picked, dtype=f"S{SHORT_MAX}").view(np.uint8).reshape(
            len(short), SHORT_MAX)
        grid[:, SHORT_MAX] = blens[short]
        words[short] = grid.view("<u8").reshape(-1, 2)
    u = np.flatnonzero(blens == 36)
    if len(u):
        picked = _pick(raw, u)
        text = "".join(picked).encode("ascii") if ascii_only else b"".join(picked)
        w, ok = _uuid_rows(text, len(u))
        words[u] = w
        tags[u] = np.where(ok, UUID, LONG)
    long_rows = np.flatnonzero((blens > SHORT_MAX) & (tags != UUID))
    if len(long_rows):
        tags[long_rows] = LONG
        memo: dict[str, tuple[int, int]] = {}  # a batch repeats its long keys (groups)
        for i in long_rows.tolist():
            text = values[i]
            key = memo.get(text)
            if key is None:
                key = memo[text] = _long(text, longs)
            words[i] = key
    return words, tags, longs


def _pick(items: list[Any], idx: np.ndarray) -> list[Any]:
    got = itemgetter(*idx.tolist())(items)
    return [got] if len(idx) == 1 else list(got)


def _long(text: str, longs: dict[tuple[int, int], str]) -> tuple[int, int]:
    key = long_key(text.encode("utf-8"))
    longs[key] = text
    return key


def long_key(raw: bytes) -> tuple[int, int]:
    d = hashlib.blake2b(raw, digest_size=16).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


def decode(w0: int, w1: int, tag: int, strings: "StringTable | None" = None) -> str:
    """The string a key stands for (LONG keys need the string table)."""
    b = int(w0).to_bytes(8, "little") + int(w1).to_bytes(8, "little")
    if tag == UUID:
        return str(uuid.UUID(bytes=b))
    if tag == SHORT:
        return b[:b[15]].decode("utf-8")
    if strings is None:
        raise KeyError("a LONG key needs its string table")
    return strings[(int(w0), int(w1))]


def decode_all(w0: Any, w1: Any, tags: Any, strings: "StringTable | None" = None
               ) -> list[str]:
    """decode() of every key in the columns (one call for many keys)."""
    return [decode(a, b, t, strings) for a, b, t in zip(np.asarray(w0).tolist(),
                                                        np.asarray(w1).tolist(),
                                                        np.asarray(tags).tolist())]


class StringTable(dict):
    """LONG key -> string, checked: one key never stands for two strings."""

    def add(self, items: Iterable[tuple[tuple[int, int], str]]) -> None:
        for key, text in items:
            old = self.setdefault(key, text)
            if old != text:
                raise ValueError(f"two strings share the 128-bit key {key}: {old!r} and "
                                 f"{text!r}; exact counting cannot continue")


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _fmix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit affects every output bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def mix(*columns: Any, seed: int = 0) -> np.ndarray:
    """A 64-bit hash of each row of the given integer columns (same length)."""
    with np.errstate(over="ignore"):
        h = np.full(len(columns[0]), np.uint64(seed) * _GOLD + _GOLD, np.uint64)
        for col in columns:
            h = _fmix(h ^ np.asarray(col).astype(np.uint64, copy=False)) + _GOLD
        return _fmix(h)


_P = np.uint64(0x100000001B3)  # FNV's 64-bit prime: odd, so every power is odd too
_POWERS = np.ones(1, np.uint64)


def hash_bytes(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each byte string `data[offsets[i]:offsets[i + 1]]` (the layout
    of an Arrow binary column), for routing: the same bytes hash the same in every
    process, and a hash never decides that two strings are equal.

    Each byte b at position k of its string adds (b + 1) * P**k (mod 2**64), summed
    per string with one cumulative sum; mix() spreads the sum and the length."""
    global _POWERS
    offsets = np.asarray(offsets, np.int64)
    lens = np.diff(offsets)
    base = int(offsets[0]) if len(offsets) else 0
    raw = np.asarray(data[base:int(offsets[-1]) if len(offsets) else 0], np.uint8)
    longest = int(lens.max()) if len(lens) else 0
    if len(_POWERS) < longest:
        with np.errstate(over="ignore"):
            grown = np.full(max(longest, 2 * len(_POWERS)), _P, np.uint64)
            grown[0] = 1
            _POWERS = np.cumprod(grown, dtype=np.uint64)
    starts = offsets[:-1] - base
    pos = np.arange(len(raw), dtype=np.int64) - np.repeat(starts, lens)
    with np.errstate(over="ignore"):
        terms = (raw.astype(np.uint64) + np.uint64(1)) * _POWERS[pos]
        sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(terms, dtype=np.uint64)])
        return mix(sums[offsets[1:] - base] - sums[starts], lens)


def hash_texts(values: list[bytes]) -> np.ndarray:
    """hash_bytes() of each byte string in a list."""
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, len(values)), out=offsets[1:])
    return hash_bytes(offsets, np.frombuffer(b"".join(values), np.uint8))


def bucket_of(h: np.ndarray, nbuckets: int) -> np.ndarray:
    """Bucket index of each hash; the high bits, so sub-splits can use the low ones."""
    return ((h >> np.uint64(32)) % np.uint64(nbuckets)).astype(np.uint32)


def groups(h: np.ndarray, *exact: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Group rows whose exact columns are all equal: (group of each row, number of
    groups, the earliest row of each group).

    Rows are grouped by the hash `h`; then every row is compared, on the exact columns,
    with the earliest row of its group. Only if one differs (a 64-bit collision) are the
    groups made again by sorting on the exact columns themselves.
    """
    n = len(h)
    if not n:
        return np.zeros(0, np.int64), 0, np.zeros(0, np.int64)
    _, gid = np.unique(h, return_inverse=True)
    if not all((col == col[_earliest(gid, n)[gid]]).all() for col in exact):
        order = np.lexsort(tuple(reversed(exact)))
        change = np.zeros(n, dtype=bool)
        for col in exact:
            c = col[order]
            change[1:] |= c[1:] != c[:-1]
        gid = np.empty(n, np.int64)
        gid[order] = np.cumsum(change)
    gid = gid.astype(np.int64, copy=False).reshape(-1)
    first = _earliest(gid, n)
    return gid, len(first), first


def _earliest(gid: np.ndarray, n: int) -> np.ndarray:
    first = np.full(int(gid.max()) + 1, n, np.int64)
    np.minimum.at(first, gid, np.arange(n))
    return first
