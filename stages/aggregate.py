"""aggregate: group-by with exact counts, distinct counts, min, max, sum, avg, first,
last and top values, and bounded percentiles and approximate distinct counts."""
from __future__ import annotations

import heapq
import re
from fractions import Fraction
from operator import itemgetter
from typing import Any, Iterable, NamedTuple

import msgspec
import numpy as np

from pipeline import Batch, Option, keys
from pipeline.contracts import missing_fields
from pipeline.keyed import ArrowTables, KeyedReducer, ReduceIO

from . import aggregate_sketches as sketches
from .aggregate_values import (_distincts, _extremes, _firsts, _quantiles, _sum_result, _sums,
                               order_key)
from .aggregate_values import identity_key as _key
from .failures import DROPPED, KEPT, ON_FAILURE
from .fields import MISSING, column, path_of, reject_records, set_in, show
from .windows import CLOSED, WINDOW, WINDOW_FIELDS, Windowed, names_problem, window_of, with_closed

FUNCTIONS = ("count", "count_distinct", "approx_count_distinct", "min", "max", "sum", "avg",
             "first", "last", "top", "percentile")
NUMERIC = ("sum", "avg", "percentile")  # a record whose field is another value is rejected
TOP_MAX = 1000
_METRIC = re.compile(r"\s*([a-z_]+)\s*(?:\(\s*([^(),\s]*)\s*(?:,\s*([^(),\s]*)\s*)?\)\s*)?\Z")
_SPEC_HELP = ("count, count_distinct(F), approx_count_distinct(F), min(F), max(F), sum(F), "
              "avg(F), first(F), last(F), top(F, N) or percentile(F, P)")
_decode = msgspec.json.decode


class Metric(NamedTuple):
    func: str
    field: str | None
    arg: Any = None  # top's N (an int), percentile's P (a Fraction)


_SUMMABLE = {int, float, type(None), type(MISSING)}


def _argument(func: str, text: str | None, spec: str) -> Any:
    """top's N or percentile's P, checked; or the reason it is wrong (a str)."""
    if func == "top":
        if text is None:
            return 10
        if not re.fullmatch(r"[0-9]+", text) or not 1 <= int(text) <= TOP_MAX:
            return f"`top` takes a count from 1 to {TOP_MAX}, as in top(path, 5); got {spec!r}"
        return int(text)
    if text is None or not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) \
            or not 0 <= Fraction(text) <= 100:
        return (f"`percentile` takes a percentage from 0 to 100, as in "
                f"percentile(latency, 95); got {spec!r}")
    return Fraction(text)


def parse_metric(spec: Any) -> Metric | str:
    """Metric("min", "timestamp") for "min(timestamp)", or the reason it is not a metric."""
    m = _METRIC.match(spec) if isinstance(spec, str) else None
    if m is None or m.group(1) not in FUNCTIONS:
        return f"expected {_SPEC_HELP}; got {spec!r}"
    func, field, arg = m.groups()
    if func == "count":
        if field is not None:
            return f"`count` counts records and takes no field; got {spec!r}"
        return Metric(func, None)
    if not field or "" in field.split("."):
        example = {"top": "top(path, 5)", "percentile": "percentile(latency, 95)"}
        return (f"`{func}` needs a field, as in "
                f"{example.get(func, func + '(timestamp)')}; got {spec!r}")
    if func in ("top", "percentile"):
        value = _argument(func, arg, spec)
        return value if isinstance(value, str) else Metric(func, field, value)
    if arg is not None:
        return f"`{func}` takes one field; got {spec!r}"
    return Metric(func, field)


