"""One run of a configured pipeline: build, resume if a checkpoint allows, run, report."""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
import sys
from typing import Any, Callable

from .checkpoint import CheckpointStore
from .config import PipelineConfig
from .deadletter import DeadLetter
from .runner import Context, run_chain
from .stage import Input, Stage

DEFAULT_STATE_DIR = ".pipeline-state"
DEFAULT_EVERY_RECORDS = 1_000_000
DEFAULT_EVERY_SECONDS = 30.0
STATE_VERSION = 1


@dataclass
class JobOptions:
    state_dir: str = DEFAULT_STATE_DIR
    dead_letter: str | None = None   # default: STATE_DIR/dead_letter.jsonl
    strict: bool = False
    checkpoint: bool | None = None   # None: the config decides (default on)
    every_records: int | None = None
    every_seconds: float | None = None
    fresh: bool = False
    notify: Callable[[str], None] = lambda text: print(f"sluice: {text}", file=sys.stderr)

    @property
    def dead_letter_path(self) -> str:
        return self.dead_letter or os.path.join(self.state_dir, "dead_letter.jsonl")


@dataclass
class RunReport:
    counters: dict[str, int]
    rejected: int
    dead_letter: str
    notices: list[str] = field(default_factory=list)
    checkpoints: int = 0
    state_bytes: int = 0
    resumed_lines: int | None = None  # lines already counted by the checkpoint resumed

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


def collect_counters(stages: list[Stage]) -> dict[str, int]:
    out: dict[str, int] = {}
    for stage in stages:
        for key, value in stage.counters().items():
            out[key] = out.get(key, 0) + value
    return out


def slot_dir(state_dir: str, cfg: PipelineConfig, source: Input) -> str:
    """One checkpoint slot per (config file, input): a changed one is detected, not hidden."""
    who = f"{os.path.abspath(cfg.path)}\0{source.describe()}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.describe())[:60]
    return os.path.join(state_dir, f"{name}-{hashlib.sha256(who.encode()).hexdigest()[:12]}")


class Checkpointer:
    """Decides when to checkpoint and writes one consistent snapshot of the whole run."""

    def __init__(self, store: CheckpointStore, stages: list[Stage], dead: DeadLetter,
                 header: dict[str, Any], every_records: int, every_seconds: float):
        self.store, self.stages, self.dead, self.header = store, stages, dead, header
        self.every_records, self.every_seconds = every_records, every_seconds
        self.pending = 0
        self.last = time.monotonic()
        self.count = 0

    def __call__(self, records: int, at_end: bool) -> None:
        self.pending += records
        if at_end or self.pending >= self.every_records or (
                time.monotonic() - self.last >= self.every_seconds):
            self.save(complete=at_end)

    def save(self, complete: bool) -> None:
        body = dict(self.header)
        body["complete"] = complete
        body["dead_letter"] = {"path": os.path.abspath(self.dead.path),
                               "bytes": self.dead.tell(), "count": self.dead.count}
        body["stages"] = [s.snapshot() for s in self.stages]
        self.store.save(body)
        self.pending, self.last = 0, time.monotonic()
        self.count += 1


def _resume(store: CheckpointStore, header: dict[str, Any], stages: list[Stage],
            dead: DeadLetter, notices: list[str]) -> bool:
    """Restore every stage from the newest good checkpoint; False means start over."""
    tree = store.load(notices.append)
    if tree is None:
        return False
    source = stages[0]
    assert isinstance(source, Input)
    if tree.get("version") != STATE_VERSION or tree["config"] != header["config"]:
        problem = "the config changed"
    elif tree["dead_letter"]["path"] != os.path.abspath(dead.path):
        problem = "the dead-letter file changed"
    else:
        problem = source.resume_problem(tree["input"], tree["stages"][0])
    if problem:
        notices.append(f"{problem} since the last checkpoint; starting over")
        return False
    for stage, state in zip(stages, tree["stages"]):
        stage.restore(state)
    dead.start(keep_bytes=tree["dead_letter"]["bytes"])
    dead.count = tree["dead_letter"]["count"]
    notices.append(f"resumed at {source.where()}"
                   + (" (already complete: nothing new to read)" if tree["complete"]
                      and not source.resume_has_more() else ""))
    return True


class _Notices(list):
    """A list of notices that also shows each one as it is added."""

    def __init__(self, notify: Callable[[str], None]):
        super().__init__()
        self.notify = notify

    def append(self, text: str) -> None:
        super().append(text)
        self.notify(text)


def run_job(cfg: PipelineConfig, opts: JobOptions) -> RunReport:
    stages = cfg.build()
    source = stages[0]
    assert isinstance(source, Input)
    dead = DeadLetter(opts.dead_letter_path, strict=opts.strict)
    notices = _Notices(opts.notify)
    ck = cfg.checkpoint
    enabled = opts.checkpoint if opts.checkpoint is not None else ck.get("enabled", True)
    checkpointer = None
    resumed_lines = None
    if enabled:
        slot = slot_dir(opts.state_dir, cfg, source)
        if opts.fresh and os.path.isdir(slot):
            shutil.rmtree(slot)
            notices.append("--fresh: discarded the saved state")
        header = {"version": STATE_VERSION, "config": cfg.identity(),
                  "input": source.identity()}
        store = CheckpointStore(slot)
        if _resume(store, header, stages, dead, notices):
            resumed_lines = collect_counters(stages[:1]).get("lines", 0)
        else:
            if os.path.isdir(slot):
                shutil.rmtree(slot)
            store = CheckpointStore(slot)
            dead.start(0)
        checkpointer = Checkpointer(
            store, stages, dead, header,
            opts.every_records or ck.get("every_records", DEFAULT_EVERY_RECORDS),
            opts.every_seconds or ck.get("every_seconds", DEFAULT_EVERY_SECONDS))
    else:
        dead.start(0)
    try:
        run_chain(stages, Context(dead), on_barrier=checkpointer)
    finally:
        dead.close()
    report = RunReport(collect_counters(stages), dead.count, dead.path, list(notices),
                       resumed_lines=resumed_lines)
    if checkpointer is not None:
        report.checkpoints = checkpointer.count
        report.state_bytes = checkpointer.store.size_bytes()
    return report
