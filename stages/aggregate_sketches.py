"""aggregate's bounded metrics: percentile(F, P) and approx_count_distinct(F).

Both keep a small state per group that merges exactly, in any order: a run split over 1
or 8 workers, or killed and resumed with partial aggregates cut at other places, gives
the same answer to the last bit.

percentile: a group's values are kept as they are while it has at most EXACT_MAX of
them, and the percentile is then exact (the nearest rank, as DuckDB's quantile_disc).
Beyond that they become a log-bucket histogram, the mapping of DDSketch (Masson, Rim and
Lee, VLDB 2019): bucket k holds the values in (GAMMA**(k-1), GAMMA**k], with one bucket
for zero and a mirror image for negative values. Merging adds counts, so the histogram of
a group does not depend on how its values were split, and the answer is within ALPHA
relative error of the exact nearest-rank value (clamped to the exact min and max). The
Apache DataSketches quantile sketches (KLL, REQ, t-digest) were measured and not used:
their answer depends on the order of updates and merges (KLL's compactions are random),
so two runs of one input print two answers.

approx_count_distinct: a group's distinct values (their JSON texts) are kept while there
are at most EXACT_MAX of them, and counted exactly; beyond that, HyperLogLog registers of
their 64-bit hashes, which merge by max, so the estimate depends on the set of values
only. DataSketches' HyperLogLog was measured and not used: the same 1,000 values gave 999
in one sketch and 1,009 merged from two, and 300,000 gave 300,182 and 297,188.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from pipeline import keys

EXACT_MAX = 1024        # values a group keeps as they are; exact percentiles up to here
ALPHA = 0.01            # relative error of a percentile beyond EXACT_MAX values
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)
OFFSET = 1 << 20        # a value's code: sign * (bucket + OFFSET); buckets are ±80,000
HLL_P = 12              # 4,096 registers: relative standard error 1.04 / 64 = 1.6%
_BIG = np.finfo(np.float64).max

# one group's percentile state: [n, least, greatest, all ints, values, codes, counts]
#   values: the values (float64 bytes: compact to hold and spill) while n <= EXACT_MAX,
#   else None;
#   codes, counts: the histogram (numpy int64 arrays, codes ascending) once n > EXACT_MAX


def as_doubles(values: list[Any]) -> np.ndarray:
    """Numbers (int or float) as doubles; ints beyond the double range saturate."""
    try:
        return np.array(values, np.float64)
    except OverflowError:
        return np.array([v if v.__class__ is float or abs(v) < 2 ** 1023
                         else math.copysign(_BIG, v) for v in values], np.float64)


def codes_of(values: np.ndarray) -> np.ndarray:
    """Each value's histogram bucket, as a code that sorts in the values' order."""
    mag = np.abs(values)
    with np.errstate(divide="ignore"):
        keys = np.ceil(np.log(mag) / LOG_GAMMA)
    codes = np.where(mag > 0, keys + OFFSET, 0).astype(np.int64)
    return np.where(values < 0, -codes, codes)


def _histogram(state: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    if state[4] is None:
        return state[5], state[6]
    return np.unique(codes_of(np.frombuffer(state[4], np.float64)), return_counts=True)


def _order(x: float) -> tuple[float, float]:
    return x, math.copysign(1.0, x)  # -0.0 before 0.0, as aggregate orders values


def quantile_state(values: np.ndarray, all_int: bool) -> list[Any]:
    """The state of one group's values (a non-empty array of doubles)."""
    least, greatest = float(values.min()), float(values.max())
    if least == 0.0 or greatest == 0.0:  # which zero: not the one numpy happened to meet
        zeros = values[values == 0.0]
        signs = np.signbit(zeros)
        least = -0.0 if least == 0.0 and signs.any() else least
        greatest = 0.0 if greatest == 0.0 and not signs.all() else greatest
    state = [len(values), least, greatest, all_int, None, None, None]
    if len(values) <= EXACT_MAX:
        state[4] = values.astype(np.float64).tobytes()
    else:
        state[5], state[6] = np.unique(codes_of(values), return_counts=True)
    return state


