"""Resuming the stages of a run (or a task) from its slot, and checkpointing them.

`open_slot()` resumes a list of stages from a slot's newest usable checkpoint, or
clears the slot and starts over; `Checkpointer` decides when to write the next one
(every N records or S seconds, and at the end). A checkpoint that cannot be written
(full disk, I/O error) is a warning, not a failure: the run goes on and tries again at
the next one, and the last good checkpoint still stands.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any, Callable

from pipeline.errors import CheckpointFailed, DamagedState, OldState, reason
from pipeline.stage import Input, Stage
from pipeline.state.checkpoint import CheckpointStore, CorruptCheckpoint
from pipeline.state.deadletter import DeadLetter
from pipeline.state.slot import clear_slot


def _warn(text: str) -> None:
    print(f"sluice: warning: {text}", file=sys.stderr)


def job_key(cfg: Any, source: Any) -> str:
    """Which job a run is: its config and its input, as a short hash. An output that
    remembers what it committed outside the state directory (a database) keys it so."""
    body = json.dumps([cfg.identity(), source.identity()], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:24]


class Checkpointer:
    """Decides when to checkpoint and writes one consistent snapshot of the stages.

    A save that fails with an OS error (the store, or the fsync of a file a snapshot
    records) is not fatal: `warn` gets one line naming the reason and the last good
    checkpoint, once per run of failures, and the next trigger tries again. Data that
    cannot be *written* (WriteFailed from an output, spill or dead-letter file) still
    stops the run. `failures` counts the failed saves (for --strict-checkpoints).
    """

    def __init__(self, store: CheckpointStore, stages: list[Stage], dead: DeadLetter,
                 header: dict[str, Any], every_records: int, every_seconds: float,
                 warn: Callable[[str], None] = _warn, label: str = "",
                 records: Callable[[], int] = lambda: 0):
        self.store, self.stages, self.dead, self.header = store, stages, dead, header
        self.records = records  # the run's record count so far, kept with the state
        self.every_records, self.every_seconds = every_records, every_seconds
        self.pending = 0
        self.last = time.monotonic()
        self.count = 0
        self.warn, self.label = warn, label
        self.failures = 0
        self.failing = False
        self.good: str | None = None  # where the last good checkpoint is
        self.last_at: float | None = None  # when the last good one was written (monotonic)
        self.last_seconds = 0.0            # and how long it took
        if store.seq:  # resumed: that checkpoint, until a newer one is written
            self.good = stages[0].location() or f"checkpoint {store.seq}"

    def __call__(self, records: int, at_end: bool) -> None:
        self.pending += records
        if at_end or self.pending >= self.every_records or (
                self.pending and time.monotonic() - self.last >= self.every_seconds):
            self.save(complete=at_end)

    def save(self, complete: bool) -> bool:
        """Write a checkpoint now; False (after a warning) if it could not be written."""
        where = self.stages[0].location()
        began = time.monotonic()
        try:
            body = dict(self.header)
            body["complete"] = complete
            body["dead_letter"] = {"path": os.path.abspath(self.dead.path),
                                   "count": self.dead.count, **self.dead.seal()}
            body["stages"] = [s.snapshot() for s in self.stages]
            body["records"] = self.records()
            self.store.save(body)
        except (CheckpointFailed, OSError) as exc:
            self._failed(where, exc)
            return False
        finally:  # after a failure too: the next trigger tries again
            self.pending, self.last = 0, time.monotonic()
        for stage in self.stages:  # what that checkpoint no longer needs may go now
            stage.committed()
        self.count += 1
        self.last_at = time.monotonic()
        self.last_seconds = self.last_at - began
        self.good, self.failing = where or f"checkpoint {self.store.seq}", False
        return True

    def _failed(self, where: str, exc: BaseException) -> None:
        self.failures += 1
        if self.failing:
            return  # still failing: said once already
        self.failing = True
        why = exc.short if isinstance(exc, CheckpointFailed) else (
            f"{exc.filename}: {reason(exc)}" if isinstance(exc, OSError) and exc.filename
            else reason(exc))
        last = (f"the last good checkpoint is at {self.good}" if self.good else
                "there is no good checkpoint yet (a rerun would start over)")
        at = f" at {where}" if where else ""
        self.warn(f"{self.label}checkpoint{at} not written ({why}); {last}; carrying on, "
                  f"and trying again at the next checkpoint")


def _resume(store: CheckpointStore, header: dict[str, Any], stages: list[Stage],
            dead: DeadLetter, notices: list[str]) -> bool:
    """Restore every stage from the newest good checkpoint; False means start over."""
    tree = store.load(notices.append)
    if tree is None:
        return False
    source = stages[0]
    assert isinstance(source, Input)
    if tree.get("version") != header.get("version"):
        raise OldState(store.dir)
    if tree.get("config") != header["config"]:
        problem = "the config changed"
    elif tree["dead_letter"]["path"] != os.path.abspath(dead.path):
        problem = "the dead-letter file changed"
    elif "task" in header:  # a planned task: the plan has already checked the input
        same = all(tree.get(k) == header[k] for k in ("task", "segment", "piece", "plan"))
        problem = None if same else "the plan changed"
    else:
        problem = source.resume_problem(tree["input"], tree["stages"][0])
    if problem:
        notices.append(f"{problem} since the last checkpoint; starting over")
        return False
    try:
        for stage, state in zip(stages, tree["stages"]):
            stage.restore(state)
        dead.start(keep_bytes=tree["dead_letter"]["bytes"], crc=tree["dead_letter"]["crc"])
    except (CorruptCheckpoint, DamagedState) as exc:
        notices.append(f"the checkpoint in {store.dir} is unusable ({exc}); starting over")
        return False
    dead.count = tree["dead_letter"]["count"]
    notices.append(f"resumed at {source.location()}"
                   + (" (already complete: nothing new to read)" if tree["complete"]
                      and not source.resume_has_more() else ""))
    return True


def resumed_records(store: CheckpointStore) -> int:
    """The record count the checkpoint a store resumed from carried (0 if none)."""
    return int((store.loaded or {}).get("records", 0))


def open_slot(slot: str, build: Callable[[], list[Stage]], header: dict[str, Any],
              dead: DeadLetter, notices: list[str], fresh: bool = False,
              discard: bool = False) -> tuple[list[Stage], CheckpointStore, int | None]:
    """Stages from `build()`, resumed from `slot` if its checkpoint fits; else the slot
    is cleared and freshly built stages start over. `fresh` (--fresh) and `discard`
    (the engine starting over, after saying why) clear it first.

    Returns the stages, the store and, after a resume, the lines already read.
    """
    if (fresh or discard) and os.path.isdir(slot):
        clear_slot(slot)
        if not discard:
            notices.append("--fresh: discarded the saved state")
    stages = build()
    store = CheckpointStore(slot)
    if _resume(store, header, stages, dead, notices):
        return stages, store, stages[0].counters().get("lines", 0)
    if os.path.isdir(slot):
        clear_slot(slot)
        stages = build()  # a failed restore may have changed some of them
    dead.start(0)
    return stages, CheckpointStore(slot), None
