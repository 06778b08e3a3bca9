"""Expressions: a condition or a computed value over each record, written in SQL and
evaluated by DuckDB over Arrow columns, one batch at a time.

    - where:  {if: "status >= 500 AND starts_with(path, '/api')"}
    - mutate: {compute: {status_class: "status // 100"}}

An expression is one SQL scalar expression (DuckDB's dialect): field names, literals,
operators, CASE, CAST and the functions in FUNCTIONS. Nothing else is accepted: no
query (SELECT, FROM, subqueries), no aggregate or window, no lambda, no function
outside the list, so nothing reads a file, the network or the environment. It is
parsed when the config is loaded (`parse`), where a syntax error or an unknown function
is a config error that names the column in the expression.

How a record's fields become SQL values (see `Expression.evaluate`):

- a field is named as it is written (`status`, `data.status` inside an object,
  `"odd-name"` quoted); names match exactly, case included;
- a missing field and a JSON null are both NULL; SQL's three-valued logic follows
  (`NULL > 5` is NULL), and a condition that is NULL does not hold;
- each record's values keep their own JSON types: integer -> BIGINT, number -> DOUBLE,
  string -> VARCHAR, true/false -> BOOLEAN, an object -> STRUCT; an integer beyond 64
  bits -> DECIMAL(38,0) (beyond 38 digits: its text); an array -> its JSON text;
- records whose fields have different types are evaluated separately, so a record is
  judged on its own values, never on what else is in its batch;
- a record the expression cannot be computed for (`"-" > 5`: a VARCHAR cannot be
  compared with a number; a CAST that fails) goes to the dead-letter file with
  DuckDB's reason. Use TRY_CAST(x AS BIGINT) or TRY(...) to get NULL instead.
"""
from __future__ import annotations

import decimal
import difflib
import functools
import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from pipeline import Problem
from pipeline.columns import Columns, column_of, values_of

from .fields import MISSING, column, column_values

if TYPE_CHECKING:
    import pyarrow as pa

# what a stage with an expression loads (Stage.loads_with): the memory budget imports
# these and calls this module's warm_up(), to count what DuckDB takes once it works
LOADS = ("pyarrow", "stages.expression")
_PREFIX = "SELECT "
_NOWHERE = (1 << 64) - 1  # DuckDB's query_location when it has none

# Functions an expression may call: name -> (fewest arguments, most (None: any), what).
# Each has a row in the README's table and a test (tests/test_expression.py).
FUNCTIONS: dict[str, tuple[int, int | None, str]] = {
    "lower": (1, 1, "lower-cased text"),
    "upper": (1, 1, "upper-cased text"),
    "length": (1, 1, "characters in a text"),
    "trim": (1, 2, "text without leading and trailing spaces (or the given characters)"),
    "ltrim": (1, 2, "text without leading spaces (or the given characters)"),
    "rtrim": (1, 2, "text without trailing spaces (or the given characters)"),
    "concat": (1, None, "the texts joined (NULL counts as empty)"),
    "concat_ws": (2, None, "the texts joined by the first (NULLs skipped)"),
    "substr": (2, 3, "part of a text: start (1-based), length"),
    "replace": (3, 3, "every occurrence of a text replaced"),
    "starts_with": (2, 2, "whether a text starts with another"),
    "ends_with": (2, 2, "whether a text ends with another"),
    "contains": (2, 2, "whether a text contains another"),
    "strpos": (2, 2, "where a text first occurs in another (1-based; 0: nowhere)"),
    "left": (2, 2, "the first N characters"),
    "right": (2, 2, "the last N characters"),
    "split_part": (3, 3, "the Nth (1-based) piece of a text split at a separator"),
    "regexp_matches": (2, 3, "whether a regular expression (RE2) matches in a text"),
    "regexp_full_match": (2, 3, "whether a regular expression matches the whole text"),
    "regexp_extract": (2, 4, "the match (or group N) of a regular expression"),
    "regexp_replace": (3, 4, "matches of a regular expression replaced ('g': all)"),
    "nullif": (2, 2, "NULL if the two are equal, else the first"),
    "abs": (1, 1, "absolute value"),
    "round": (1, 2, "rounded, half away from zero (to N decimals)"),
    "floor": (1, 1, "rounded down"),
    "ceil": (1, 1, "rounded up"),
    "sign": (1, 1, "-1, 0 or 1"),
    "sqrt": (1, 1, "square root"),
    "ln": (1, 1, "natural logarithm"),
    "log10": (1, 1, "base-10 logarithm"),
    "pow": (2, 2, "x to the power y"),
    "greatest": (1, None, "the largest argument (NULLs skipped)"),
    "least": (1, None, "the smallest argument (NULLs skipped)"),
}
# Operators, by the function name DuckDB gives them.
OPERATORS = {"+", "-", "*", "/", "//", "%", "**", "^", "||", "~~", "!~~", "~~*", "!~~*",
             "regexp_full_match"}
