"""Slots: where one run (and each of its tasks) keeps its checkpoints, and who holds it.

    STATE_DIR/<input>-<hash>/          the run's slot: plan.json, one directory per task
    STATE_DIR/<input>-<hash>.lock      held while a run uses the slot; holds its pid

`open_slot()` resumes a list of stages from a slot's newest usable checkpoint, or
clears the slot and starts over; `Checkpointer` decides when to write the next one
(every N records or S seconds, and at the end).
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from typing import Any, Callable

from .checkpoint import CheckpointStore, CorruptCheckpoint
from .config import PipelineConfig
from .deadletter import DeadLetter
from .errors import SluiceError
from .stage import Input, Stage


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


def slot_dir(state_dir: str, cfg: PipelineConfig, source: Input) -> str:
    """One slot per (config file, input): a changed one is detected, not hidden."""
    who = f"{os.path.abspath(cfg.path)}\0{source.describe()}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.describe())[:60]
    return os.path.join(state_dir, f"{name}-{hashlib.sha256(who.encode()).hexdigest()[:12]}")


class Checkpointer:
    """Decides when to checkpoint and writes one consistent snapshot of the stages."""

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
    if tree.get("version") != header.get("version") or tree.get("config") != header["config"]:
        problem = "the config changed"
    elif tree["dead_letter"]["path"] != os.path.abspath(dead.path):
        problem = "the dead-letter file changed"
    elif "task" in header:  # a planned task: the plan has already checked the input
        same = all(tree.get(k) == header[k] for k in ("task", "segment", "where"))
        problem = None if same else "the plan changed"
    else:
        problem = source.resume_problem(tree["input"], tree["stages"][0])
    if problem:
        notices.append(f"{problem} since the last checkpoint; starting over")
        return False
    try:
        for stage, state in zip(stages, tree["stages"]):
            stage.restore(state)
    except CorruptCheckpoint as exc:
        notices.append(f"the checkpoint in {store.dir} is unusable ({exc}); starting over")
        return False
    dead.start(keep_bytes=tree["dead_letter"]["bytes"])
    dead.count = tree["dead_letter"]["count"]
    notices.append(f"resumed at {source.where()}"
                   + (" (already complete: nothing new to read)" if tree["complete"]
                      and not source.resume_has_more() else ""))
    return True


def open_slot(slot: str, build: Callable[[], list[Stage]], header: dict[str, Any],
              dead: DeadLetter, notices: list[str], fresh: bool = False
              ) -> tuple[list[Stage], CheckpointStore, int | None]:
    """Stages from `build()`, resumed from `slot` if its checkpoint fits; else the slot
    is cleared and freshly built stages start over.

    Returns the stages, the store and, after a resume, the lines already read.
    """
    if fresh and os.path.isdir(slot):
        shutil.rmtree(slot)
        notices.append("--fresh: discarded the saved state")
    stages = build()
    store = CheckpointStore(slot)
    if _resume(store, header, stages, dead, notices):
        return stages, store, collect_counters(stages[:1]).get("lines", 0)
    if os.path.isdir(slot):
        shutil.rmtree(slot)
        stages = build()  # a failed restore may have changed some of them
    dead.start(0)
    return stages, CheckpointStore(slot), None


class Notices(list):
    """A list of notices that also shows each one as it is added."""

    def __init__(self, notify: Callable[[str], None]):
        super().__init__()
        self.notify = notify

    def append(self, text: str) -> None:
        super().append(text)
        self.notify(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SlotLock:
    """An exclusive lock on a slot, so two runs never write the same state.

    The lock file holds the holder's pid; a refused run names it and says whether that
    process is alive. The descriptor is close-on-exec and no worker is forked, so no
    process but the run itself can hold the lock.
    """

    def __init__(self, slot: str):
        self.slot = slot
        self.fd: int | None = None

    def __enter__(self) -> str:
        import fcntl

        path = self.slot + ".lock"
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            os.close(self.fd)
            self.fd = None
            who = "another run"
            if holder.isdigit():
                state = "alive" if _alive(int(holder)) else "no longer alive"
                who = f"another run (pid {holder}, {state})"
            raise SluiceError(f"{who} holds the lock on {self.slot}; wait for it to "
                              f"finish, or use another --state-dir") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self.slot

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None
