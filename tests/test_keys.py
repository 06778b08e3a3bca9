"""Exact keys: every string has one key, equal keys mean equal strings, hashes only group."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from pipeline import keys

HASH_OF_ABC = 11113159281098618499  # keys.hash_bytes of b"abc": fixed, never salted

ODD = ["visitor7", "", "a", "a\x00", "x" * 15, "x" * 16, "héllo", "é" * 8, "✓" * 6,
       "45094d07-e2cf-11e4-9454-56847afe9799",          # canonical UUID
       "45094D07-E2CF-11E4-9454-56847AFE9799",          # upper case: just a string
       "45094d07e2cf11e49454-56847afe9799--",           # dashes elsewhere
       "45094d07-e2cf-11e4-9454-56847afe979g",          # not hex
       "45094d07-e2cf-11e4-9454-56847afe97 9",          # a space
       "00000000-0000-0000-0000-000000000000",          # digits only
       "45094d07-e2cf-11e4-9454-56847afe979é",          # 36 characters, not ASCII
       "someone.with.a.long.address@example.com"]


def roundtrip(values):
    words, tags, longs = keys.encode(values)
    table = keys.StringTable()
    table.add(longs.items())
    return [keys.decode(w[0], w[1], t, table) for w, t in zip(words, tags)], words, tags


def test_every_string_decodes_to_itself():
    """decode(encode(s)) == s for UUIDs, short and long strings, NUL and non-ASCII."""
    got, _, tags = roundtrip(ODD)
    assert got == ODD
    assert tags.tolist() == [1, 1, 1, 1, 1, 2, 1, 2, 2, 0, 2, 2, 2, 2, 0, 2, 2]


@pytest.mark.parametrize("neighbours", [[], ["x"], ["é"], [str(uuid.UUID(int=5))] * 3,
                                        ["y" * 40]])
def test_a_key_does_not_depend_on_the_rest_of_the_batch(neighbours):
    """The same string gets the same key whatever it is encoded with (fast paths or not)."""
    alone = [keys.encode([v]) for v in ODD]
    words, tags, _ = keys.encode(neighbours + ODD)
    for i, (w, t, _) in enumerate(alone):
        assert words[len(neighbours) + i].tolist() == w[0].tolist()
        assert tags[len(neighbours) + i] == t[0]


def test_a_batch_of_uuids_takes_the_vectorised_path_exactly():
    """25,000 UUIDs (1% upper case: not canonical) encode and decode exactly."""
    ids = [str(uuid.UUID(int=i * 7919 + 3)) for i in range(25_000)]
    ids = [x.upper() if i % 100 == 0 else x for i, x in enumerate(ids)]
    got, _, tags = roundtrip(ids)
    assert got == ids
    assert (tags == keys.UUID).sum() == sum(x == x.lower() for x in ids) > 24_700


def test_string_table_refuses_two_strings_for_one_key():
    """A long key only ever counts as one string: a clash is refused, never merged."""
    table = keys.StringTable()
    table.add([((1, 2), "a")])
    table.add([((1, 2), "a")])
    with pytest.raises(ValueError, match=r"two strings share the 128-bit key \(1, 2\): 'a' "
                                         r"and 'b'; exact counting cannot continue"):
        table.add([((1, 2), "b")])


def test_grouping_is_exact_even_when_every_hash_collides():
    """groups() confirms on the real columns: equal hashes alone never join keys."""
    a = np.array([1, 2, 1, 3, 2, 1], np.uint64)
    b = np.array([9, 9, 9, 9, 8, 9], np.uint64)
    for h in (np.zeros(len(a), np.uint64), keys.mix(a, b)):  # all collide / none do
        gid, n, first = keys.groups(h, a, b)
        members = sorted([i for i in range(len(a)) if gid[i] == g] for g in range(n))
        assert members == [[0, 2, 5], [1], [3], [4]]
        assert sorted(first.tolist()) == [0, 1, 3, 4]  # the earliest row of each group


def test_buckets_spread_keys_evenly():
    """mix + bucket_of route 100,000 keys to 16 buckets within 5% of even."""
    words, tags, _ = keys.encode([f"visitor{i}" for i in range(100_000)])
    counts = np.bincount(keys.bucket_of(keys.mix(words[:, 0], words[:, 1], tags), 16))
    assert counts.min() > 100_000 / 16 * 0.95 and counts.max() < 100_000 / 16 * 1.05


def test_hash_bytes_is_the_same_for_the_same_bytes_wherever_they_lie():
    values = [b"", b"a", b"ab", b"ba", b"", b"a\x00", b"\x00a", b"x" * 5000, b"ab", b"\xff" * 9]
    offsets = np.cumsum([0] + [len(v) for v in values])
    data = np.frombuffer(b"".join(values), np.uint8)
    h = keys.hash_bytes(offsets, data)
    assert h[0] == h[4] and h[2] == h[8]  # equal bytes, equal hashes
    assert len({int(x) for x in h}) == 8  # and the 8 different strings differ
    # a slice of the offsets (an Arrow array's view) hashes its strings the same
    assert keys.hash_bytes(offsets[2:5], data).tolist() == h[2:4].tolist()
    # the same in every process and every run: routing depends on it
    assert int(keys.hash_bytes(np.array([0, 3]), np.frombuffer(b"abc", np.uint8))[0]) == \
        HASH_OF_ABC