_OPERATOR_NODES = {"OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL",
                   "COMPARE_IN", "COMPARE_NOT_IN", "OPERATOR_COALESCE", "OPERATOR_TRY"}
_PLAIN_NODES = {"CONSTANT", "COMPARISON", "CONJUNCTION", "BETWEEN", "CASE", "CAST"}
_WHAT = {"SUBQUERY": "a subquery", "STAR": "*", "WINDOW": "a window function",
         "LAMBDA": "a lambda", "PARAMETER": "a parameter", "COLLATE": "COLLATE",
         "POSITIONAL_REFERENCE": "a positional reference", "COLUMN_REF": "a column"}
MAX_ISOLATING = 4096  # queries spent per batch finding the records a value error is in


class ExpressionError(ValueError):
    """An expression that cannot be used; `offset` is where in its text (0-based)."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.offset = offset


def problem(exc: ExpressionError, text: str, key: str | None = None) -> Problem:
    """An option check's complaint about expression `text` (the value of `key`, for an
    option that maps names to expressions)."""
    shown = " ".join(text.split())
    at = f"at column {exc.offset + 1} of" if exc.offset is not None and "\n" not in \
        text.strip() else "in"
    what = f"{key!r}: " if key is not None else ""
    return Problem.at(f"is not a valid expression: {what}{exc}, {at} `{shown}`",
                      exc.offset, key)


# -- DuckDB: one in-memory database per process and thread, with no access outside ---
_local = threading.local()


def connection() -> Any:
    con = getattr(_local, "con", None)
    if con is None or _local.pid != os.getpid():  # never a connection from before a fork
        import duckdb
        con = duckdb.connect(":memory:", config={
            "enable_external_access": False, "autoinstall_known_extensions": False,
            "autoload_known_extensions": False, "threads": 1, "lock_configuration": True})
        _local.con, _local.pid = con, os.getpid()
    return con


def warm_up() -> None:
    """Open this process's database and evaluate once: DuckDB's memory at work (about
    60 MB: its libraries, then what its first query allocates), which the memory
    budget counts in every process (pipeline.engine.budget.own_rss)."""
    import pyarrow as pa
    connection().from_arrow(pa.table({"x": [1]})).project("x + 1").fetchall()


# -- parsing ---------------------------------------------------------------------------
def parse(text: Any) -> "Expression":
    """The expression in `text`, checked; ExpressionError says what is wrong and where."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"must be a non-empty SQL expression; got {text!r}")
    return _parse(text)


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> "Expression":
    raw = connection().execute("SELECT json_serialize_sql($1)", [_PREFIX + text]).fetchone()[0]
    doc = json.loads(raw)
    if doc.get("error"):
        message = str(doc.get("error_message", "cannot parse it"))
        if "Only SELECT" in message or "SELECT" in message and "serialize" in message:
            raise ExpressionError("must be one expression, not SQL statements")
        pos = doc.get("position")
        offset = int(pos) - len(_PREFIX) if str(pos or "").isdigit() else None
        if offset is not None:
            offset = min(max(offset, 0), len(text))
        raise ExpressionError(message, offset)
    statements = doc["statements"]
    if len(statements) != 1:
        raise ExpressionError("must be one expression, not SQL statements")
    node = statements[0]["node"]
    if node.get("type") != "SELECT_NODE":
        raise ExpressionError("must be one expression, not a query")
    exprs = node["select_list"]
    if len(exprs) != 1:
        raise ExpressionError(f"must be one expression; got {len(exprs)} separated by "
                              f"commas", _offset(exprs[1], None))
    query = [k for k in ("where_clause", "having", "qualify", "sample") if node.get(k)]
    if (query or node.get("from_table", {}).get("type") != "EMPTY" or node.get("modifiers")
            or node.get("group_expressions") or node.get("cte_map", {}).get("map")):
        raise ExpressionError("must be one expression, not a query (no FROM, WHERE, "
                              "GROUP BY, ORDER BY or LIMIT)")
    top = exprs[0]
    if top.get("alias"):
        raise ExpressionError("takes no alias (AS ...): the field it goes to is named "
                              "in the config", _offset(top, None))
    paths: list[tuple[str, ...]] = []
    _check(top, paths, 0)
    return Expression(text, tuple(dict.fromkeys(paths)))


