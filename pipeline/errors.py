"""Errors a user can cause, each with its documented exit code.

Anything else that escapes is a bug and is allowed to print a traceback. Messages say
what failed, where (the path), what was expected and what was found, on one line.
"""
from __future__ import annotations

import os

EXIT_OK = 0
EXIT_BAD_INPUT = 1   # a rejected line under --strict
EXIT_USAGE = 2       # bad command line, config, path, or a file that cannot be written
EXIT_INTERRUPTED = 130
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # a run stopped by a signal
EXIT_SIGPIPE = 141   # 128 + SIGPIPE: what a shell reports for a tool killed by SIGPIPE

RESUME = "nothing is lost: once that is fixed, rerun the same command to resume from " \
         "the last good checkpoint"


class SluiceError(Exception):
    """A user error: printed as one line on stderr, never as a traceback."""

    exit_code = EXIT_USAGE


class ConfigError(SluiceError):
    """A config that cannot run: names the file and line when it knows them."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 column: int | None = None):
        at = f"{line}:{column}" if line and column else f"{line}"
        where = f"{path}:{at}: " if path and line else (f"{path}: " if path else "")
        super().__init__(where + message)


class InputError(SluiceError):
    """The input cannot be read (missing file, permission, ...)."""


class PathError(SluiceError):
    """A path the user gave (state directory, dead-letter file, output, --stats-json)
    cannot be used: `what PATH: problem`."""


def reason(exc: BaseException) -> str:
    """An OS error in words, e.g. 'No space left on device'."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__


class WriteFailed(SluiceError):
    """A file the run writes (an output, the dead-letter file, a spill file) cannot be
    written: what was being written would be lost, so the run stops. Its last good
    checkpoint still describes the input up to a batch boundary, so a rerun resumes."""

    def __init__(self, what: str, path: str, why: str, verb: str = "write"):
        self.what, self.path, self.why, self.verb = what, path, why, verb
        super().__init__(f"cannot {verb} {what} {path}: {why}; {RESUME}")

    @property
    def short(self) -> str:
        return f"cannot {self.verb} {self.what} {self.path}: {self.why}"

    def __reduce__(self):  # keep the fields across a worker process boundary
        return (self.__class__, (self.what, self.path, self.why, self.verb))


class CheckpointFailed(WriteFailed):
    """A checkpoint could not be written (or a file it records could not be synced).
    The Checkpointer catches it: the run carries on with the last good checkpoint. Where
    it escapes (a reduce task's files), it stops the run like any WriteFailed."""


class DamagedState(SluiceError):
    """Saved state that fails its checksum, or is missing a part: never used. The engine
    starts the task (or the whole run) over and says so."""

    def __init__(self, path: str, why: str):
        self.path, self.why = path, why
        super().__init__(f"saved state {path} is damaged ({why})")

    def __reduce__(self):  # keep the fields across a worker process boundary
        return (self.__class__, (self.path, self.why))


class OldState(SluiceError):
    """Saved state written by another version of Sluice (its layout, or the classes its
    checkpoints name, differ): refused, never guessed at."""

    def __init__(self, path: str):
        super().__init__(f"saved state {path} was written by another version of Sluice; "
                         f"rerun with --fresh to discard it and start over")


class UntrustedState(SluiceError):
    """Saved state that another user could have written: it is never unpickled."""


class OutputClosed(SluiceError):
    """The reader of standard output went away (EPIPE): the run ends quietly, with the
    exit code a shell gives a tool killed by SIGPIPE."""

    exit_code = EXIT_SIGPIPE

    def __init__(self, message: str = "standard output was closed by its reader"):
        super().__init__(message)


class RejectedLine(SluiceError):
    """A rejected line under --strict."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, reason: str, line: int | None = None, stage: str = "",
                 file: str | None = None):
        where = f"line {line}" if line is not None else f"stage {stage!r}"
        if file:
            where = f"{file} {where}"
        super().__init__(f"{where}: {reason} (--strict stops at the first rejected line)")
        self.reason, self.line, self.stage, self.file = reason, line, stage, file

    def __reduce__(self):  # keep line and reason across a worker process boundary
        return (RejectedLine, (self.reason, self.line, self.stage, self.file))


def writable_problem(path: str) -> str | None:
    """Why a file could not be created or appended to at `path`, or None. Checked before
    a run, so a mistyped path fails at once rather than after the work."""
    if os.path.isdir(path):
        return "expected a file, got a directory"
    if os.path.lexists(path):
        if os.access(path, os.W_OK):
            return None
        return "expected a file you can write, got one you cannot"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot create it: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create it: {parent} is not writable"
    return None


class Interrupted(SluiceError):
    """The run stopped on a signal after writing a checkpoint."""

    def __init__(self, signal_name: str, lines: int | None):
        self.signal_name = signal_name
        self.exit_code = EXIT_CODES.get(signal_name, 130)
        if lines is None:  # before its tasks started
            super().__init__(f"stopped by {signal_name} before any input was read")
        else:
            super().__init__(f"stopped by {signal_name} at line {lines:,}; rerun the same "
                             f"command to resume")


class Stopped(Exception):
    """Tasks stopped at a batch boundary because a stop was requested; `lines` counts
    the input lines they had read (and checkpointed)."""

    def __init__(self, lines: int = 0):
        super().__init__(f"stopped after {lines} lines")
        self.lines = lines

    def __reduce__(self):  # keep `lines` across a worker's socket
        return (Stopped, (self.lines,))
