"""Reading a named field from any record: a dict, a msgspec struct, or a tuple.

A field is named by its JSON name (`from`, not `from_`). A name with dots is a path
into nested objects: `data.status` is the `status` field of the object in `data`. Every
dot separates two names, so a key that itself contains a dot cannot be reached.

The path helpers `get_in`, `set_in` and `delete_in` work on nested dicts (what
json-decode's `object` schema yields, and what `msgspec.to_builtins` makes of a struct).
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import msgspec

from pipeline.columns import Columns, values_of
from pipeline.stage import ANY

_MISSING = object()
_NO_FIELDS = (str, bytes, list, tuple, int, float, type(None))  # int: bool too


class NotAnObject(ValueError):
    """A path goes through a value that is not an object, so nothing can be set there."""

    def __init__(self, path: tuple[str, ...], depth: int, value: Any):
        self.path, self.depth, self.value = path, depth, value
        where = ".".join(path[:depth + 1])
        super().__init__(f"{where!r} is {json_type(value, article=True)}, not an object")


def path_of(name: str) -> tuple[str, ...]:
    """`"data.status"` -> `("data", "status")`; a plain name is a path of one."""
    return tuple(name.split("."))


def _step(value: Any, name: str, cache: dict[type, str | None]) -> Any:
    """The field `name` of one value (dict or struct), or _MISSING for anything else."""
    if value is _MISSING:
        return _MISSING
    if isinstance(value, dict):
        return value.get(name, _MISSING)
    cls = type(value)
    attr = cache.get(cls, "")
    if attr == "":
        attr = None
        if isinstance(value, msgspec.Struct):
            for f in msgspec.structs.fields(cls):
                if f.encode_name == name:
                    attr = f.name
            tag = cls.__struct_config__.tag_field
            if tag == name:
                attr = "__tag__"
        elif hasattr(value, name) and not isinstance(value, _NO_FIELDS):
            attr = name  # a plugin's own object; a JSON value has no fields (3.real)
        cache[cls] = attr
    if attr is None:
        return _MISSING
    if attr == "__tag__":
        return cls.__struct_config__.tag
    return getattr(value, attr)


def getter(field: str) -> Callable[[Any], Any]:
    """A function record -> value of `field` (JSON name or dotted path), or _MISSING.

    A struct field is found by its JSON name, so `from` reads SiteEvent.from_, and
    `data.status` reads a status record's StatusData.status.
    """
    if "." not in field:
        cache: dict[type, str | None] = {}

        def get(record: Any) -> Any:
            if isinstance(record, dict):  # the common case, without a call
                return record.get(field, _MISSING)
            return _step(record, field, cache)

        return get

    parts = path_of(field)
    caches: list[dict[type, str | None]] = [{} for _ in parts]

    def get_path(record: Any) -> Any:
        value = record
        for name, c in zip(parts, caches):
            value = _step(value, name, c)
            if value is _MISSING:
                return _MISSING
        return value

    return get_path


def column(field: str) -> Callable[[Any], list[Any]]:
    """A function batch -> [value of `field` in each record, or MISSING]; the same
    values as `getter(field)` record by record, read with C-level maps where the
    batch's record classes allow (dicts; structs, whose field or tag is per class),
    and from its Arrow column where the batch is Columns (column_values)."""
    if "." in field:  # a path: one name at a time, each over the whole column
        path = path_of(field)
        steps = [column(name) for name in path]

        def along(batch: Any) -> list[Any]:
            if batch.__class__ is Columns:
                return column_values(batch, path)
            values = batch
            for step in steps:
                values = step(values)
            return values

        return along
    one = (field,)
    get = getter(field)
    how: dict[type, tuple[str, Any]] = {}

    def kind(cls: type) -> tuple[str, Any]:
        if cls is object:  # MISSING, where a path went through a missing field
            return ("const", _MISSING)
        if issubclass(cls, dict):
            return ("dict", None)
        if issubclass(cls, msgspec.Struct):
            if cls.__struct_config__.tag_field == field:
                return ("const", cls.__struct_config__.tag)
            for f in msgspec.structs.fields(cls):
                if f.encode_name == field:
                    return ("attr", f.name)
            return ("const", _MISSING)
        return ("call", None)

    by_dict = operator.methodcaller("get", field, _MISSING)

    def values(batch: Any) -> list[Any]:
        if batch.__class__ is Columns:
            return column_values(batch, one)
        kinds = set()
        for cls in set(map(type, batch)):
            k = how.get(cls)
            if k is None:
                k = how[cls] = kind(cls)
            kinds.add(k)
        if len(kinds) == 1:
            (what, arg), = kinds
            if what == "dict":
                return list(map(by_dict, batch))
            if what == "attr":
                return list(map(operator.attrgetter(arg), batch))
            if what == "const":
                return [arg] * len(batch)
        elif all(what == "const" for what, _ in kinds):  # a tag: one value per class
            table = {cls: k[1] for cls, k in how.items() if k[0] == "const"}
            return list(map(table.__getitem__, map(type, batch)))
        return list(map(get, batch))

    return values


def column_values(batch: Columns, path: tuple[str, ...]) -> list[Any]:
    """Every record's value at `path` in columns, MISSING where it has none: read from
    the field's column, into struct columns, and on into the decoded values of a JSON
    column (or what is not an object: nothing there) as get_in() reads them."""
    found = batch.find(path)
    if found is None:  # no record has the field
        return [_MISSING] * len(batch)
    array, json, rest = found
    values = values_of(array, json, _MISSING)
    if rest:
        values = [v if v is _MISSING else get_in(v, rest) for v in values]
    return values


def get_in(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` in nested dicts, or MISSING (also when a step is not a dict)."""
    value: Any = obj
    for name in path:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(name, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def set_in(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set the value at `path`, creating missing objects on the way (replacing a value).

    `obj` is changed in place; each nested dict on the path is replaced by a copy
    first, so a record that shares nested objects with another never changes the other.
    Raises NotAnObject if a step on the way holds something other than an object.
    """
    target = obj
    for depth, name in enumerate(path[:-1]):
        child = target.get(name, _MISSING)
        if child is _MISSING:
            child = {}
        elif isinstance(child, dict):
            child = dict(child)
        else:
            raise NotAnObject(path, depth, child)
        target[name] = child
        target = child
    target[path[-1]] = value


def delete_in(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    """Remove the value at `path` and return it; MISSING (and no change) if absent.

    Like set_in, nested dicts on the path are copied before they change.
    """
    if len(path) > 1 and get_in(obj, path) is _MISSING:
        return _MISSING
    target = obj
    for name in path[:-1]:
        child = dict(target[name])
        target[name] = child
        target = child
    return target.pop(path[-1], _MISSING)


def json_type(value: Any, article: bool = False) -> str:
    """The JSON name of a value's type: string, integer, number, bool, null, array,
    object (with "a"/"an" in front if `article`)."""
    if value is None:
        name = "null"
    elif isinstance(value, bool):
        name = "bool"
    elif isinstance(value, int):
        name = "integer"
    elif isinstance(value, float):
        name = "number"
    elif isinstance(value, str):
        name = "string"
    elif isinstance(value, (list, tuple)):
        name = "array"
    else:
        name = "object"
    if not article or name == "null":
        return name
    return ("an " if name[0] in "aeiou" else "a ") + name


def show(value: Any, width: int = 60) -> str:
    """A value as a reject reason quotes it: a string in quotes ('abc'), anything else
    as JSON (1.5, true, null, [1]); cut to `width` characters with "..."."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = msgspec.json.encode(value).decode()
        except (TypeError, ValueError, OverflowError):
            text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def normalize(value: Any) -> Any:
    """Integers compare as their decimal strings, as configs/summary.md does for site_id."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


MISSING = _MISSING


def reject_records(ctx: Any, stage: str, batch: Any, failed: dict[int, str],
                   what: str = "") -> None:
    """Send records of `batch` (Columns or records) to the dead-letter file, in order,
    each with its reason (after `what: `), as JSON text (raw bytes as they are)."""
    for i in sorted(failed):
        record = batch.record(i) if batch.__class__ is Columns else batch[i]
        try:
            raw = record if isinstance(record, bytes) else msgspec.json.encode(record)
        except (TypeError, ValueError, OverflowError):
            raw = repr(record)
        ctx.reject(raw, f"{what}: {failed[i]}" if what else failed[i], stage=stage,
                   at=batch.locate(i), file=batch.source)


def text_source_problem(options: dict[str, Any], kind: str, verb: str) -> str | None:
    """Why a text parser (grok, dissect, kv) cannot take records of `kind`: raw lines
    are parsed whole, object records by their `field`; or None."""
    if kind == "lines" and options.get("field") is not None:
        return ("`field` names a field of object records, but it is given raw lines; "
                f"leave `field` out to {verb} the lines")
    if kind not in ("lines", ANY) and options.get("field") is None:
        return f"it is given {kind} records: name the text field to {verb} with `field`"
    return None
