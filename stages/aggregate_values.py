"""aggregate's values: their identity, their total order, and each group's partial
metrics of one batch's column (min, max, exact sums, first and last, the percentile
and distinct-count states), the per-record work of stages/aggregate.py."""
from __future__ import annotations

import math
import operator
from typing import Any

import msgspec
import numpy as np

from . import aggregate_sketches as sketches
from .fields import MISSING

SCALE = 1074  # every finite double is an integer multiple of 2**-1074
_NONE = object()


def _missing_as_null(obj: Any) -> None:
    if obj is MISSING:
        return None
    raise TypeError(f"aggregate cannot compare a {type(obj).__name__}: {obj!r}")


# a group's or a value's identity: its JSON text, object keys sorted, MISSING as null
identity_key = msgspec.json.Encoder(order="sorted", enc_hook=_missing_as_null).encode

# one partial aggregate: [records, slot per metric]; a slot is None until a value came:
#   min/max: (order key, value)    sum: [int total, float total * 2**1074, all -0.0]
#   first/last: (file order, value)   avg: sum's three, then the number of values
#   percentile, approx_count_distinct: see aggregate_sketches
#   count, count_distinct: unused (count is the record count; distinct values are
#   spilled as pairs and counted in the first reduce phase)


def json_identity(value: Any) -> str:
    """The group's (or a distinct value's) identity: its JSON text, object keys sorted.
    Equal texts are equal values: 1, 1.0, "1" and true are four different values."""
    return identity_key(value).decode()


def order_key(value: Any) -> tuple[Any, ...]:
    """The total order of values, across types: null < false < true < numbers <
    strings < arrays < objects. Numbers compare by value (an int and a float exactly);
    of two equal numbers the int comes first, and -0.0 before 0.0. Strings compare by
    code point, arrays element by element, objects by their json_identity JSON text."""
    if value is None:
        return (0,)
    if value is True or value is False:
        return (1, value)
    if isinstance(value, int):
        return (2, value, 0, 0)
    if isinstance(value, float):
        return (2, value, 1, 0 if math.copysign(1.0, value) < 0 else 1)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, (list, tuple)):
        return (4, tuple(map(order_key, value)))
    return (5, json_identity(value))


def _extremes(i: int, least: bool, col: list[Any], gids: list[int],
              accs: list[list[Any]]) -> None:
    """Each group's least (or greatest) value of one batch's column, as (key, value)."""
    if _numeric_extremes(i, least, col, gids, accs):
        return
    best: dict[int, Any] = {}
    better = operator.lt if least else operator.gt
    for g, v in zip(gids, col):
        if v is None or v is MISSING:
            continue
        old = best.get(g, _NONE)
        if old is _NONE:
            best[g] = v
        elif (v.__class__ is int or v.__class__ is float) and \
                (old.__class__ is int or old.__class__ is float) and v != old:
            if better(v, old):  # numbers: exact, also an int against a float
                best[g] = v
        elif better(order_key(v), order_key(old)):
            best[g] = v
    for g, v in best.items():
        accs[g][i] = (order_key(v), v)


_ABSENT = {type(None), type(MISSING)}
_EXACT = float(1 << 53)  # ints below this in size are exact as doubles


def _numeric_extremes(i: int, least: bool, col: list[Any], gids: list[int],
                      accs: list[list[Any]]) -> bool:
    """_extremes() in numpy, for a column of numbers (beside missing values and nulls):
    ints within 64 bits, or floats and ints below 2**53 (exact as doubles), without a
    zero (-0.0 and 0.0 are equal to numpy, not to the order). Of an int and a float
    of equal value, min keeps the int and max the float, as order_key() says.
    False, with nothing done, for any other column."""
    kinds = set(map(type, col))
    number = kinds - _ABSENT
    if not number or not number <= {int, float}:
        return False
    values = col
    g = np.array(gids, np.int64)
    if kinds != number:
        picked = [j for j, v in enumerate(col) if v.__class__ is int or v.__class__ is float]
        values, g = [col[j] for j in picked], g[picked]
    is_int = None
    try:
        if number == {int}:
            arr = np.array(values, np.int64)
        else:
            arr = np.array(values, np.float64)
            if int in number:
                is_int = np.fromiter((v.__class__ is int for v in values), bool, len(values))
                if is_int.any() and np.abs(arr[is_int]).max() >= _EXACT:
                    return False
            if not arr.all():
                return False
    except OverflowError:  # an int beyond 64 bits (or beyond the doubles)
        return False
    limit = np.iinfo(np.int64).max if number == {int} else np.inf
    best = np.full(int(g.max()) + 1, limit if least else -limit, arr.dtype)
    (np.minimum if least else np.maximum).at(best, g, arr)
    present = np.unique(g)
    if is_int is None:
        for k, v in zip(present.tolist(), best[present].tolist()):
            accs[k][i] = (order_key(v), v)
        return True
    tied = arr == best[g]  # the records holding their group's best value
    wanted = np.zeros(len(best), bool)  # min: an int holds it; max: a float does
    wanted[g[tied & (is_int if least else ~is_int)]] = True
    as_int = wanted if least else ~wanted
    for k, v, whole in zip(present.tolist(), best[present].tolist(),
                           as_int[present].tolist()):
        v = int(v) if whole else v
        accs[k][i] = (order_key(v), v)
    return True


