"""kv: key=value pairs into fields (logfmt, and the `a=1 b="two words"` lines of many
applications and devices)."""
from __future__ import annotations

import re
from typing import Any, Iterator

import numpy as np

from pipeline import Batch, Option, Processor

from .failures import ON_FAILURE, OnFailure, as_records, line_record
from .fields import MISSING, column, json_type, text_source_problem


def _check_split(text: Any) -> str | None:
    if not isinstance(text, str) or not text:
        return f"must be a non-empty string; got {text!r}"
    if any(q in text for q in "\"'"):
        return f"cannot hold a quote (quotes delimit values); got {text!r}"
    return None


class Kv(OnFailure, Processor):
    """Split `key=value` pairs into fields.

        - kv:
            field: message          # default: the raw lines of file-input
            field_split: " "        # between pairs (default a space)
            value_split: "="        # between a key and its value (default =)
            prefix: "kv_"           # put before every key (default none)

    A value may be quoted with "..." or '...': the quotes go, a backslash-escaped quote
    inside stays a quote (`msg="say \\"hi\\""` gives `say "hi"`), and the field and value
    separators inside count as text. Keys are up to the value separator (no separator
    or quote characters in them); text between pairs that is not one (a lone word) is skipped. A
    key given twice gets a list of its values, in order; an empty value (`d=`) is no field. Values are strings. Without
    `field`, the records are the pairs of each line; with `field`, the pairs are added
    to each record (replacing fields of the same name). A line (or field) with no pair
    at all fails with `no key=value pairs`, and on_failure says what happens to it.
    Works line by line (Python regular expressions): pairs differ from line to line.
    """

    name = "kv"
    order_free = True
    accepts = ("lines", "object")
    produces = "object"
    columnar = True
    options = (
        Option("field", str, None, "the text field of object records (default: the raw "
                                   "lines of file-input)"),
        Option("field_split", str, " ", "what separates pairs", check=_check_split),
        Option("value_split", str, "=", "what separates a key from its value",
               check=_check_split),
        Option("prefix", str, "", "put before every key"),
        ON_FAILURE,
    )

    @classmethod
    def check_kind(cls, options: dict[str, Any], kind: str) -> str | None:
        return text_source_problem(options, kind, "split")

    def __init__(self, **options: Any):
        super().__init__(**options)
        fs, vs = re.escape(self.field_split), re.escape(self.value_split)
        self.pair = re.compile(
            rf"(?:^|(?<={fs}))([^{fs}{vs}\"']+){vs}"
            rf"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|(?:(?!{fs}).)*)", re.S)
        self.get = column(self.field) if self.field is not None else None

    def pairs(self, text: str) -> dict[str, Any]:
        """The pairs of one text, as fields."""
        out: dict[str, Any] = {}
        for m in self.pair.finditer(text):
            key, value = self.prefix + m.group(1), m.group(2)
            if value[:1] in "\"'" and len(value) >= 2 and value[-1] == value[0]:
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if not value:
                continue  # an empty value is no field (Logstash's allow_empty_values: false)
            if key in out:
                old = out[key]
                out[key] = (old if isinstance(old, list) else [old]) + [value]
            else:
                out[key] = value
        return out

    def process(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            if self.field is None:
                yield self._lines(batch)
            else:
                yield self._records(batch)

    def _lines(self, batch: Batch) -> Batch:
        made: list[Any] = []
        failed: dict[int, str] = {}
        for i, raw in enumerate(batch):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                failed[i] = f"invalid UTF-8 at byte {exc.start}"
                made.append(line_record(raw))
                continue
            fields = self.pairs(text)
            if not fields:
                failed[i] = "no key=value pairs"
                fields = line_record(raw)
            made.append(fields)
        kept = self.failed(batch, failed)
        rows = [i for i in range(len(batch)) if i not in failed or i in kept]
        out = Batch([made[i] for i in rows], source=batch.source,
                    origins=batch.line_origins(np.asarray(rows, dtype=np.int64)))
        self.tag_rows(out, rows, kept)
        return out

    def _records(self, batch: Any) -> Any:
        records = as_records(batch)
        texts = self.get(batch)  # type: ignore[misc]
        failed: dict[int, str] = {}
        made: dict[int, dict[str, Any]] = {}
        for i, text in enumerate(texts):
            if text.__class__ is not str:
                failed[i] = (f"field {self.field!r} is missing" if text is MISSING else
                             f"field {self.field!r} is {json_type(text, article=True)}, "
                             f"not text")
                continue
            fields = self.pairs(text)
            if not fields:
                failed[i] = "no key=value pairs"
            made[i] = fields
        kept = self.failed(batch, failed)
        rows = [i for i in range(len(records)) if i not in failed or i in kept]
        out = records.take(rows)
        for k, i in enumerate(rows):
            if made.get(i):
                out[k] = {**out[k], **made[i]}
        self.tag_rows(out, rows, kept)
        return out
