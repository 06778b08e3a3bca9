"""summary-json-output: the site summary as one JSON document."""
from __future__ import annotations

import json
import sys
from typing import Any, Iterator

from pipeline import Batch, Option, Output

from .resumable_file import ResumableFile

FIELDS = ("site_id", "messages", "emails", "operators", "visitors")


class SummaryJsonOutput(Output):
    """Print the site summary as a JSON document, sites sorted by site_id.

        - summary-json-output: {}

    Output: `{"sites": [{"site_id": "123", "messages": 1, "emails": 0, "operators": 1,
    "visitors": 2}, ...]}`. `path: FILE` writes it atomically to a file instead.
    Takes the (site_id, messages, emails, operators, visitors) records of
    site-state-reducer.
    """

    name = "summary-json-output"
    options = (Option("path", str, "-", 'file to write, or "-" for stdout'),)

    def write(self, batches: Iterator[Batch]) -> None:
        rows: list[Any] = []
        for batch in batches:
            rows.extend(batch)
        doc = {"sites": [dict(zip(FIELDS, row)) for row in sorted(rows)]}
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        if self.path == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        out = ResumableFile(self.path)
        out.open(0).write(text.encode("utf-8"))
        out.commit()
