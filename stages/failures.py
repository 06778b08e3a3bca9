"""on_failure: what a processor does with a record it cannot process.

    - where:
        if: "status >= 500"
        on_failure: keep          # dead-letter (the default) | keep | drop

- `dead-letter`: the record goes to the run's dead-letter file with its line, the stage
  and the reason (and is counted in the final line's "rejected").
- `keep`: the record goes on as if the failing step had not been asked for, with a
  `_failures` field: a list of {"stage": ..., "reason": ...}, one per failure, added
  to any the record already had (Logstash's `_grokparsefailure` tag, with its reason).
  It needs object records (a site-event record has no room for the field).
- `drop`: the record is dropped, and only counted ("N dropped on failure").

What "as if not asked for" means is each stage's: `mutate` leaves the field it could
not convert or compute as it was, `where` passes the record on, a `route` branch whose
condition failed does not take it, and `json-decode` makes the line that is not a JSON
object into {"message": the line, "_failures": [...]}.
"""
from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from pipeline import ANY, Option
from pipeline.columns import Columns

from .fields import reject_records

FIELD = "_failures"
POLICIES = ("dead-letter", "keep", "drop")
ON_FAILURE = Option("on_failure", str, "dead-letter",
                    "a record it cannot process: dead-letter, keep (passed on with a "
                    "`_failures` field naming the stage and reason) or drop", choices=POLICIES)
KEPT, DROPPED = "kept_with_failures", "dropped_on_failure"


class OnFailure:
    """Mixed into a processor (before Processor) that declares ON_FAILURE."""

    on_failure: str
    name: str
    ctx: Any
    failures_kept = 0
    failures_dropped = 0

    @classmethod
    def check_kind(cls, options: dict[str, Any], kind: str) -> str | None:
        if options.get("on_failure") == "keep" and kind not in ("object", ANY):
            return (f"on_failure: keep adds a `{FIELD}` field to a record it fails on, so "
                    f"it needs object records; it is given {kind} records")
        return super().check_kind(options, kind)  # type: ignore[misc]

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Any) -> Any:
        return with_failure_field(options, super().output_fields(options, given))  # type: ignore

    def failed(self, batch: Any, failed: dict[int, Any], what: str = "") -> dict[int, Any]:
        """Records of `batch` this stage failed on, each with its reason (or a list of
        them, in order): sent to the dead-letter file (with the first reason), or
        dropped (counted); with `keep`, returned with each reason after `what: `, for
        the stage to pass on and tag() (each reason counts as one failure kept)."""
        if not failed:
            return {}
        if self.on_failure == "dead-letter":
            first = {i: why[0] if isinstance(why, list) else why for i, why in failed.items()}
            reject_records(self.ctx, self.name, batch, first, what)
            return {}
        if self.on_failure == "drop":
            self.failures_dropped += len(failed)
            return {}
        kept = {i: [f"{what}: {w}" if what else w for w in (why if isinstance(why, list)
                                                            else [why])]
                for i, why in failed.items()}
        self.failures_kept += sum(map(len, kept.values()))
        return kept

    def tag(self, records: list[Any], reasons: dict[int, Any]) -> None:
        """Give records[i] (replaced by a copy: another branch may hold the original)
        a `_failures` entry for each of its reasons (a list, or one str)."""
        for i, why in reasons.items():
            record = records[i]
            new = dict(record) if isinstance(record, dict) else msgspec.to_builtins(record)
            old = new.get(FIELD)
            entries = list(old) if isinstance(old, list) else [] if old is None else [old]
            for reason in why if isinstance(why, list) else [why]:
                entries.append({"stage": self.name, "reason": reason})
            new[FIELD] = entries
            records[i] = new

    def tag_rows(self, out: list[Any], rows: Any, kept: dict[int, Any]) -> None:
        """tag() the records of `out` that `kept` names by their place in the batch the
        stage was given; `rows`: that place for each record of `out`, ascending."""
        if kept:
            at = np.searchsorted(np.asarray(rows), list(kept))
            self.tag(out, dict(zip(at.tolist(), kept.values())))

    def failure_counts(self) -> dict[str, int]:
        """For snapshot() and counters(): what keep and drop did so far."""
        return {KEPT: self.failures_kept, DROPPED: self.failures_dropped}

    def restore_failure_counts(self, state: dict[str, int]) -> None:
        self.failures_kept, self.failures_dropped = state[KEPT], state[DROPPED]

    # a stage whose only state is these counts; one with more extends them
    def snapshot(self) -> dict[str, int]:
        return self.failure_counts()

    def restore(self, state: dict[str, int]) -> None:
        self.restore_failure_counts(state)

    def counters(self) -> dict[str, int]:
        return self.failure_counts()


def line_record(raw: bytes) -> dict[str, Any]:
    """What a raw line a parser fails on becomes with `keep`: {"message": the line},
    invalid UTF-8 replaced by U+FFFD (the stage then tags it)."""
    return {"message": raw.decode("utf-8", "replace")}


def with_failure_field(options: dict[str, Any], fields: Any) -> Any:
    """A stage's output fields (None: unknown), with `_failures` if it keeps failures."""
    if options.get("on_failure") == "keep" and fields is not None and FIELD not in fields:
        return (*fields, FIELD)
    return fields


def as_records(batch: Any) -> Any:
    """A batch whose records can be tagged: Columns become dicts."""
    return batch.records() if batch.__class__ is Columns else batch
