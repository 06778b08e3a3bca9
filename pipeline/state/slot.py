"""A slot: where one run (and each of its tasks) keeps its state, and who holds it.

    STATE_DIR/<input>-<hash>/          the run's slot: plan.json, one directory per task
    STATE_DIR/<input>-<hash>.lock      held while a run uses the slot; holds its pid

`SlotLock` is where a run first touches the state directory: it is created 0700, or
refused on one line (not a directory, not writable, writable by others, a symbolic
link where Sluice keeps its own files) before any work.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from typing import Any

from pipeline.errors import PathError, SluiceError, reason
from pipeline.state.trust import make_private_dirs, open_private, trust_problem, untrusted


def slot_dir(state_dir: str, config_path: str, source: str) -> str:
    """One slot per (config file, input described as `source`): a changed one is
    detected, not hidden."""
    who = f"{os.path.abspath(config_path)}\0{source}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in source)[:60]
    return os.path.join(state_dir, f"{name}-{hashlib.sha256(who.encode()).hexdigest()[:12]}")


def clear_slot(slot: str) -> None:
    """Remove a slot's saved state, or say on one line why it cannot be removed."""
    try:
        shutil.rmtree(slot)
    except OSError as exc:
        raise PathError(f"saved state {slot}: cannot remove it to start over: "
                        f"{exc.filename}: {reason(exc)}") from None


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