def _offset(node: dict[str, Any], fallback: int | None) -> int | None:
    loc = node.get("query_location")
    if not isinstance(loc, int) or loc == _NOWHERE or loc < len(_PREFIX):
        return fallback
    return loc - len(_PREFIX)


def _check(node: dict[str, Any], paths: list[tuple[str, ...]], fallback: int) -> None:
    at = _offset(node, fallback)
    kind, sub = node.get("class"), node.get("type")
    if kind == "COLUMN_REF":
        paths.append(tuple(node["column_names"]))
    elif kind == "FUNCTION":
        name = str(node.get("function_name", ""))
        if node.get("is_operator"):
            if name.endswith(("__postfix", "__prefix")):
                raise ExpressionError(f"{name.split('__')[0]!r} is missing a value on one "
                                      f"side", at)
            if name not in OPERATORS:
                raise ExpressionError(f"operator {name!r} is not allowed", at)
        elif name.lower() in FUNCTIONS or name in OPERATORS:
            if name.lower() in FUNCTIONS:
                lo, hi, _ = FUNCTIONS[name.lower()]
                n = len(node.get("children", []))
                if n < lo or hi is not None and n > hi:
                    want = str(lo) if lo == hi else (f"{lo} or more" if hi is None
                                                     else f"{lo} to {hi}")
                    raise ExpressionError(f"function {name}() takes {want} argument"
                                          f"{'' if want == '1' else 's'}; got {n}", at)
        else:
            close = difflib.get_close_matches(name.lower(), FUNCTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ExpressionError(f"unknown function {name!r}{hint} (the README's "
                                  f"\"Expressions\" lists the functions)", at)
        if node.get("distinct") or node.get("filter") or (node.get("order_bys") or {}).get(
                "orders"):
            raise ExpressionError(f"{name}() is not an aggregate: no DISTINCT, FILTER or "
                                  f"ORDER BY in it", at)
    elif kind == "OPERATOR":
        if sub not in _OPERATOR_NODES:
            raise ExpressionError(f"{str(sub).lower().replace('_', ' ')} is not allowed", at)
    elif kind not in _PLAIN_NODES:
        raise ExpressionError(f"{_WHAT.get(str(kind), str(kind).lower())} is not allowed "
                              f"in an expression", at)
    for child in _children(node):
        _check(child, paths, at if at is not None else fallback)


def _children(value: Any) -> list[dict[str, Any]]:
    """The expression nodes directly under a node (through CASE's branches and such)."""
    out: list[dict[str, Any]] = []
    items = value.values() if isinstance(value, dict) else value
    for item in items:
        if isinstance(item, dict):
            out.extend([item] if "class" in item else _children(item))
        elif isinstance(item, list):
            out.extend(_children(item))
    return out


# -- evaluating ------------------------------------------------------------------------
# What a Python value becomes in SQL, by its JSON type (see the module's docstring).
_NULL, _BOOL, _INT, _FLOAT, _STR, _BIG, _TEXT, _OBJECT = -1, 1, 2, 3, 4, 5, 6, 7
_CODES = {bool: _BOOL, int: _INT, float: _FLOAT, str: _STR, type(None): _NULL,
          type(MISSING): _NULL, dict: _OBJECT}
_LIMIT = 1 << 63
_DECIMAL_LIMIT = 10 ** 38
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _code(value: Any) -> int:
    code = _CODES.get(type(value), _TEXT)
    if code == _INT and not -_LIMIT <= value < _LIMIT:
        return _BIG if -_DECIMAL_LIMIT < value < _DECIMAL_LIMIT else _TEXT
    return code


def _sql_array(values: list[Any], code: int) -> pa.Array:
    """Values of one JSON type (or null/missing) as the Arrow array DuckDB reads."""
    import pyarrow as pa
    vals = [None if v is MISSING else v for v in values]
    if code == _NULL:  # no value at all: NULL of no type, which compares with any
        return pa.nulls(len(vals))
    if code == _STR:
        return pa.array(vals, pa.string())
    if code == _BOOL:
        return pa.array(vals, pa.bool_())
    if code == _INT:
        return pa.array(vals, pa.int64())
    if code == _FLOAT:
        return pa.array(vals, pa.float64())
    if code == _BIG:
        return pa.array([None if v is None else decimal.Decimal(v) for v in vals],
                        pa.decimal128(38, 0))
    if code == _OBJECT:  # a STRUCT, as a column of these objects is (Columns)
        made = column_of([MISSING if v is None else v for v in vals], MISSING)
        if made is not None and not made[1]:
            return made[0]
    return pa.array([None if v is None else _encode(v).decode() for v in vals], pa.string())


@dataclass
class Outcome:
    """An expression's value for each record of a batch (`values`, an Arrow array; null
    where it failed) and the records it failed for: index -> DuckDB's reason."""

    values: Any
    failed: dict[int, str]


class Expression:
    """A checked expression: its text and the fields it reads (paths)."""

    def __init__(self, text: str, paths: tuple[tuple[str, ...], ...]):
        self.text = text
        self.paths = paths

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    @property
    def fields(self) -> tuple[str, ...]:
        """The dotted names of the fields it reads."""
        return tuple(".".join(p) for p in self.paths)

    def evaluate(self, batch: Any) -> Outcome:
        """Its value for every record of `batch` (Columns or a Batch of records)."""
        import pyarrow as pa
        n = len(batch)
        inputs = [self._input(batch, p) for p in self.paths]
        mixed = [x for x in inputs if isinstance(x, _Mixed)]
        if not mixed or all(m.one is not None for m in mixed):
            groups = [np.arange(n)]
        else:
            key = np.zeros(n, dtype=np.int64)  # the records' codes as one number
            for m in mixed:
                key = key * 16 + (m.codes.astype(np.int64) + 1)
            order = np.argsort(key, kind="stable")
            bounds = np.flatnonzero(np.diff(key[order])) + 1
            groups = np.split(order, bounds) if n else [order]
        failed: dict[int, str] = {}
        parts: list[tuple[np.ndarray, pa.Array]] = []
        spent = [0]  # DuckDB calls on this batch (MAX_ISOLATING)
        for idx in groups:
            whole = len(idx) == n
            columns = [x.typed(idx, whole) if isinstance(x, _Mixed) else
                       x if whole else x.take(pa.array(idx)) for x in inputs]
            self._run(idx, columns, parts, failed, spent)
        return Outcome(_scatter(parts, n), failed)

    # the value of each path: an Arrow array where every record's value there has one
    # JSON type (or none), else a _Mixed, whose records evaluate() groups by type
    def _input(self, batch: Any, path: tuple[str, ...]) -> Any:
        import pyarrow as pa
        if batch.__class__ is Columns:
            found = batch.find(path)
            if found is None:
                return pa.nulls(len(batch))
            array, json_text, rest = found
            if not rest and not _has_json(array.type):
                return _Mixed(array) if json_text else array
            values = column_values(batch, path)
        else:
            values = batch
            for name in path:
                values = column(name)(values)
        made = column_of(values, MISSING)  # C-level where the values allow
        if made is None:  # text Arrow cannot hold (a lone surrogate): value by value
            return _Mixed(None, values)
        array, json_text = made
        return _Mixed(array) if json_text or _has_json(array.type) else array

    def _table(self, columns: list[pa.Array], n: int) -> pa.Table:
        """The paths' columns as a table DuckDB reads: `a.b` as field b of a struct a."""
        import pyarrow as pa
        tree: dict[str, Any] = {}
        for path, array in zip(self.paths, columns):
            node = tree
            for name in path[:-1]:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):  # the whole object is read too: use it
                    break
                node = child
            else:
                if not isinstance(node.get(path[-1]), dict) or len(path) == 1:
                    node[path[-1]] = array
        def build(node: dict[str, Any]) -> tuple[list[str], list[pa.Array]]:
            names, arrays = [], []
            for name, value in node.items():
                names.append(name)
                if isinstance(value, dict):
                    sub_names, sub_arrays = build(value)
                    arrays.append(pa.StructArray.from_arrays(sub_arrays, sub_names))
                else:
                    arrays.append(value)
            return names, arrays
        names, arrays = build(tree)
        if not names:
            return pa.table({"_": pa.nulls(n)})
        return pa.Table.from_arrays(arrays, names)

    def _run(self, idx: np.ndarray, columns: list[pa.Array],
             parts: list[tuple[np.ndarray, pa.Array]], failed: dict[int, str],
             spent: list[int]) -> None:
        """Evaluate on records `idx`; where DuckDB refuses a value, find the records it
        refuses by halving the group, and keep the others' values."""
        import duckdb
        import pyarrow as pa
        if not len(idx):
            return
        spent[0] += 1
        try:
            rel = connection().from_arrow(self._table(columns, len(idx))).project(self.text)
            fetch = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table  # < 1.4
            result = fetch().column(0).combine_chunks()
        except duckdb.BinderException as exc:  # the values' types: every record alike,
            self._untyped(idx, columns, parts, failed, spent, _reason(exc))  # but NULLs
            return
        except duckdb.Error as exc:
            if len(idx) == 1:
                failed[int(idx[0])] = _reason(exc)
                return
            if spent[0] > MAX_ISOLATING:
                from pipeline.errors import SluiceError
                raise SluiceError(
                    f"the expression `{self.text}` fails for many records of one batch "
                    f"({_reason(exc)}); it is probably wrong for this data: use "
                    f"TRY_CAST(...) or TRY(...) where a value may not fit") from None
            half = len(idx) // 2
            for lo, hi in ((0, half), (half, len(idx))):
                take = pa.array(np.arange(lo, hi))
                self._run(idx[lo:hi], [c.take(take) for c in columns], parts, failed,
                          spent)
            return
        parts.append((idx, result))

    def _untyped(self, idx: np.ndarray, columns: list[pa.Array],
                 parts: list[tuple[np.ndarray, pa.Array]], failed: dict[int, str],
                 spent: list[int], reason: str) -> None:
        """After the types of a group were refused: a NULL has no type, so the records
        with NULLs are evaluated again with those columns NULL of no type (a missing
        `status` is not refused because the others' `status` is text); the rest fail."""
        import pyarrow as pa
        nulls = np.stack([np.asarray(c.is_null(), dtype=bool) if not pa.types.is_null(c.type)
                          else np.zeros(len(c), dtype=bool) for c in columns], axis=1)
        has = nulls.any(axis=1)
        failed.update((int(i), reason) for i in idx[~has])
        if not has.any():
            return
        patterns, which = np.unique(nulls[has], axis=0, return_inverse=True)
        rows = np.flatnonzero(has)
        for k, pattern in enumerate(patterns):
            sub = rows[which.reshape(-1) == k]
            take = pa.array(sub)
            self._run(idx[sub], [pa.nulls(len(sub)) if null else c.take(take)
                                 for c, null in zip(columns, pattern)], parts, failed, spent)


