"""Slots: where one run (and each of its tasks) keeps its checkpoints, and who holds it.

    STATE_DIR/<input>-<hash>/          the run's slot: plan.json, one directory per task
    STATE_DIR/<input>-<hash>.lock      held while a run uses the slot; holds its pid

`open_slot()` resumes a list of stages from a slot's newest usable checkpoint, or
clears the slot and starts over; `Checkpointer` decides when to write the next one
(every N records or S seconds, and at the end). A checkpoint that cannot be written
(full disk, I/O error) is a warning, not a failure: the run goes on and tries again at
the next one, and the last good checkpoint still stands.

`SlotLock` is where a run first touches the state directory: it is created 0700, or
refused on one line (not a directory, not writable, writable by others) before any work.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import sys
import time
from typing import Any, Callable

from .checkpoint import (CheckpointStore, CorruptCheckpoint, make_private_dirs,
                         open_private, trust_problem, untrusted)
from .config import PipelineConfig
from .deadletter import DeadLetter
from .errors import CheckpointFailed, DamagedState, PathError, SluiceError, reason
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


def _warn(text: str) -> None:
    print(f"sluice: warning: {text}", file=sys.stderr)


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
        if store.seq:  # resumed: that checkpoint, until a newer one is written
            self.good = stages[0].where() or f"checkpoint {store.seq}"

    def __call__(self, records: int, at_end: bool) -> None:
        self.pending += records
        if at_end or self.pending >= self.every_records or (
                self.pending and time.monotonic() - self.last >= self.every_seconds):
            self.save(complete=at_end)

    def save(self, complete: bool) -> bool:
        """Write a checkpoint now; False (after a warning) if it could not be written."""
        where = self.stages[0].where()
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
        self.count += 1
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
    if tree.get("version") != header.get("version") or tree.get("config") != header["config"]:
        problem = "the config changed"
    elif tree["dead_letter"]["path"] != os.path.abspath(dead.path):
        problem = "the dead-letter file changed"
    elif "task" in header:  # a planned task: the plan has already checked the input
        same = all(tree.get(k) == header[k] for k in ("task", "segment", "where", "plan"))
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
    notices.append(f"resumed at {source.where()}"
                   + (" (already complete: nothing new to read)" if tree["complete"]
                      and not source.resume_has_more() else ""))
    return True


def clear_slot(slot: str) -> None:
    """Remove a slot's saved state, or say on one line why it cannot be removed."""
    try:
        shutil.rmtree(slot)
    except OSError as exc:
        raise PathError(f"saved state {slot}: cannot remove it to start over: "
                        f"{exc.filename}: {reason(exc)}") from None


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
        return stages, store, collect_counters(stages[:1]).get("lines", 0)
    if os.path.isdir(slot):
        clear_slot(slot)
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


def open_state_dir(state_dir: str) -> None:
    """Create the state directory (0700) or check the one there; PathError (one line,
    exit 2) if it cannot be used: not a directory, not creatable, not writable."""
    what = f"state directory {state_dir}"
    if os.path.lexists(state_dir) and not os.path.isdir(state_dir):
        raise PathError(f"{what}: expected a directory, got a file; use another --state-dir")
    try:
        make_private_dirs(state_dir)
    except OSError as exc:
        raise PathError(f"{what}: cannot create it: {reason(exc)}; use another "
                        f"--state-dir") from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise PathError(f"{what}: expected a directory you can write, got one you cannot "
                        f"(mode {os.stat(state_dir).st_mode & 0o777:04o}); use another "
                        f"--state-dir")


def check_slot(state_dir: str, slot: str) -> None:
    """Before any work: the state directory, and everything in the slot, must be this
    user's and writable by nobody else, or saved pickles could be someone else's code.
    Refuses (UntrustedState, exit 2) naming the first offending path."""
    problem = trust_problem(os.stat(state_dir))
    if problem:
        raise untrusted("state directory", state_dir, problem, verb="use")
    for path in (slot, slot + ".lock"):
        if os.path.islink(path):
            raise _linked(path)
    if not os.path.isdir(slot):
        return
    for root, dirs, files in os.walk(slot):
        for name in [""] + sorted(dirs) + sorted(files):
            path = os.path.join(root, name) if name else root
            try:
                st = os.lstat(path)
            except OSError:
                continue  # gone meanwhile: nothing to load
            if stat.S_ISLNK(st.st_mode):
                raise _linked(path)
            problem = trust_problem(st)
            if problem:
                raise untrusted("saved state", path, problem, verb="use")


def _linked(path: str) -> PathError:
    """Sluice makes its own files and directories in a slot; a symbolic link there was
    put by someone else, and following it could read or delete what it points to."""
    return PathError(f"refusing to use saved state {path}: expected a file or directory "
                     f"Sluice made, got a symbolic link; remove it (or use another "
                     f"--state-dir)")


class SlotLock:
    """An exclusive lock on a slot, so two runs never write the same state.

    Entering it opens (or creates) the state directory and checks the slot first (see
    `open_state_dir`, `check_slot`). The lock file holds the holder's pid; a refused run
    names it and says whether that process is alive. The descriptor is close-on-exec
    and no worker is forked, so no process but the run itself can hold the lock.
    """

    def __init__(self, slot: str):
        self.slot = slot
        self.fd: int | None = None

    def __enter__(self) -> str:
        import fcntl

        path = self.slot + ".lock"
        state_dir = os.path.dirname(path) or "."
        open_state_dir(state_dir)
        if os.path.islink(path):
            raise _linked(path)
        try:
            self.fd = open_private(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW)
        except OSError as exc:
            raise PathError(f"lock file {path}: cannot open it: {reason(exc)}; use another "
                            f"--state-dir") from None
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
        try:
            check_slot(state_dir, self.slot)
        except BaseException:
            self.__exit__()
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self.slot

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None
