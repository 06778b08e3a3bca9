"""What a run reports: counts, rejects, per-stage metrics, phase times, what it resumed;
and the notices it shows on the way."""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.errors import DamagedState
from pipeline.stage import Stage
from pipeline.state.deadletter import DeadLetter


def collect_counters(stages: list[Stage]) -> dict[str, int]:
    out: dict[str, int] = {}
    for stage in stages:
        for key, value in stage.counters().items():
            out[key] = out.get(key, 0) + value
    return out


def add_counters(into: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    for key, value in more.items():
        if not key.startswith("_"):
            into[key] = into.get(key, 0) + value
    return into


class Notices(list):
    """A list of notices that also shows each one as it is added."""

    def __init__(self, notify: Callable[[str], None]):
        super().__init__()
        self.notify = notify

    def append(self, text: str) -> None:
        super().append(text)
        self.notify(text)



@dataclass
class RunReport:
    counters: dict[str, int]
    rejected: int
    dead_letter: str
    notices: list[str] = field(default_factory=list)
    checkpoints: int = 0
    state_bytes: int = 0
    resumed_lines: int | None = None  # lines already counted by the checkpoint resumed
    checkpoint_failures: int = 0  # checkpoints that could not be written (warned about)
    stages: list[dict[str, Any]] = field(default_factory=list)  # per-stage metrics
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds of each phase
    records: int | None = None  # what the first stage after the input passed on, in all

    def stats_table(self) -> str:
        """The per-stage metrics as an aligned text table (this run only)."""
        w = max([24] + [len(m["stage"]) for m in self.stages])
        head = (f"{'stage':<{w}} {'records in':>12} {'records out':>12} {'rejected':>9} "
                f"{'seconds':>8}")
        rows = [head] + [f"{m['stage']:<{w}} {m['records_in']:>12,} {m['records_out']:>12,} "
                         f"{m['rejected']:>9,} {m['seconds']:>8.2f}" for m in self.stages]
        if self.phases:
            rows.append("wall seconds: " + ", ".join(f"{k} {v:.2f}"
                                                     for k, v in self.phases.items()))
        return "\n".join(rows)

    def summary_line(self) -> str:
        c = self.counters
        lines = c.get("lines", 0)
        read = f"{lines:,} lines read"
        if self.resumed_lines is not None:
            read += f" ({lines - self.resumed_lines:,} this run)"
        records = self.records if self.records is not None else c.get("records", 0)
        parts = [read, f"{records:,} records"]
        if "duplicates" in c:  # only where a stage drops duplicates
            parts.append(f"{c['duplicates']:,} duplicates skipped")
        if c.get("unrouted"):  # a route without a default branch dropped some
            parts.append(f"{c['unrouted']:,} unrouted")
        if c.get("kept_with_failures"):  # on_failure: keep
            parts.append(f"{c['kept_with_failures']:,} failures kept in _failures")
        if c.get("dropped_on_failure"):  # on_failure: drop
            parts.append(f"{c['dropped_on_failure']:,} dropped on failure")
        tail = f"rejected {self.rejected:,} of {lines:,} lines"
        if self.rejected:
            tail += f" (reasons in {self.dead_letter})"
        return ", ".join(parts) + "; " + tail


def stage_metrics(meters: list[dict[str, Any]], dead: DeadLetter) -> list[dict[str, Any]]:
    out = []
    for m in meters:
        d = dict(m)
        d["rejected"] = dead.by_stage.get(d["stage"], 0)
        out.append(d)
    return out


def resume_notice(tasks: list[Any], results: list[dict[str, Any]],
                  pending: list[Any]) -> tuple[str | None, int | None]:
    """What a resumed run skips, in words (None: it resumed nothing), and the lines
    read before this run (None if none)."""
    ran = {t.index for t in pending}
    done = [r for t, r in zip(tasks, results) if t.index not in ran]
    midway = [r for t, r in zip(tasks, results)
              if t.index in ran and r["resumed_lines"] is not None]
    if not done and not midway:
        return None, None
    if len(tasks) == 1:
        r = results[0]
        at = r["location"] if done else r["resumed_at"]
        text = f"resumed at {at}" + (" (already complete: nothing new to read)"
                                     if done else "")
    elif not pending:
        text = f"resumed: all {len(tasks)} map tasks had finished (nothing new to read)"
    else:
        parts = []
        if midway:
            parts.append(f"{len(midway)} of {len(tasks)} map tasks at "
                         + ", ".join(r["resumed_at"] for r in midway))
        if done:
            parts.append(f"{len(done)} of {len(tasks)} " + ("had" if midway else
                                                           "map tasks had") + " finished")
        text = "resumed " + "; ".join(parts)
    return text, sum(r["lines"] for r in done) + sum(r["resumed_lines"] for r in midway)


def copy_rejects(tasks: list[Any], results: list[dict[str, Any]], dead: DeadLetter
                 ) -> None:
    """Each map task's rejected lines, in task order, with absolute line numbers."""
    base: dict[str, int] = {}  # lines before the task, in its numbering
    for task, r in zip(tasks, results):
        append_rejects(os.path.join(task.dir, "dead_letter.jsonl"), r["dead_letter"], dead,
                       base.get(task.numbering, 0))
        base[task.numbering] = base.get(task.numbering, 0) + r["lines"]


def append_rejects(path: str, seal: dict[str, int], dead: DeadLetter,
                   line_base: int | None) -> None:
    """Copy a task's rejected lines into the run's dead-letter file, once they are
    checked against what the task's result recorded (`seal`: length and CRC)."""
    data = b""
    if seal["bytes"]:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise DamagedState(path, "missing") from None
    if len(data) != seal["bytes"] or zlib.crc32(data) != seal["crc"]:
        raise DamagedState(path, "it is not what its task recorded")
    for raw in data.splitlines():
        entry = json.loads(raw)
        if line_base is not None and entry.get("line") is not None:
            entry["line"] += line_base
        dead.refuse_if_strict(entry)  # a resumed --strict run meets it here
        dead.append_entry(entry)
