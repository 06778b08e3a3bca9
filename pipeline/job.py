"""One run of a configured pipeline: build, (resume,) run, report."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .config import PipelineConfig
from .deadletter import DeadLetter
from .runner import Context, run_chain
from .stage import Stage

DEFAULT_STATE_DIR = ".pipeline-state"


@dataclass
class JobOptions:
    state_dir: str = DEFAULT_STATE_DIR
    dead_letter: str | None = None   # default: STATE_DIR/dead_letter.jsonl
    strict: bool = False
    notices: list[str] = field(default_factory=list)

    @property
    def dead_letter_path(self) -> str:
        return self.dead_letter or os.path.join(self.state_dir, "dead_letter.jsonl")


@dataclass
class RunReport:
    counters: dict[str, int]
    rejected: int
    dead_letter: str
    notices: list[str]

    def summary_line(self) -> str:
        c = self.counters
        lines = c.get("lines", 0)
        parts = [f"{lines:,} lines read", f"{c.get('records', 0):,} records",
                 f"{c.get('duplicates', 0):,} duplicates skipped"]
        tail = f"rejected {self.rejected:,} of {lines:,} lines"
        if self.rejected:
            tail += f" (reasons in {self.dead_letter})"
        return ", ".join(parts) + "; " + tail


def collect_counters(stages: list[Stage]) -> dict[str, int]:
    out: dict[str, int] = {}
    for stage in stages:
        for key, value in stage.counters().items():
            out[key] = out.get(key, 0) + value
    return out


def run_job(cfg: PipelineConfig, opts: JobOptions) -> RunReport:
    stages = cfg.build()
    dead = DeadLetter(opts.dead_letter_path, strict=opts.strict)
    dead.start(0)
    try:
        run_chain(stages, Context(dead))
    finally:
        dead.close()
    return RunReport(collect_counters(stages), dead.count, dead.path, opts.notices)