class Aggregate(Windowed, KeyedReducer):
    """Group records by fields and compute metrics of each group.

        - aggregate:
            by: [site_id, type]
            metrics:
              records: count
              senders: count_distinct(from)
              first: min(timestamp)
              p95: percentile(latency, 95)

    Emits one object per group: the `by` fields, then the metrics in config order. A
    dotted `by` field reads a nested value (`data.status`) and writes it nested the
    same way (`{"data": {"status": ...}}`, which csv-output's column `data.status`
    reads). `by: []` makes one group of all records. A missing `by` field is null.

    Values keep their JSON types and are equal when their JSON texts are (object keys
    sorted): 1, 1.0, "1" and true are four groups, so site_id 123 and "123" are two
    (`- mutate: {convert: {site_id: str}}` before aggregate makes them one). Groups
    come out sorted by their values, field by field, in one order across types:
    null < false < true < numbers < strings < arrays < objects; numbers by value
    (an int before an equal float, -0.0 before 0.0), strings by code point, arrays
    element by element, objects by their JSON text.

    - `count`: records in the group.
    - `count_distinct(F)`: distinct values of F (equal as above); 0 if none.
    - `approx_count_distinct(F)`: the same, exact up to 1,024 distinct values, beyond
      that a HyperLogLog estimate (4,096 registers: relative standard error 1.6%).
    - `min(F)`, `max(F)`: the least / greatest value of F in the order above, so
      numbers come before strings whatever their values (min of 3 and "a" is 3, max
      is "a"); of 1 and 1.0, min is 1 and max is 1.0. null if F had no value.
    - `sum(F)`: exact, independent of how the input was split: an int if every value
      was an int, else the exact sum rounded once to the nearest double (as
      math.fsum); null if F had no value or the sum is beyond the double range.
    - `avg(F)`: the exact sum over the number of values, rounded once to a double.
    - `first(F)`, `last(F)`: the value of F in the group's first / last record (in
      file order) that has one.
    - `top(F, N)`: the N most frequent values of F, as [{"value": v, "count": n}, ...],
      most frequent first, ties in the order above; exact. N defaults to 10.
    - `percentile(F, P)`: the nearest-rank P-th percentile (0-100) of F's numbers
      (the least value with at least P% of the values at or below it, as DuckDB's
      quantile_disc): exact while the group has at most 1,024 values, beyond that within
      1% of the exact value (a mergeable log-bucket histogram); the 0th and 100th are
      always exact. Numbers are compared as doubles.

    `sum`, `avg` and `percentile` need numbers: a record whose F is a string, bool,
    array or object is sent to the dead-letter file (`field 'F': sum(F) needs a number,
    got 'abc'`); with `on_failure: drop` it is dropped, with `on_failure: keep` it
    still counts and that value of F counts as missing, for every metric of F (there
    is no record to give a `_failures` field: aggregate emits groups). A record whose metric field is missing or null does not count towards
    that metric (`count` still counts it). Every metric is independent of how the input
    was split over workers, and of where a killed run resumed.

    With `window: {field: ts, size: 1m, slide: 1m, allowed_lateness: 0s}`, groups are
    per event-time window too: each row starts with window_start and window_end, and
    rows come out by window, then group (see stages/windows.py; a followed run emits a
    window once the watermark passes its end).

    The state is spilled by a hash of the group (partial aggregates of about 65,536
    records at a time, and the distinct (group, value) pairs of distinct counts and top
    values, as Arrow tables), so memory does not grow with the number of groups; equal
    groups and values are always confirmed on their JSON texts, never on a hash alone.
    """

    name = "aggregate"
    accepts = ("object", "site-event")
    produces = "object"
    options = (
        Option("by", list, doc="fields to group by, in order (may be empty: one group)"),
        Option("metrics", dict, doc="{name: count | count_distinct(F) | "
                                    "approx_count_distinct(F) | min(F) | max(F) | sum(F) | "
                                    "avg(F) | first(F) | last(F) | top(F, N) | "
                                    "percentile(F, P)}, in output order"),
        ON_FAILURE,
        WINDOW,
    )
    spills = {"partials": None, "distinct": ArrowTables(), "dcounts": None, "tops": None,
              CLOSED: None}
    loads = ("pyarrow",)
    order_free = True  # any order, unless first() or last() is asked: see is_order_free
    columnar = True  # its fields are read a column at a time from either
    phases = 2  # 0: count each bucket's distinct pairs; 1: combine each bucket's groups
    reduce_row_bytes = 500

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        by, metrics = options.get("by", []), options.get("metrics", {})
        for field in by:
            if not isinstance(field, str) or not field or "" in field.split("."):
                return f"stage 'aggregate': `by` must be a list of field names; got {by!r}"
        for i, a in enumerate(by):
            for b in by[i + 1:]:
                if a == b or b.startswith(a + ".") or a.startswith(b + "."):
                    return (f"stage 'aggregate': `by` fields {a!r} and {b!r} would be "
                            f"the same output field" if a == b else
                            f"stage 'aggregate': `by` fields {a!r} and {b!r} overlap; "
                            f"one is inside the other")
        if not metrics:
            return f"stage 'aggregate': `metrics` needs at least one {{name: {_SPEC_HELP}}}"
        for name, spec in metrics.items():
            if not isinstance(name, str) or not name or "." in name:
                return (f"stage 'aggregate': metric names must be non-empty strings "
                        f"without dots; got {name!r}")
            if name in {f.split(".")[0] for f in by}:
                return (f"stage 'aggregate': metric {name!r} is also a `by` field's "
                        f"name; output fields must differ")
            parsed = parse_metric(spec)
            if isinstance(parsed, str):
                return f"stage 'aggregate': metric {name!r}: {parsed}"
        if options.get("window") is not None:
            return names_problem("aggregate", [*by, *metrics])
        return None

    @classmethod
    def is_order_free(cls, options: dict[str, Any]) -> bool:
        return not any(isinstance(m, Metric) and m.func in ("first", "last")
                       for m in map(parse_metric, options.get("metrics", {}).values()))

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        window = WINDOW_FIELDS if options.get("window") is not None else ()
        return window + tuple(options.get("by", [])) + tuple(options.get("metrics", {}))

    @classmethod
    def _used(cls, options: dict[str, Any]) -> list[str]:
        """The fields it reads: `by`, then the metrics' fields."""
        used = list(options.get("by", []))
        window = window_of(options)
        if window is not None:
            used.append(window.field)
        for spec in options.get("metrics", {}).values():
            parsed = parse_metric(spec)
            if isinstance(parsed, Metric) and parsed.field is not None:
                used.append(parsed.field)
        return used

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...] | None:
        # a record whose summed field is not a number goes whole to the dead letters
        if any(isinstance(m, Metric) and m.func in NUMERIC
               for m in map(parse_metric, options.get("metrics", {}).values())):
            return None
        return tuple(cls._used(options))

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        missing = missing_fields(cls._used(options), given)
        return f"field {missing}" if missing else None

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.by_cols = [column(f) for f in self.by]
        self.by_paths = [path_of(f) for f in self.by]
        self.metric_list: list[tuple[str, Metric]] = [
            (name, parse_metric(spec)) for name, spec in self.metrics.items()]  # type: ignore
        fields = sorted({m.field for _, m in self.metric_list if m.field is not None})
        self.field_index = {f: i for i, f in enumerate(fields)}
        self.field_cols = [column(f) for f in fields]
        # the slots of a partial aggregate: [records, then one per metric]; percentile
        # metrics of one field share the first one's slot (one state, several ranks)
        self.slots: list[tuple[int, str, int]] = []
        self.owner: dict[int, int] = {}  # metric slot -> the slot that holds its state
        shared: dict[int, int] = {}
        for i, (_, m) in enumerate(self.metric_list, start=1):
            if m.func in ("count", "count_distinct", "top"):
                continue
            f = self.field_index[m.field]  # type: ignore[index]
            if m.func == "percentile":
                self.owner[i] = shared.setdefault(f, i)
                if self.owner[i] != i:
                    continue
            self.slots.append((i, m.func, f))
        self.distinct = [(i, self.field_index[m.field], m.arg)  # type: ignore[index]
                         for i, (_, m) in enumerate(self.metric_list, start=1)
                         if m.func in ("count_distinct", "top")]
        self.numeric = sorted({(self.field_index[m.field], m.field, m.func)  # type: ignore
                               for _, m in self.metric_list if m.func in NUMERIC})
        self.ordered = any(func in ("first", "last") for _, func, _ in self.slots)
        self.held_keys: list[Any] = []  # rows update() has taken and not yet spilled:
        self.held_cols: list[list[Any]] = [[] for _ in fields]  # see settle()
        self.held_raw = True  # whether held_keys are the `by` strings (see _hold_keys)
        self.held_orders: list[np.ndarray] = []  # their file order (first and last)
        self.failures_kept = self.failures_dropped = 0
        self._init_window()

    @property
    def hold_rows(self) -> int:
        """How many rows update() gathers before it spills: about an eighth of the
        spill's buffer at ~100 bytes a held row (65,536 with the default 8 MB)."""
        buffer = self.spill.buffer_bytes if self.spill is not None else 8 << 20
        return max(1024, buffer // 128)

    # -- map side -------------------------------------------------------------------
    def update(self, batch: Batch) -> None:
        """Take one batch's group keys and metric fields (after sending the records
        whose field for sum, avg or percentile is not a number to the dead-letter file);
        once about `hold_rows` are held, fold them into partial aggregates and spill
        them. With a window, each record's rows go to its windows (Windowed)."""
        n = len(batch)
        if not n:
            return
        records: Any = batch  # a Batch, or Columns: the getters read either
        cols = [c(records) for c in self.field_cols]
        bad = self._reject_not_numbers(records, cols) if self.numeric else set()
        bys = [c(records) for c in self.by_cols]
        orders = self.orders(n) if self.ordered else None

        def take(target: "Aggregate", at: Any, starts: Any) -> None:
            pick = at.tolist()
            keys_at = [[c[j] for j in pick] for c in bys]
            if starts is not None:  # a batch run: the window is the group's first part
                keys_at.insert(0, self.win.bounds(starts))  # type: ignore[union-attr]
            target._take(keys_at, [[c[j] for j in pick] for c in cols], len(pick),
                         None if orders is None else orders[at])
        if self.win is not None:
            self._windowed(records, bad, take)
        elif bad:
            take(self, np.array([j for j in range(n) if j not in bad], np.int64), None)
        else:
            self._take(bys, cols, n, orders)

    def _take(self, bys: list[list[Any]], cols: list[list[Any]], n: int,
              orders: np.ndarray | None) -> None:
        """Hold n rows: their group's values (`bys`, a list per field) and metric fields."""
        if not n:
            return
        self._hold_keys(bys, n)
        for held, col in zip(self.held_cols, cols):
            held += col
        if self.ordered:
            self.held_orders.append(orders)
        if len(self.held_keys) >= self.hold_rows:
            self.settle()

    def _hold_keys(self, cols: list[list[Any]], n: int) -> None:
        """Hold each row's group: while every group value is a string, the strings
        themselves (a tuple of them with several fields), which are cheap to hash;
        else the JSON texts (`_key`)."""
        if not cols:
            self.held_raw = False
            self.held_keys += [b"[]"] * n
            return
        if not self.held_keys:
            self.held_raw = True
        if self.held_raw and all(set(map(type, col)) == {str} for col in cols):
            self.held_keys += zip(*cols) if len(cols) > 1 else cols[0]
            return
        if self.held_raw:  # the held ones as JSON texts too, so that all compare alike
            single = len(cols) == 1
            self.held_keys = [_key((k,) if single else k) for k in self.held_keys]
            self.held_raw = False
        self.held_keys += map(_key, zip(*cols))

    def settle(self) -> None:
        """Fold the held rows into partial aggregates, one per group, and spill them
        (and their distinct (metric, group, value) triples) by a hash of the group.
        Many batches folded at once make far fewer partials than one at a time: a
        batch of 10,000 chat records touches most of 4,000 (site, type) groups."""
        gkeys, cols = self.held_keys, self.held_cols
        if not gkeys:
            return
        orders = np.concatenate(self.held_orders) if self.ordered else None
        self.held_keys, self.held_cols = [], [[] for _ in self.field_cols]
        self.held_orders = []
        index: dict[Any, int] = {}
        setdefault = index.setdefault
        gids = [setdefault(k, len(index)) for k in gkeys]
        del gkeys
        groups = list(index)
        if self.held_raw:
            groups = [_key(g if len(self.by_cols) > 1 else (g,)) for g in groups]
        self.held_raw = True
        empty = [None] * len(self.metric_list)
        accs = [[c, *empty] for c in np.bincount(gids, minlength=len(groups)).tolist()]
        for i, func, f in self.slots:
            if func in ("sum", "avg"):
                _sums(i, cols[f], gids, accs, counted=func == "avg")
            elif func in ("min", "max"):
                _extremes(i, func == "min", cols[f], gids, accs)
            elif func in ("first", "last"):
                _firsts(i, func == "last", cols[f], gids, orders, accs)
            elif func == "percentile":
                _quantiles(i, cols[f], gids, accs)
            else:
                _distincts(i, cols[f], gids, accs)
        spill = self._writer()
        hashes = self._hashes(groups)
        buckets = keys.bucket_of(hashes, self.nbuckets)
        for b in np.unique(buckets).tolist():
            spill.add_objects("partials", b, [(groups[j], accs[j])
                                              for j in np.flatnonzero(buckets == b).tolist()])
        if self.distinct:
            self._spill_distinct(spill, cols, gids, groups, hashes)

    def _spill_distinct(self, spill: Any, cols: list[list[Any]], gids: list[int],
                        groups: list[bytes], hashes: np.ndarray) -> None:
        """The batch's distinct (metric, group, value) triples, as Arrow tables of
        (m, g, v): metric number, the group's JSON text, the value's JSON text. A
        triple goes where the hash of all three sends it, so one group's distinct
        values spread over the buckets however many there are."""
        import pyarrow as pa
        import pyarrow.compute as pc
        n = len(gids)
        texts = [v for _, f, _ in self.distinct for v in map(_key, cols[f])]
        table = pa.table({
            "m": pa.array(np.repeat(np.array([i for i, _, _ in self.distinct], np.uint8), n)),
            "g": pa.array(np.tile(np.array(gids, np.int32), len(self.distinct))),
            "v": pa.array(texts, pa.binary())})
        table = table.filter(pc.not_equal(table.column("v"), b"null"))  # no value
        table = table.group_by(["m", "g", "v"], use_threads=False).aggregate([("v", "count")])
        if not table.num_rows:
            return
        v = table.column("v").combine_chunks()
        offsets = np.frombuffer(v.buffers()[1], np.int32)[v.offset:v.offset + len(v) + 1]
        value_hash = keys.hash_bytes(offsets, np.frombuffer(v.buffers()[2], np.uint8))
        g = table.column("g").to_numpy()
        buckets = keys.bucket_of(keys.mix(table.column("m").to_numpy(), hashes[g],
                                          value_hash), self.nbuckets)
        order = np.argsort(buckets, kind="stable")
        table = pa.table({"m": table.column("m"), "g": pa.array(groups, pa.binary()).take(g),
                          "v": v, "c": table.column("v_count")}).take(order)
        buckets = buckets[order]
        cuts = np.flatnonzero(np.diff(buckets)) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(buckets)]):
            spill.add_objects("distinct", int(buckets[lo]), [table.slice(lo, hi - lo)])
        pa.default_memory_pool().release_unused()  # what group_by freed (see below)

    def _reject_not_numbers(self, records: Any, cols: list[list[Any]]) -> set[int]:
        """The records whose field for sum, avg or percentile is not a number: sent to
        the dead-letter file or dropped (their positions returned), or with on_failure:
        keep, counted with that value made missing (in `cols`)."""
        bad: dict[int, str] = {}
        for f, field, func in self.numeric:
            col = cols[f]
            if set(map(type, col)) <= _SUMMABLE:
                continue
            cols[f] = col = list(col)  # (changed below, with keep)
            for j, v in enumerate(col):
                if v.__class__ not in _SUMMABLE:
                    bad.setdefault(j, f"field {field!r}: {func}({field}) needs a number, "
                                      f"got {show(v)}")
                    if self.on_failure == "keep":
                        col[j] = None
        if self.on_failure == "keep":
            self.failures_kept += len(bad)
            return set()
        if self.on_failure == "drop":
            self.failures_dropped += len(bad)
            return set(bad)
        reject_records(self.ctx, self.name, records, bad)
        return set(bad)

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), KEPT: self.failures_kept, DROPPED: self.failures_dropped,
                **self.window_state()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.failures_kept, self.failures_dropped = state[KEPT], state[DROPPED]
        self.restore_windows(state)

    def counters(self) -> dict[str, int]:
        return {**super().counters(), KEPT: self.failures_kept, DROPPED: self.failures_dropped}

    @staticmethod
    def _hashes(texts: list[bytes]) -> np.ndarray:
        """A 64-bit hash of each group's JSON text; it only routes a group to its
        bucket (equal groups are then compared on their texts)."""
        return keys.hash_texts(texts)

    # -- reduce side ------------------------------------------------------------------
    def reduce(self, phase: int, bucket: int, io: ReduceIO) -> Iterable[tuple[Any, Any]] | None:
        if phase == 0:
            return self._values(bucket, io)
        return with_closed(self._groups(bucket, io), io, bucket)

    def closed_pair(self, start: Any, end: Any, key: Any, record: Any) -> tuple[Any, Any]:
        return ((order_key(start), *key),
                {"window_start": start, "window_end": end, **record})

    def _values(self, bucket: int, io: ReduceIO) -> None:
        """Phase 0: this bucket's distinct (metric, group, value) triples, counted: how
        many values each (group, metric) has here, and for top() its most frequent
        ones here, sent to the group's bucket for phase 1. A triple's records all come
        to one bucket, so its count here is its whole count, and a value in a group's
        top N overall is in the top N of its bucket."""
        import pyarrow as pa
        import pyarrow.compute as pc
        tables = [t for frame in io.frames("distinct", bucket) for t in frame]
        if not tables:
            return None
        # equal triples are equal JSON texts (bytes compared exactly, not hashed)
        seen = pa.concat_tables(tables).group_by(["m", "g", "v"], use_threads=False
                                                 ).aggregate([("c", "sum")])
        del tables
        tops = {i: n for i, _, n in self.distinct if n is not None}
        if tops:
            wanted = pc.is_in(seen.column("m"), pa.array(list(tops), pa.uint8()))
            self._tops(seen.filter(wanted), tops, io)
            seen = seen.filter(pc.invert(wanted))
        counts = seen.group_by(["g", "m"], use_threads=False).aggregate([("v", "count")])
        del seen
        items = list(zip(counts.column("g").to_pylist(), counts.column("m").to_pylist(),
                         counts.column("v_count").to_pylist()))
        del counts
        # Arrow's allocator keeps what group_by freed for its next use: give it back, so
        # that a worker holds one bucket's peak at a time, not the largest one kept
        pa.default_memory_pool().release_unused()
        self._send(io, "dcounts", items)
        return None

    def _send(self, io: ReduceIO, name: str, items: list[tuple[Any, ...]]) -> None:
        """Items (group, ...) to their group's bucket, for phase 1."""
        buckets = keys.bucket_of(self._hashes([item[0] for item in items]), self.nbuckets)
        for b in np.unique(buckets).tolist():
            io.add_objects(name, b, [items[j] for j in np.flatnonzero(buckets == b).tolist()])

    def _tops(self, table: Any, tops: dict[int, int], io: ReduceIO) -> None:
        """Each (group, top metric)'s N most frequent values in this bucket (more where
        counts tie at the N-th: those are then ordered by value)."""
        if not table.num_rows:
            return
        table = table.sort_by([("g", "ascending"), ("m", "ascending"), ("c_sum", "descending")])
        g = table.column("g").combine_chunks().dictionary_encode().indices.to_numpy()
        m = table.column("m").to_numpy()
        c = table.column("c_sum").to_numpy()
        n = len(c)
        starts = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (m[1:] != m[:-1])])
        ends = np.r_[starts[1:], n]
        limit = np.array([tops[k] for k in m[starts].tolist()], np.int64)
        # the N-th count of each run (its last count if it has fewer): keep those at least
        nth = c[np.minimum(starts + limit - 1, ends - 1)]
        run = np.repeat(np.arange(len(starts)), ends - starts)
        keep = np.flatnonzero(c >= nth[run])
        texts = table.column("v").take(keep).to_pylist()
        groups = table.column("g").take(starts).to_pylist()
        kept_c = c[keep].tolist()
        bounds = np.searchsorted(run[keep], np.arange(len(starts) + 1)).tolist()  # per run
        items = []
        for r, (group, metric) in enumerate(zip(groups, m[starts].tolist())):
            pairs = list(zip(texts[bounds[r]:bounds[r + 1]], kept_c[bounds[r]:bounds[r + 1]]))
            if len(pairs) > tops[metric]:
                pairs = _top_pairs(pairs, tops[metric])
            items.append((group, metric, pairs))
        self._send(io, "tops", items)

    def _groups(self, bucket: int, io: ReduceIO) -> list[tuple[Any, Any]]:
        """Phase 1: every partial aggregate of this bucket's groups, combined."""
        accs: dict[bytes, list[Any]] = {}
        for frame in io.frames("partials", bucket):
            for key, part in frame:
                acc = accs.get(key)  # equal groups are equal JSON texts: exact
                if acc is None:
                    accs[key] = part
                else:
                    self._combine(acc, part)
        dcounts: dict[tuple[bytes, int], int] = {}
        for frame in io.frames("dcounts", bucket):
            for group, i, n in frame:
                dcounts[(group, i)] = dcounts.get((group, i), 0) + n
        tops: dict[tuple[bytes, int], list[tuple[bytes, int]]] = {}
        for frame in io.frames("tops", bucket):
            for group, i, pairs in frame:
                tops.setdefault((group, i), []).extend(pairs)
        out = []
        for key, acc in accs.items():
            values = _decode(key)
            record: dict[str, Any] = {}
            if self.win is not None:  # a batch run's window: the first value
                record["window_start"] = values[0]
                record["window_end"] = self.win.end(values[0])
            for path, value in zip(self.by_paths, values[self.win is not None:]):
                if len(path) == 1:
                    record[path[0]] = value
                else:
                    set_in(record, path, value)
            for i, (name, m) in enumerate(self.metric_list, start=1):
                if m.func == "count":
                    record[name] = acc[0]
                elif m.func == "count_distinct":
                    record[name] = dcounts.get((key, i), 0)
                elif m.func == "top":
                    pairs = _top_pairs(tops.get((key, i), []), m.arg)
                    record[name] = [{"value": _decode(v), "count": c} for v, c in pairs]
                else:
                    record[name] = self._result(m, acc[self.owner.get(i, i)])
            out.append(((*map(order_key, values), key), record))
        out.sort(key=itemgetter(0))
        return out

    @staticmethod
    def _result(m: Metric, slot: Any) -> Any:
        if m.func == "approx_count_distinct":
            return 0 if slot is None else sketches.distinct_estimate(slot)
        if slot is None:
            return None
        if m.func == "sum":
            return _sum_result(slot)
        if m.func == "avg":
            return _sum_result(slot, slot[3])
        if m.func == "percentile":
            return sketches.quantile(slot, m.arg)
        value = slot[1]  # min, max, first, last: (order, value)
        return (msgspec.to_builtins(value)
                if isinstance(value, (dict, list, msgspec.Struct)) else value)

    def _combine(self, acc: list[Any], part: list[Any]) -> None:
        acc[0] += part[0]
        for i, func, _ in self.slots:
            new = part[i]
            if new is None:
                continue
            old = acc[i]
            if old is None:
                acc[i] = new
            elif func in ("sum", "avg"):
                old[0] += new[0]
                if new[1] is not None:
                    old[1] = (old[1] or 0) + new[1]
                old[2] = old[2] and new[2]
                if func == "avg":
                    old[3] += new[3]
            elif func == "percentile":
                sketches.merge_quantiles(old, new)
            elif func == "approx_count_distinct":
                sketches.merge_distinct(old, new)
            elif new[0] < old[0] if func in ("min", "first") else new[0] > old[0]:
                acc[i] = new  # min, max: (order key, value); first, last: (file order, value)


def _top_pairs(pairs: list[tuple[bytes, int]], n: int) -> list[tuple[bytes, int]]:
    """The n most frequent of (value's JSON text, count) pairs, ties in value order."""
    return heapq.nsmallest(n, pairs, key=lambda p: (-p[1], order_key(_decode(p[0]))))