class _Mixed:
    """A field whose values in a batch are of several JSON types: each record's type
    code (`codes`; a null takes the batch's most common type, so that it joins a group
    rather than making one) and, for a group of records, their values as the Arrow
    array of that type (`typed`). From a JSON column (each value's JSON text, worked
    on column-wise), or from Python values where Arrow cannot hold them."""

    def __init__(self, text: Any, values: list[Any] | None = None):
        import pyarrow as pa
        self.text, self.values = text, values
        true = _json_codes(text) if values is None else \
            np.fromiter(map(_code, values), dtype=np.int8, count=len(values))
        if values is None and pa.types.is_struct(text.type):  # objects holding JSON text
            true = np.where(np.asarray(text.is_null(), dtype=bool), _NULL, _OBJECT) \
                .astype(np.int8)
            self.values = values_of(text, False, MISSING)
            self.text = None
        self.true = true
        codes = true.copy()
        nulls = codes == _NULL
        if nulls.any() and not nulls.all():
            codes[nulls] = int(np.argmax(np.bincount(codes[~nulls])))
        self.codes = codes
        kinds = np.unique(codes)
        self.one = int(kinds[0]) if len(kinds) == 1 else None  # the batch is one group

    def typed(self, idx: np.ndarray, whole: bool) -> pa.Array:
        import pyarrow as pa
        import pyarrow.compute as pc
        code = int(self.codes[idx[0]]) if len(idx) else _NULL
        if self.text is None:  # Python values
            assert self.values is not None
            return _sql_array([self.values[i] for i in idx], code)
        part = self.text if whole else self.text.take(pa.array(idx))
        if code == _NULL:
            return pa.nulls(len(idx))
        nulls = self.true[idx] == _NULL
        if nulls.any():  # a JSON null that joined this group: NULL of its type
            part = pc.if_else(pa.array(nulls), pa.scalar(None, pa.string()), part)
        if code == _INT:
            return pc.cast(part, pa.int64())
        if code == _FLOAT:
            return pc.cast(part, pa.float64())
        if code == _BOOL:
            return pc.equal(part, "true")
        if code == _TEXT:  # an array: its JSON text, as it is
            return part
        if code == _STR and not pc.any(pc.match_substring(part, "\\")).as_py():
            return pc.utf8_slice_codeunits(part, 1, -1)  # no escapes: drop the quotes
        values = [MISSING if t is None else _decode(t) for t in part.to_pylist()]
        return _sql_array(values, code)


