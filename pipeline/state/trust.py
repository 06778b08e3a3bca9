"""State that only its owner can have written: private directories and files, and the
check made before anything saved is unpickled (unpickling runs code)."""
from __future__ import annotations

import os
import stat

from pipeline.errors import UntrustedState


def make_private_dirs(path: str) -> None:
    """Create `path`, and any missing parent, as 0700: state is its owner's alone."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    if parent != os.path.abspath(path):
        make_private_dirs(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def open_private(path: str, flags: int) -> int:
    """os.open() that creates the file 0600."""
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


def trust_problem(st: os.stat_result) -> str | None:
    """Why a file or directory with this stat could hold someone else's data, or None."""
    me = os.geteuid()
    if st.st_uid != me:
        return f"got owner uid {st.st_uid} (you are uid {me})"
    if st.st_mode & 0o022:
        who = {0o020: "group", 0o002: "others"}.get(st.st_mode & 0o022, "group and others")
        return f"got mode {stat.S_IMODE(st.st_mode):04o} (writable by {who})"
    return None


def untrusted(what: str, path: str, problem: str, verb: str = "load") -> UntrustedState:
    kind = "a directory" if os.path.isdir(path) else "a file"
    fix = (f"chmod go-w {path} if you trust it" if problem.startswith("got mode")
           else f"remove {path} if you do not trust it")
    return UntrustedState(
        f"refusing to {verb} {what} {path}: expected {kind} owned by you and not writable "
        f"by group or others, {problem}; another user could have written it, and loading "
        f"it could run their code as you. Fix: {fix}, or use another --state-dir")


def check_trusted(path: str, what: str) -> None:
    """Refuse (UntrustedState) to unpickle `path` unless it and its directory are ours
    and nobody else can write them: a planted pickle would run code as this user."""
    for p, w in ((os.path.dirname(os.path.abspath(path)), "the directory of " + what),
                 (path, what)):
        problem = trust_problem(os.stat(p))
        if problem:
            raise untrusted(w, p, problem)


def fsync_path(path: str) -> None:
    """fsync a file or a directory (after a rename in it) by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
