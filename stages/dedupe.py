"""dedupe: keep the first record for each value of a field, across the whole input."""
from __future__ import annotations

from operator import itemgetter
from typing import Any, Iterable

import msgspec
import numpy as np

from pipeline import SAME, Batch, Option, keys
from pipeline.contracts import missing_fields
from pipeline.keyed import RESULT, Codec, KeyedReducer, ReduceIO

from .fields import MISSING, column
from .site_event import Message, SiteEventType, Status

class Records(Codec):
    """A bucket's records: site-event structs as typed msgpack (a fifth of the time a
    pickle of them takes, both ways, and exact: the same structs come back); object
    records, when the stage is given the `object` kind (dicts of JSON values only), as
    plain msgpack; anything else (a plugin's records of unknown kind, where a tuple
    would come back a list, or an integer beyond 64 bits) pickled. Every frame says
    how it was stored.

    `lazy`: the records of this codec's msgpack frames (with `json_dicts` object
    records, with `structs` site-event structs) come back as msgspec.Raw, each its
    record's msgpack bytes, not decoded: reduce only picks the first of each id, and
    the kept ones are written again as they are. Only the final results are decoded,
    once. On a 1M-line dedupe-and-count run this and msgpack took 30% off the
    pickles' time; for site-event records it saves decoding (and validating) every
    struct in the reduce and encoding the kept ones again. A codec with `json_dicts`
    or `structs` takes a Raw to be such a record's bytes: a given kind's codec."""

    _pack = msgspec.msgpack.Encoder().encode
    _unpack = msgspec.msgpack.Decoder(list[SiteEventType]).decode
    _unpack_json = msgspec.msgpack.Decoder().decode
    _unpack_raw = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode
    _one_struct = msgspec.msgpack.Decoder(SiteEventType).decode

    def __init__(self, json_dicts: bool = False, structs: bool = False, lazy: bool = False):
        self.json_dicts, self.structs, self.lazy = json_dicts, structs, lazy

    def encode(self, objects: list[Any]) -> bytes:
        # a Raw is a record a lazy codec read: msgpack writes it as the bytes it holds
        types = set(map(type, objects))
        if types <= (_STRUCTS_OR_RAW if self.structs else _STRUCTS):
            try:
                return b"M" + self._pack(objects)
            except (OverflowError, TypeError, ValueError):
                pass
        elif self.json_dicts and types <= {dict, msgspec.Raw}:
            try:
                return b"D" + self._pack(objects)
            except (OverflowError, TypeError, ValueError):
                pass
        return b"P" + super().encode(self.materialized(objects))

    def decode(self, data: bytes) -> list[Any]:
        view = memoryview(data)[1:]
        tag = data[:1]
        if tag == b"M":
            return (self._unpack_raw if self.lazy and self.structs else self._unpack)(view)
        if tag == b"D":
            return (self._unpack_raw if self.lazy and self.json_dicts
                    else self._unpack_json)(view)
        return super().decode(view)

    def materialized(self, objects: list[Any]) -> list[Any]:
        """The records, with each msgspec.Raw (a record this codec read lazily)
        decoded: a struct's bytes as the struct, a dict's as the dict. A codec of
        neither kind reads nothing lazily: a Raw there is a record of its own."""
        if not (self.structs or self.json_dicts) or not any(
                o.__class__ is msgspec.Raw for o in objects):
            return objects
        unpack = self._one_struct if self.structs else msgspec.msgpack.decode
        return [unpack(o) if o.__class__ is msgspec.Raw else o for o in objects]


class Results(Codec):
    """The (file order, record) pairs dedupe's reduce keeps: the orders as one uint64
    array, the records as `records` stores them (decoded whole: `records` is not lazy)."""

    def __init__(self, records: Records):
        self.records = records

    def encode(self, pairs: list[Any]) -> bytes:
        try:
            orders = np.fromiter((k for k, _ in pairs), np.uint64, len(pairs))
        except (OverflowError, TypeError, ValueError):
            records = self.records.materialized([r for _, r in pairs])
            return b"P" + super().encode([(k, r) for (k, _), r in zip(pairs, records)])
        return (b"O" + len(pairs).to_bytes(8, "little") + orders.tobytes()
                + self.records.encode([r for _, r in pairs]))

    def decode(self, data: bytes) -> list[Any]:
        view = memoryview(data)
        if data[:1] != b"O":
            return super().decode(view[1:])
        n = int.from_bytes(view[1:9], "little")
        orders = np.frombuffer(view[9:9 + 8 * n], np.uint64).tolist()
        return list(zip(orders, self.records.decode(view[9 + 8 * n:])))


_STRUCTS = {Message, Status}
_STRUCTS_OR_RAW = _STRUCTS | {msgspec.Raw}
_RECORDS = Records()
_LAZY_STRUCTS = Records(structs=True, lazy=True)  # read by reduce
_STRUCT_RESULTS = Results(Records(structs=True))
_LAZY_JSON_RECORDS = Records(json_dicts=True, lazy=True)  # read by reduce
_JSON_RESULTS = Results(Records(json_dicts=True))
KEY_ROW = np.dtype([("w0", "<u8"), ("w1", "<u8"), ("order", "<u8"), ("tag", "u1")])
NO_KEY = 3  # a record without the field: always kept