def _json_codes(text: pa.Array) -> np.ndarray:
    """The type code of each value of a JSON column from its text: `"` a string, t/f a
    boolean, n null, { an object, [ an array; a number is a float if it has a `.`, `e`
    or `E`, else an integer (one of more than 18 digits is checked for 64 bits)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    n = len(text)
    data = text.cast(pa.binary())
    valid = np.asarray(data.is_valid(), dtype=bool)
    first = np.zeros(n, dtype=np.uint8)
    if valid.any():  # the first byte of each text (a JSON text is never empty)
        firsts = pc.binary_slice(data, 0, 1).fill_null(b"\0")
        starts = np.frombuffer(firsts.buffers()[1], dtype=np.int32, count=n + 1,
                               offset=firsts.offset * 4)[:-1]
        first = np.frombuffer(firsts.buffers()[2], dtype=np.uint8)[starts]
    codes = np.full(n, _INT, dtype=np.int8)
    codes[first == ord('"')] = _STR
    codes[(first == ord("t")) | (first == ord("f"))] = _BOOL
    codes[(first == ord("n")) | ~valid] = _NULL
    codes[first == ord("{")] = _OBJECT
    codes[first == ord("[")] = _TEXT
    numbers = codes == _INT
    if numbers.any():
        floats = np.asarray(pc.match_substring_regex(text, "[.eE]").fill_null(False),
                            dtype=bool)
        codes[numbers & floats] = _FLOAT
        long = numbers & ~floats & (np.asarray(pc.utf8_length(text).fill_null(0)) > 18)
        for i in np.flatnonzero(long).tolist():
            codes[i] = _code(_decode(text[i].as_py()))
    return codes


def _has_json(t: Any) -> bool:
    """Whether a struct type holds a JSON column somewhere (its values are JSON text)."""
    import pyarrow as pa
    if not pa.types.is_struct(t):
        return False
    return any((f.metadata or {}).get(b"sluice") == b"json" or _has_json(f.type) for f in t)


def _reason(exc: BaseException) -> str:
    text = str(exc).split("\n", 1)[0].strip()
    for prefix in ("Binder Error: ", "Conversion Error: ", "Out of Range Error: ",
                   "Invalid Input Error: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _scatter(parts: list[tuple[np.ndarray, Any]], n: int) -> Any:
    """One array of n values from the groups' results (null for a failed record)."""
    import pyarrow as pa
    if len(parts) == 1 and len(parts[0][0]) == n and (
            n == 0 or (parts[0][0] == np.arange(n)).all()):
        return parts[0][1]
    types = {p[1].type for p in parts}
    if len(types) == 1:
        t = types.pop()
        order = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        values = pa.concat_arrays([p[1] for p in parts]) if parts else pa.nulls(0, t)
        where = np.full(n, -1, dtype=np.int64)
        where[order] = np.arange(len(order))
        missing = where < 0
        if missing.any():
            values = pa.concat_arrays([values, pa.nulls(1, t)])
            where[missing] = len(order)
        return values.take(pa.array(where))
    out: list[Any] = [None] * n  # groups of different result types: Python values
    for idx, array in parts:
        for i, v in zip(idx.tolist(), array.to_pylist()):
            out[i] = v
    return out


