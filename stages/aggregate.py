"""aggregate: exact group-by with count, count_distinct, min, max and sum."""
from __future__ import annotations

import re
from operator import itemgetter
from typing import Any, Iterable

import msgspec
import numpy as np

from pipeline import Batch, Option, keys
from pipeline.columns import Columns
from pipeline.contracts import missing_fields
from pipeline.keyed import ArrowTables, KeyedReducer, ReduceIO

from .aggregate_values import _extremes, _sum_result, _sums, order_key
from .fields import MISSING, column, path_of, set_in, show

FUNCTIONS = ("count", "count_distinct", "min", "max", "sum")
_METRIC = re.compile(r"\s*([a-z_]+)\s*(?:\(\s*([^()\s]*)\s*\)\s*)?\Z")
_SPEC_HELP = "count, count_distinct(FIELD), min(FIELD), max(FIELD) or sum(FIELD)"
_decode = msgspec.json.decode


def _missing_as_null(obj: Any) -> None:
    if obj is MISSING:
        return None
    raise TypeError(f"aggregate cannot compare a {type(obj).__name__}: {obj!r}")


# a group's or a value's identity: its JSON text, object keys sorted, MISSING as null
_key = msgspec.json.Encoder(order="sorted", enc_hook=_missing_as_null).encode
_SUMMABLE = {int, float, type(None), type(MISSING)}


def parse_metric(spec: Any) -> tuple[str, str | None] | str:
    """("min", "timestamp") for "min(timestamp)", or the reason it is not a metric."""
    m = _METRIC.match(spec) if isinstance(spec, str) else None
    if m is None or m.group(1) not in FUNCTIONS:
        return f"expected {_SPEC_HELP}; got {spec!r}"
    func, field = m.group(1), m.group(2)
    if func == "count":
        if field is not None:
            return f"`count` counts records and takes no field; got {spec!r}"
        return func, None
    if not field or "" in field.split("."):
        return f"`{func}` needs a field, as in {func}(timestamp); got {spec!r}"
    return func, field


