"""Stage lookup by name: built-ins, entry-point plugins, and `package.module:Class`.

Nothing registers itself on import. The caller decides what goes in:

    reg = Registry()
    reg.register(FileInput, origin="sluice (built-in)")
    problems = reg.discover()          # plugins from the `sluice.stages` entry points

A class is checked before it is inserted, so a broken plugin never leaves a half
registered name behind and never hides a built-in.
"""
from __future__ import annotations

import difflib
import importlib
import re
from importlib import metadata
from typing import Iterable

from pipeline.errors import ConfigError
from pipeline.stage import Input, Role, Option, Output, Processor, Reducer, Stage

ENTRY_POINT_GROUP = "sluice.stages"
_BASES = {Role.INPUT: Input, Role.PROCESSOR: Processor, Role.REDUCER: Reducer,
          Role.OUTPUT: Output}


def check_stage_class(obj: object) -> str | None:
    """Why `obj` cannot be registered as a stage, or None when it can."""
    if not (isinstance(obj, type) and issubclass(obj, Stage)):
        return f"{obj!r} is not a subclass of pipeline.Stage"
    if not obj.name or not isinstance(obj.name, str):
        return f"{obj.__qualname__} has no `name`"
    kind = getattr(obj, "role", None)
    if kind not in _BASES or not issubclass(obj, _BASES[kind]):
        return f"{obj.__qualname__}.role {kind!r} does not match its base class"
    if not isinstance(obj.options, tuple) or not all(isinstance(o, Option)
                                                     for o in obj.options):
        return f"{obj.__qualname__}.options must be a tuple of pipeline.Option"
    return None


_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


def import_path(spec: str) -> object:
    """`package.module:Class` -> the object."""
    if not _IMPORT_PATH.match(spec):
        raise ValueError("expected an import path like package.module:Class")
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    obj: object = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry:
    def __init__(self) -> None:
        self._stages: dict[str, type[Stage]] = {}
        self._origins: dict[str, str] = {}

    def register(self, cls: type[Stage], origin: str = "built-in") -> None:
        problem = check_stage_class(cls)
        if problem:
            raise ValueError(problem)
        if cls.name in self._stages and self._stages[cls.name] is not cls:
            raise ValueError(f"stage name {cls.name!r} from {origin} clashes with the "
                             f"one from {self._origins[cls.name]}")
        self._stages[cls.name] = cls
        self._origins[cls.name] = origin

    def register_all(self, classes: Iterable[type[Stage]], origin: str) -> None:
        for cls in classes:
            self.register(cls, origin)

    def discover(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register every valid plugin stage; return one line per plugin refused."""
        problems = []
        for ep in metadata.entry_points(group=group):
            dist = ep.dist.name if ep.dist else "unknown package"
            origin = f"{dist} (entry point {ep.name!r})"
            try:
                cls = ep.load()
                self.register(cls, origin)
            except Exception as exc:  # a broken plugin must not break the rest
                problems.append(f"plugin {origin} skipped: {exc}")
        return problems

    def origin(self, name: str) -> str:
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._stages)

    def get(self, name: str) -> type[Stage]:
        """Look up a registered name, or import `package.module:Class`."""
        if ":" in name:
            try:
                cls = import_path(name)
            except Exception as exc:  # a plugin module's own error is the user's to fix
                why = str(exc) or exc.__class__.__name__
                if not isinstance(exc, (ImportError, AttributeError, ValueError)):
                    why = f"{exc.__class__.__name__}: {why}"
                raise ConfigError(f"cannot import stage {name!r}: {' '.join(why.split())}"
                                  ) from None
            problem = check_stage_class(cls)
            if problem:
                raise ConfigError(f"stage {name!r}: {problem}")
            return cls  # type: ignore[return-value]
        try:
            return self._stages[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._stages, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown stage {name!r}{hint}") from None
