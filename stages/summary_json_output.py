"""summary-json-output: the site summary as one JSON document."""
from __future__ import annotations

import json
import sys
from typing import Any, Iterator

import msgspec

from pipeline import Batch, Option, Output, a_path

from pipeline.outputs import NEW, ResumableFile, write_stdout_text

FIELDS = ("site_id", "messages", "emails", "operators", "visitors")


class SummaryJsonOutput(Output):
    """Print the site summary as a JSON document, sites sorted by site_id.

        - summary-json-output: {}

    Output: `{"sites": [{"site_id": "123", "messages": 1, "emails": 0, "operators": 1,
    "visitors": 2}, ...]}`. `path: FILE` writes it atomically to a file instead.
    Takes the (site_id, messages, emails, operators, visitors) records of
    site-state-reducer, which it sorts. Any other records (the objects of aggregate,
    mutate or json-decode) go into the list as they are, in the order they came.
    """

    name = "summary-json-output"
    accepts = ("summary-row", "object")
    options = (Option("path", str, "-", 'file to write, or "-" for stdout', check=a_path),)

    def write(self, batches: Iterator[Batch]) -> None:
        rows: list[Any] = []
        for batch in batches:
            rows.extend(batch)
        if all(isinstance(row, (tuple, list)) for row in rows):
            items = [dict(zip(FIELDS, row)) for row in sorted(rows)]
        else:
            items = [row if isinstance(row, dict) else
                     dict(zip(FIELDS, row)) if isinstance(row, (tuple, list)) else
                     msgspec.to_builtins(row) for row in rows]
        doc = {"sites": items}
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        if self.path == "-":
            write_stdout_text(sys.stdout, text)
            return
        out = ResumableFile(self.path)
        out.open(NEW)
        try:
            out.write(text.encode("utf-8"))
            out.commit()
        finally:
            out.close()
