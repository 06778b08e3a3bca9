"""What a run reports: counts, rejects, per-stage metrics, phase times."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .deadletter import DeadLetter


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
        parts = [read, f"{c.get('records', 0):,} records",
                 f"{c.get('duplicates', 0):,} duplicates skipped"]
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