_KIND = {int: 1, float: 2}


def number_kinds(col: list[Any]) -> np.ndarray:
    """Each value's kind: 1 an int, 2 a float, 0 anything else (bools are not ints)."""
    get = _KIND.get
    return np.fromiter([get(t, 0) for t in map(type, col)], np.int8, len(col))


def _sums(i: int, col: list[Any], gids: list[int], accs: list[list[Any]],
          counted: bool = False) -> None:
    """Each group's exact sum of one batch's column (numbers only: checked before),
    and with `counted`, how many numbers it summed (for avg). Ints that cannot
    overflow 64 bits are summed in numpy; floats one by one, exactly (_scaled)."""
    kinds = number_kinds(col)
    g = np.asarray(gids, np.int64)
    ints: dict[int, int] = {}
    rows = np.flatnonzero(kinds == 1)
    values = _int64s([col[j] for j in rows.tolist()])
    if values is not None:
        gi = g[rows]
        order = np.argsort(gi, kind="stable")
        gi = gi[order]
        starts = np.flatnonzero(np.r_[True, gi[1:] != gi[:-1]])
        ints = dict(zip(gi[starts].tolist(), np.add.reduceat(values[order], starts).tolist()))
    else:
        for j in rows.tolist():
            ints[gids[j]] = ints.get(gids[j], 0) + col[j]
    floats: dict[int, int] = {}
    signed: set[int] = set()  # groups with a value other than -0.0
    for j in np.flatnonzero(kinds == 2).tolist():
        v, k = col[j], gids[j]
        floats[k] = floats.get(k, 0) + _scaled(v)
        if v != 0.0 or math.copysign(1.0, v) > 0:
            signed.add(k)
    for k, total in ints.items():
        accs[k][i] = [total, floats.get(k), False]
    for k, scaled in floats.items():
        if k not in ints:
            accs[k][i] = [0, scaled, k not in signed]
    if counted:
        numbers = np.bincount(g[kinds > 0])
        for k in np.flatnonzero(numbers).tolist():
            accs[k][i].append(int(numbers[k]))


def _int64s(values: list[int]) -> np.ndarray | None:
    """Ints as int64, if none of their sums can overflow (else None)."""
    if not values:
        return None
    try:
        array = np.array(values, np.int64)
    except OverflowError:
        return None
    if max(-int(array.min()), int(array.max())) >= (1 << 62) // len(array):
        return None
    return array


def _firsts(i: int, last: bool, col: list[Any], gids: list[int], orders: Any,
            accs: list[list[Any]]) -> None:
    """Each group's first (or last) value of one batch's column, as (file order,
    value); the rows are in file order, `orders` their order keys."""
    picked = [j for j, v in enumerate(col) if v is not None and v is not MISSING]
    if not picked:
        return
    g = np.array(gids, np.int64)[picked]
    if last:
        g = g[::-1]
        picked.reverse()
    present, at = np.unique(g, return_index=True)  # each group's earliest row here
    for k, j in zip(present.tolist(), at.tolist()):
        row = picked[j]
        accs[k][i] = (int(orders[row]), col[row])


def _scaled(x: float) -> int:
    """x * 2**1074, exactly (an integer for every finite double)."""
    n, d = x.as_integer_ratio()
    return n << (SCALE + 1 - d.bit_length())


def _sum_result(s: list[Any], count: int | None = None) -> Any:
    """The exact sum (an int if every value was one), or with `count` the exact
    average: either rounded once to a double; None beyond the double range."""
    total, scaled, negzero = s[:3]
    if scaled is None and count is None:
        return total  # every value was an integer
    exact = (total << SCALE) + (scaled or 0)
    if exact == 0:
        return -0.0 if negzero else 0.0
    try:
        return exact / ((count or 1) << SCALE)  # int / int: correctly rounded
    except OverflowError:
        return None  # beyond the double range


def _quantiles(i: int, col: list[Any], gids: list[int], accs: list[list[Any]]) -> None:
    """Each group's percentile state of one batch's column (numbers, checked before)."""
    kinds = number_kinds(col)
    picked = np.flatnonzero(kinds)
    if not len(picked):
        return
    values = sketches.as_doubles([col[j] for j in picked.tolist()])
    floats = kinds[picked] == 2
    g = np.array(gids, np.int64)[picked]
    order = np.argsort(g, kind="stable")
    g, values, floats = g[order], values[order], floats[order]
    cuts = np.flatnonzero(np.diff(g)) + 1
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(g)]):
        accs[int(g[lo])][i] = sketches.quantile_state(values[lo:hi],
                                                       not floats[lo:hi].any())


def _distincts(i: int, col: list[Any], gids: list[int], accs: list[list[Any]]) -> None:
    """Each group's approx_count_distinct state of one batch's column."""
    sets: dict[int, set[bytes]] = {}
    for g, v in zip(gids, col):
        if v is not None and v is not MISSING:
            sets.setdefault(g, set()).add(identity_key(v))
    for g, texts in sets.items():
        accs[g][i] = sketches.distinct_state(texts)