def merge_quantiles(a: list[Any], b: list[Any]) -> None:
    """Fold state b into state a."""
    n = a[0] + b[0]
    a[0], a[3] = n, a[3] and b[3]
    a[1], a[2] = min(a[1], b[1], key=_order), max(a[2], b[2], key=_order)
    if a[4] is not None and b[4] is not None and n <= EXACT_MAX:
        a[4] = a[4] + b[4]
        return
    (ca, na), (cb, nb) = _histogram(a), _histogram(b)
    codes, inverse = np.unique(np.concatenate([ca, cb]), return_inverse=True)
    a[4], a[5] = None, codes
    a[6] = np.bincount(inverse, np.concatenate([na, nb]), len(codes)).astype(np.int64)


def rank_of(p: Fraction, n: int) -> int:
    """The nearest rank (1-based) of percentile p of n values: ceil(p/100 * n), at least 1."""
    return max(1, math.ceil(p * n / 100))


def quantile(state: list[Any], p: Fraction) -> Any:
    """Percentile p (0-100) of a group's values: exact up to EXACT_MAX values (an int if
    they all were), else within ALPHA relative error (a float)."""
    n, least, greatest, all_int, values = state[:5]
    rank = rank_of(p, n)
    if values is not None:
        array = np.frombuffer(values, np.float64)
        value = float(np.partition(array, rank - 1)[rank - 1])
        if value == 0.0:  # -0.0 ranks before 0.0
            below = int((array < 0).sum()) + int(np.signbit(array[array == 0.0]).sum())
            value = -0.0 if rank <= below else 0.0
        return int(value) if all_int else value
    if rank == 1 or rank == n:  # the least and greatest values are known exactly
        value = least if rank == 1 else greatest
        return int(value) if all_int else value
    codes, counts = state[5], state[6]
    code = int(codes[np.searchsorted(np.cumsum(counts), rank)])
    if code == 0:
        value = 0.0
    else:
        key = abs(code) - OFFSET
        value = math.copysign(2 * math.exp(key * LOG_GAMMA) / (GAMMA + 1), code)
    return min(max(value, least), greatest)


def hll_registers(texts: list[bytes]) -> np.ndarray:
    """The HyperLogLog registers of some values' JSON texts: register (the first
    HLL_P bits of a text's 64-bit hash) = the most leading zeros + 1 of the rest."""
    h = keys.hash_texts(texts)
    index = (h >> np.uint64(64 - HLL_P)).astype(np.int64)
    rest = h & np.uint64((1 << (64 - HLL_P)) - 1)
    high, low = (rest >> np.uint64(32)).astype(np.float64), (rest & np.uint64(0xFFFFFFFF))
    # bit length of `rest`, exactly: frexp's exponent of a double that holds it exactly
    length = np.where(high > 0, 32 + np.frexp(high)[1], np.frexp(low.astype(np.float64))[1])
    registers = np.zeros(1 << HLL_P, np.uint8)
    np.maximum.at(registers, index, (64 - HLL_P + 1 - length).astype(np.uint8))
    return registers


def distinct_state(texts: set[bytes]) -> list[Any]:
    """One group's approx_count_distinct state: [the distinct texts while there are at
    most EXACT_MAX of them, else None; the registers once there are more, else None]."""
    if len(texts) <= EXACT_MAX:
        return [texts, None]
    return [None, hll_registers(list(texts))]


def merge_distinct(a: list[Any], b: list[Any]) -> None:
    """Fold state b into state a."""
    if a[0] is not None and b[0] is not None:
        union = a[0] | b[0]
        if len(union) <= EXACT_MAX:
            a[0] = union
            return
        a[0], a[1] = None, hll_registers(list(union))
        return
    ra = a[1] if a[0] is None else hll_registers(list(a[0]))
    rb = b[1] if b[0] is None else hll_registers(list(b[0]))
    a[0], a[1] = None, np.maximum(ra, rb)


def distinct_estimate(state: list[Any]) -> int:
    """The exact count up to EXACT_MAX distinct values, else HyperLogLog's estimate by
    Ertl's improved estimator (arXiv:1702.01284, algorithm 6), which is unbiased over
    the whole range without empirical correction tables."""
    if state[0] is not None:
        return len(state[0])
    m, q = 1 << HLL_P, 64 - HLL_P
    c = np.bincount(state[1], minlength=q + 2).tolist()
    z = m * _tau(1 - c[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + c[k])
    z += m * _sigma(c[0] / m)
    return round(m * m / (2 * math.log(2)) / z)


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        old, z = z, z + x * y
        y += y
        if z == old:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        y *= 0.5
        old, z = z, z - (1 - x) ** 2 * y
        if z == old:
            return z / 3