TYPED = 0x80  # in a key row's tag: the key is a typed text below, not a string's own text


def dedupe_key(value: Any) -> tuple[str, bool]:
    """(text, typed): equal for equal values. A string (and an integer, as its decimal
    string) is its own text, so an id that is a UUID keeps the compact UUID key; any
    other value is a typed text (`f1.5`, `btrue`, `n`, `j[1]`) marked as typed, so that
    it never equals a string with the same text."""
    if isinstance(value, str):
        return value, False
    if isinstance(value, bool):
        return "b" + str(value), True
    if isinstance(value, int):
        return str(value), False
    if isinstance(value, float):
        return "f" + repr(value), True
    if value is None:
        return "n", True
    return "j" + msgspec.json.encode(value, order="sorted").decode(), True


def _project(records: list[dict[str, Any]], keep: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each record with only the fields in `keep`, in its own order: what the stages
    after dedupe read (Stage.needed) is all it needs to spill. On the 1M-line
    dedupe-and-count job (which reads `type` only) this took 19% off the wall. One
    field that every record has is taken by a C-level map (0.15 us a record, against
    0.33 us for the comprehension)."""
    if len(keep) == 1:
        name = keep[0]
        try:
            return [{name: v} for v in map(itemgetter(name), records)]
        except KeyError:  # a record without it
            pass
    fields = frozenset(keep)
    return [{k: v for k, v in r.items() if k in fields} for r in records]


class Dedupe(KeyedReducer):
    """Keep the first record (in file order) for each value of a field; drop repeats.

        - dedupe:
            field: id

    Exact across workers and at any number of values: records are spilled by a hash of
    the value, each bucket keeps its first occurrences, and the survivors come out in
    file order once the whole input has been read. Records without the field are all
    kept. Values compare by type and value; an integer equals its decimal string.
    Where every stage after it reads only some fields (say `count` by `type`), it
    spills only those.
    """

    name = "dedupe"
    accepts = ("object", "site-event")
    produces = SAME
    options = (Option("field", str, doc="field whose repeats are dropped"),)
    spills = {"keys": KEY_ROW, "records": _RECORDS, "longs": None}
    result_codec = Results(_RECORDS)
    reports = ("duplicates",)
    reduce_row_bytes = 800

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return (options["field"],)

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        missing = missing_fields(list(cls.reads(options)), given)
        return f"field {missing}" if missing else None

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.values = column(self.field)

    def all_sets(self) -> dict[str, Any]:
        sets = super().all_sets()
        if self.given == "object":  # JSON values only: msgpack keeps them exactly
            sets["records"], sets[RESULT] = _LAZY_JSON_RECORDS, _JSON_RESULTS
        elif self.given == "site-event":  # Message and Status structs
            sets["records"], sets[RESULT] = _LAZY_STRUCTS, _STRUCT_RESULTS
        return sets

    def update(self, batch: Batch) -> None:
        n = len(batch)
        if not n:
            return
        values = self.values(batch)
        present = [v is not MISSING for v in values]
        if set(map(type, values)) == {str}:  # the usual case: string ids
            texts, typed = values, np.zeros(n, np.uint8)
        else:
            pairs = [dedupe_key(v) if p else ("", False) for v, p in zip(values, present)]
            texts = [t for t, _ in pairs]
            typed = np.array([t for _, t in pairs], np.uint8) * np.uint8(TYPED)
        words, tags, longs = keys.encode(texts)
        rows = np.empty(n, KEY_ROW)
        rows["w0"], rows["w1"] = words[:, 0], words[:, 1]
        rows["tag"] = np.where(present, tags | typed, NO_KEY)
        rows["order"] = order = self.orders(n)
        h = keys.mix(words[:, 0], words[:, 1], rows["tag"])
        h = np.where(present, h, keys.mix(order))  # spread records without the field
        buckets = keys.bucket_of(h, self.nbuckets)
        spill = self._writer()
        spill.add("keys", buckets, rows)
        if self.needed is not None and self.given == "object":
            batch = _project(batch, self.needed)
        for b in np.unique(buckets).tolist():  # the same order within a bucket as `add`
            spill.add_objects("records", b, [batch[i] for i in np.flatnonzero(buckets == b)])
        self.keep_longs("longs", words, tags, longs, buckets)

    def reduce(self, phase: int, bucket: int, io: ReduceIO) -> Iterable[tuple[Any, Any]]:
        rows = io.read("keys", bucket)
        if not len(rows):
            return []
        records = io.read("records", bucket)
        io.strings("longs", bucket)  # refuses two values with one digest
        w0, w1, tag = rows["w0"], rows["w1"], rows["tag"]
        keep = tag == NO_KEY
        keyed = np.flatnonzero(~keep)
        _, _, first = keys.groups(keys.mix(w0[keyed], w1[keyed], tag[keyed]),
                                  w0[keyed], w1[keyed], tag[keyed])
        keep[keyed[first]] = True  # rows are in file order: the earliest of each value
        io.count("duplicates", len(rows) - int(keep.sum()))
        kept = np.flatnonzero(keep)
        return list(zip(rows["order"][kept].tolist(), map(records.__getitem__, kept.tolist())))
