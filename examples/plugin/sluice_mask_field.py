"""An example Sluice plugin stage, packaged on its own (see pyproject.toml)."""
from __future__ import annotations

from typing import Any, Iterator

from pipeline import SAME, Batch, Option, Processor, positive


class MaskField(Processor):
    """Mask a string field, keeping only its last few characters.

        - mask-field:
            field: from
            keep: 2

    Works on JSON objects (`json-decode` with `schema: object`). A record without the
    field, or whose field is not a string, passes through unchanged.
    """

    name = "mask-field"
    accepts = ("object",)  # decoded JSON objects: json-decode with `schema: object`
    produces = SAME        # it passes on the kind it was given
    options = (
        Option("field", str, doc="field to mask"),
        Option("keep", int, 4, "characters left visible at the end", check=positive),
        Option("char", str, "*", "the masking character"),
    )

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.masked = 0

    def snapshot(self) -> dict[str, int]:
        return {"masked": self.masked}

    def restore(self, state: dict[str, int]) -> None:
        self.masked = state["masked"]

    def mask(self, value: str) -> str:
        hidden = max(len(value) - self.keep, 0)
        return self.char * hidden + value[hidden:]

    def process(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            out = Batch(source=batch.source, origins=batch.origins)  # same records, same lines
            for record in batch:
                value = record.get(self.field) if isinstance(record, dict) else None
                if isinstance(value, str):
                    record = {**record, self.field: self.mask(value)}
                    self.masked += 1
                out.append(record)
            yield out
