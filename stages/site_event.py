"""The `site-event` record schema of SPEC.md, as msgspec structs.

msgspec validates while it decodes, in C: types, non-empty strings, the `type` tag,
`data.status`, finite numbers. What it cannot express (UTF-8 in skipped fields) is
checked by json-decode.
"""
from __future__ import annotations

import sys
from typing import Annotated, Literal, Union

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# JSON has no NaN/Infinity literals, but 1e400 overflows to inf: bound it to finite
Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]

MESSAGE, ONLINE, OFFLINE = 0, 1, 2


# gc=False: these hold only str/int/float, and tracking millions of them made the
# cyclic GC run constantly (decoding took twice as long)
class StatusData(msgspec.Struct, gc=False):
    status: Literal["online", "offline"]


class SiteEvent(msgspec.Struct, tag_field="type", gc=False):
    id: NonEmpty
    from_: NonEmpty = msgspec.field(name="from")
    site_id: Union[NonEmpty, int]
    timestamp: Finite


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
