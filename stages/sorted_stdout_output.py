"""sorted-stdout-output: print the site summary, sorted by site id."""
from __future__ import annotations

import sys
from typing import Any, Iterator

from pipeline import Batch, Output

from pipeline.outputs import write_stdout_text


def format_summary(rows: list[tuple[str, int, int, int, int]]) -> str:
    # sorted() on str is Unicode code-point order, as configs/summary.md asks
    return "".join(f"{site},messages={m},emails={e},operators={o},visitors={v}\n"
                   for site, m, e, o, v in sorted(rows))


class SortedStdoutOutput(Output):
    """Print `site_id,messages=N,emails=N,operators=N,visitors=N` lines, sorted.

        - sorted-stdout-output: {}

    Nothing is printed until the whole input has been consumed. A followed run
    (`--follow`) prints the whole summary at each emission, then one empty line.
    """

    name = "sorted-stdout-output"
    accepts = ("summary-row",)

    @classmethod
    def destinations(cls, options: dict[str, Any]) -> list[str]:
        return ["-"]

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.stream = None  # tests may point this elsewhere; None means sys.stdout

    def write(self, batches: Iterator[Batch]) -> None:
        rows: list[Any] = []
        for batch in batches:
            rows.extend(batch)
        text = format_summary(rows)
        if getattr(self.ctx, "emitting", False):
            text += "\n"  # a live run prints a summary per emission: one empty line after each
        write_stdout_text(self.stream or sys.stdout, text)
