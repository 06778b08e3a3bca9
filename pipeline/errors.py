"""Errors a user can cause, each with its documented exit code.

Anything else that escapes is a bug and is allowed to print a traceback.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 1   # a rejected line under --strict
EXIT_USAGE = 2       # bad command line, config, or input path
EXIT_INTERRUPTED = 130


class SluiceError(Exception):
    """A user error: printed as one line on stderr, never as a traceback."""

    exit_code = EXIT_USAGE


class ConfigError(SluiceError):
    """A config that cannot run: names the file and line when it knows them."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(where + message)


class InputError(SluiceError):
    """The input cannot be read (missing file, permission, ...)."""


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
