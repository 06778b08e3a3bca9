"""The `site-event` record schema of configs/summary.md, as msgspec structs.

msgspec validates while it decodes, in C: types, non-empty strings, the `type` tag,
`data.status`, finite numbers. What it cannot express (UTF-8 in skipped fields) is
checked by json-decode.

A timestamp keeps its JSON type: `1429026484` decodes to the int 1429026484 (and is
written back as such), `1429026484.5` to a float. An integer timestamp must still be
within the range of a finite double, as before (configs/summary.md compares timestamps
as IEEE doubles; site-state-reducer converts them itself).
"""
from __future__ import annotations

import sys
from typing import Annotated, Literal, Union

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# JSON has no NaN/Infinity literals, but 1e400 overflows to inf: bound it to finite
Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
# an integer at or beyond this rounds to an infinite double (2**1024 - 2**970 is halfway
# between the largest double and 2**1024, and rounds up, to even)
INT_LIMIT = 2**1024 - 2**970
# msgspec's own error text for a JSON number beyond the double range (e.g. 1e400), so
# json-decode's reject reason stays "field 'timestamp': not a finite number"
_OUT_OF_RANGE = "Number out of range - at `$.timestamp`"

MESSAGE, ONLINE, OFFLINE = 0, 1, 2
# what a site-event record holds, by JSON name (a message's `data` is not kept)
SITE_EVENT_FIELDS = ("type", "id", "from", "site_id", "timestamp", "data.status")


# gc=False: these hold only str/int/float, and tracking millions of them made the
# cyclic GC run constantly (decoding took twice as long)
class StatusData(msgspec.Struct, gc=False):
    status: Literal["online", "offline"]


class SiteEvent(msgspec.Struct, tag_field="type", gc=False):
    id: NonEmpty
    from_: NonEmpty = msgspec.field(name="from")
    site_id: Union[NonEmpty, int]
    timestamp: Union[int, Finite]

    def __post_init__(self) -> None:
        # msgspec cannot bound an int beyond 64 bits; a 309-digit integer was always
        # rejected (as a float it is infinite), and still is
        t = self.timestamp
        if t.__class__ is int and not -INT_LIMIT < t < INT_LIMIT:
            raise ValueError(_OUT_OF_RANGE)


class Message(SiteEvent, tag="message"):
    """A visitor's message; its `data` is never needed, so it is not checked."""

    @property
    def code(self) -> int:
        return MESSAGE


class Status(SiteEvent, tag="status"):
    data: StatusData

    @property
    def code(self) -> int:
        return ONLINE if self.data.status == "online" else OFFLINE


SiteEventType = Union[Message, Status]
