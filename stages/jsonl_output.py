"""jsonl-output: one JSON document per record, to a file or stdout."""
from __future__ import annotations

from typing import Any, Iterator

from pipeline import Batch, Option, Output, a_path

from pipeline.outputs import NEW, ResumableFile, Stdout, json_lines


class JsonlOutput(Output):
    """Write each record as one line of JSON.

        - jsonl-output:
            path: out.jsonl

    The file is written as `PATH.partial` and renamed to PATH at the end, so readers
    never see half a file. It takes part in checkpoints: a resumed run cuts the partial
    file back to the checkpointed length, so no line is written twice. `path: "-"`
    writes to stdout (which cannot be taken back, so a resumed run writes again).
    Structs, dicts, lists and tuples are all encoded as JSON; columns (pipeline.columns)
    give the same text, each record's fields in its own order.
    """

    name = "jsonl-output"
    columnar = True
    options = (Option("path", str, doc='file to write, or "-" for stdout', check=a_path),)

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.written = NEW
        self.file = None if self.path == "-" else ResumableFile(self.path)

    def snapshot(self) -> dict[str, int]:
        return self.file.mark() if self.file else NEW

    def restore(self, state: dict[str, int]) -> None:
        self.written = state

    def describe(self) -> str:
        return f"{self.name}({self.path})"

    @property
    def in_parts(self) -> bool:
        return self.file is not None

    def encode(self, batch: Any) -> bytes:
        return json_lines(batch)

    def write(self, batches: Iterator[Batch]) -> None:
        if self.file is None:
            out = Stdout(self.ctx)  # EPIPE: discards, and the engine stops the run
            for batch in batches:
                out.write(self.encode(batch))
            out.finish()
            return
        self.file.open(self.written)
        try:
            for batch in batches:
                self.file.write(self.bytes_of(batch))
            self.file.commit()
        finally:
            self.file.close()