def json_value(value: Any) -> Any:
    """A computed SQL value as the JSON value it stands for; ValueError (the reason a
    record is rejected) for one JSON cannot hold."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"the value is {value}, which JSON cannot hold")
        return value
    if isinstance(value, decimal.Decimal):
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= 0:
            return int(value)
        return json_value(float(value))
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueError("the value is binary (BLOB), which JSON cannot hold")
    if hasattr(value, "isoformat"):  # date, time, datetime
        return value.isoformat()
    return str(value)  # an interval, a UUID: their text


def holds(outcome: Outcome, n: int) -> np.ndarray:
    """Where a condition's outcome is true (NULL, and a failed record, is not); a value
    that is not true or false fails its record (added to outcome.failed)."""
    import pyarrow as pa
    values = outcome.values
    if isinstance(values, list):
        keep = np.zeros(n, dtype=bool)
        for i, v in enumerate(values):
            if v is True:
                keep[i] = True
            elif v is not None and v is not False:
                outcome.failed.setdefault(i, _not_boolean(type(v).__name__))
        return keep
    if pa.types.is_boolean(values.type):
        return np.asarray(values.fill_null(False), dtype=bool)
    if not pa.types.is_null(values.type):
        valid = np.asarray(values.is_valid(), dtype=bool)
        for i in np.flatnonzero(valid).tolist():
            outcome.failed.setdefault(i, _not_boolean(str(values.type)))
    return np.zeros(n, dtype=bool)


def _not_boolean(kind: str) -> str:
    return f"the condition's value is {kind}, not true or false"