class Aggregate(KeyedReducer):
    """Group records by fields and compute exact counts, distinct counts, min, max, sum.

        - aggregate:
            by: [site_id, type]
            metrics:
              records: count
              senders: count_distinct(from)
              first: min(timestamp)
              last: max(timestamp)
              total: sum(timestamp)

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
    - `min(F)`, `max(F)`: the least / greatest value of F in the order above, so
      numbers come before strings whatever their values (min of 3 and "a" is 3, max
      is "a"); of 1 and 1.0, min is 1 and max is 1.0. null if F had no value.
    - `sum(F)`: exact, independent of how the input was split: an int if every value
      was an int, else the exact sum rounded once to the nearest double (as
      math.fsum); null if F had no value or the sum is beyond the double range. A
      record whose F is not a number (a string, bool, array or object) is sent to the
      dead-letter file: `field 'F': sum(F) needs a number, got 'abc'`.

    A record whose metric field is missing or null does not count towards that
    metric (`count` still counts it). The state is spilled by a hash of the group
    (partial aggregates of about 65,536 records at a time, and the distinct (group,
    value) pairs of distinct counts, as Arrow tables), so memory does not grow with the
    number of groups; equal groups and values are always confirmed on their JSON
    texts, never on a hash alone.
    """

    name = "aggregate"
    accepts = ("object", "site-event")
    produces = "object"
    options = (
        Option("by", list, doc="fields to group by, in order (may be empty: one group)"),
        Option("metrics", dict, doc="{name: count | count_distinct(F) | min(F) | max(F) "
                                    "| sum(F)}, in output order"),
    )
    spills = {"partials": None, "distinct": ArrowTables(), "dcounts": None}
    loads = ("pyarrow",)
    order_free = True  # groups, counts, min, max and exact sums: any order
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
        return None

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        return tuple(options.get("by", [])) + tuple(options.get("metrics", {}))

    @classmethod
    def _used(cls, options: dict[str, Any]) -> list[str]:
        """The fields it reads: `by`, then the metrics' fields."""
        used = list(options.get("by", []))
        for spec in options.get("metrics", {}).values():
            parsed = parse_metric(spec)
            if isinstance(parsed, tuple) and parsed[1] is not None:
                used.append(parsed[1])
        return used

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...] | None:
        # a record whose summed field is not a number goes whole to the dead letters
        if any(isinstance(p, tuple) and p[0] == "sum"
               for p in map(parse_metric, options.get("metrics", {}).values())):
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
        self.metric_list: list[tuple[str, str, str | None]] = []
        for name, spec in self.metrics.items():
            func, field = parse_metric(spec)  # type: ignore[misc]
            self.metric_list.append((name, func, field))
        fields = sorted({f for _, _, f in self.metric_list if f is not None})
        self.field_index = {f: i for i, f in enumerate(fields)}
        self.field_cols = [column(f) for f in fields]
        self.slots = [(i, func, self.field_index[f]) for i, (_, func, f)
                      in enumerate(self.metric_list, start=1) if func in ("min", "max", "sum")]
        self.distinct = [(i, self.field_index[f]) for i, (_, func, f)
                         in enumerate(self.metric_list, start=1) if func == "count_distinct"]
        self.sums = [(self.field_index[f], f) for _, func, f in self.metric_list
                     if func == "sum"]
        self.held_keys: list[bytes] = []  # rows update() has taken and not yet spilled:
        self.held_cols: list[list[Any]] = [[] for _ in fields]  # see settle()

    @property
    def hold_rows(self) -> int:
        """How many rows update() gathers before it spills: about an eighth of the
        spill's buffer at ~100 bytes a held row (65,536 with the default 8 MB)."""
        buffer = self.spill.buffer_bytes if self.spill is not None else 8 << 20
        return max(1024, buffer // 128)

    # -- map side -------------------------------------------------------------------
    def update(self, batch: Batch) -> None:
        """Take one batch's group keys and metric fields (after sending the records
        whose summed field is not a number to the dead-letter file); once about
        `hold_rows` are held, fold them into partial aggregates and spill them."""
        n = len(batch)
        if not n:
            return
        records: Any = batch  # a Batch, or Columns: the getters read either
        cols = [c(records) for c in self.field_cols]
        if self.sums:
            bad = self._reject_bad_sums(records, cols, batch.locate, batch.source)
            if bad:
                keep = [j for j in range(n) if j not in bad]
                records = (records.take(keep) if isinstance(records, Columns)
                           else [records[j] for j in keep])
                cols = [[c[j] for j in keep] for c in cols]
                n = len(records)
                if not n:
                    return
        if self.by_cols:
            self.held_keys += map(_key, zip(*[c(records) for c in self.by_cols]))
        else:
            self.held_keys += [b"[]"] * n
        for held, col in zip(self.held_cols, cols):
            held += col
        if len(self.held_keys) >= self.hold_rows:
            self.settle()

    def settle(self) -> None:
        """Fold the held rows into partial aggregates, one per group, and spill them
        (and their distinct (metric, group, value) triples) by a hash of the group.
        Many batches folded at once make far fewer partials than one at a time: a
        batch of 10,000 chat records touches most of 4,000 (site, type) groups."""
        gkeys, cols = self.held_keys, self.held_cols
        if not gkeys:
            return
        self.held_keys, self.held_cols = [], [[] for _ in self.field_cols]
        index: dict[bytes, int] = {}
        setdefault = index.setdefault
        gids = [setdefault(k, len(index)) for k in gkeys]
        del gkeys
        groups = list(index)
        empty = [None] * len(self.metric_list)
        accs = [[c, *empty] for c in np.bincount(gids, minlength=len(groups)).tolist()]
        for i, func, f in self.slots:
            if func == "sum":
                _sums(i, cols[f], gids, accs)
            else:
                _extremes(i, func == "min", cols[f], gids, accs)
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
        texts = [v for _, f in self.distinct for v in map(_key, cols[f])]
        table = pa.table({
            "m": pa.array(np.repeat(np.array([i for i, _ in self.distinct], np.uint8), n)),
            "g": pa.array(np.tile(np.array(gids, np.int32), len(self.distinct))),
            "v": pa.array(texts, pa.binary())})
        table = table.filter(pc.not_equal(table.column("v"), b"null"))  # no value
        table = table.group_by(["m", "g", "v"], use_threads=False).aggregate([])
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
                          "v": v}).take(order)
        buckets = buckets[order]
        cuts = np.flatnonzero(np.diff(buckets)) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(buckets)]):
            spill.add_objects("distinct", int(buckets[lo]), [table.slice(lo, hi - lo)])
        pa.default_memory_pool().release_unused()  # what group_by freed (see below)

    def _reject_bad_sums(self, records: Any, cols: list[list[Any]], locate: Any,
                         source: str | None) -> set[int]:
        """Reject the records whose summed field is not a number; their positions."""
        bad: set[int] = set()
        for f, field in self.sums:
            col = cols[f]
            if set(map(type, col)) <= _SUMMABLE:
                continue
            for j, v in enumerate(col):
                if v.__class__ not in _SUMMABLE and j not in bad:
                    bad.add(j)
                    record = (records.record(j) if isinstance(records, Columns)
                              else records[j])
                    try:
                        raw: Any = msgspec.json.encode(record)
                    except (TypeError, ValueError, OverflowError):
                        raw = repr(record)
                    self.ctx.reject(raw, f"field {field!r}: sum({field}) needs a number, "
                                         f"got {show(v)}", stage=self.name,
                                    at=locate(j), file=source)
        return bad

    @staticmethod
    def _hashes(texts: list[bytes]) -> np.ndarray:
        """A 64-bit hash of each group's JSON text; it only routes a group to its
        bucket (equal groups are then compared on their texts)."""
        return keys.hash_texts(texts)

    # -- reduce side ------------------------------------------------------------------
    def reduce(self, phase: int, bucket: int, io: ReduceIO) -> Iterable[tuple[Any, Any]] | None:
        return self._count_distinct(bucket, io) if phase == 0 else self._groups(bucket, io)

    def _count_distinct(self, bucket: int, io: ReduceIO) -> None:
        """Phase 0: this bucket's distinct (metric, group, value) triples, counted per
        (group, metric) and sent to the group's bucket for phase 1."""
        import pyarrow as pa
        tables = [t for frame in io.frames("distinct", bucket) for t in frame]
        if not tables:
            return None
        # equal triples are equal JSON texts (bytes compared exactly, not hashed)
        seen = pa.concat_tables(tables).group_by(["m", "g", "v"], use_threads=False
                                                 ).aggregate([])
        del tables
        counts = seen.group_by(["g", "m"], use_threads=False).aggregate([("v", "count")])
        del seen
        items = list(zip(counts.column("g").to_pylist(), counts.column("m").to_pylist(),
                         counts.column("v_count").to_pylist()))
        del counts
        # Arrow's allocator keeps what group_by freed for its next use: give it back, so
        # that a worker holds one bucket's peak at a time, not the largest one kept
        pa.default_memory_pool().release_unused()
        buckets = keys.bucket_of(self._hashes([g for g, _, _ in items]),
                                 self.nbuckets)
        for b in np.unique(buckets).tolist():
            io.add_objects("dcounts", b, [items[j]
                                          for j in np.flatnonzero(buckets == b).tolist()])
        return None

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
        out = []
        for key, acc in accs.items():
            values = _decode(key)
            record: dict[str, Any] = {}
            for path, value in zip(self.by_paths, values):
                if len(path) == 1:
                    record[path[0]] = value
                else:
                    set_in(record, path, value)
            for i, (name, func, _) in enumerate(self.metric_list, start=1):
                if func == "count":
                    record[name] = acc[0]
                elif func == "count_distinct":
                    record[name] = dcounts.get((key, i), 0)
                elif acc[i] is None:
                    record[name] = None
                elif func == "sum":
                    record[name] = _sum_result(acc[i])
                else:
                    value = acc[i][1]
                    record[name] = (msgspec.to_builtins(value)
                                    if isinstance(value, (dict, list, msgspec.Struct)) else value)
            out.append(((*map(order_key, values), key), record))
        out.sort(key=itemgetter(0))
        return out

    def _combine(self, acc: list[Any], part: list[Any]) -> None:
        acc[0] += part[0]
        for i, func, _ in self.slots:
            new = part[i]
            if new is None:
                continue
            old = acc[i]
            if old is None:
                acc[i] = new
            elif func == "sum":
                old[0] += new[0]
                if new[1] is not None:
                    old[1] = (old[1] or 0) + new[1]
                old[2] = old[2] and new[2]
            elif new[0] < old[0] if func == "min" else new[0] > old[0]:
                acc[i] = new
