"""Reading a named field from any record: a dict, a msgspec struct, or a tuple."""
from __future__ import annotations

from typing import Any, Callable

import msgspec

_MISSING = object()


def getter(field: str) -> Callable[[Any], Any]:
    """A function record -> value of `field` (JSON name), or _MISSING.

    A struct field is found by its JSON name, so `from` reads SiteEvent.from_.
    """
    cache: dict[type, str | None] = {}

    def get(record: Any) -> Any:
        if isinstance(record, dict):
            return record.get(field, _MISSING)
        cls = type(record)
        attr = cache.get(cls, "")
        if attr == "":
            attr = None
            if isinstance(record, msgspec.Struct):
                for f in msgspec.structs.fields(cls):
                    if f.encode_name == field:
                        attr = f.name
                tag = cls.__struct_config__.tag_field
                if tag == field:
                    attr = "__tag__"
            elif hasattr(record, field):
                attr = field
            cache[cls] = attr
        if attr is None:
            return _MISSING
        if attr == "__tag__":
            return cls.__struct_config__.tag
        return getattr(record, attr)

    return get


def normalize(value: Any) -> Any:
    """Integers compare as their decimal strings, as SPEC.md does for site_id."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


MISSING = _MISSING
