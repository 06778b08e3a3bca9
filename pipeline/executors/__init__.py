"""Executors: what runs the planned tasks, behind one protocol.

    class MyExecutor(Executor):
        name = "my"                        # `executor: {type: my}`, `--executor my`
        options = (Option("queue", str, "default", "where to send tasks"),)
        def start(self, settings): ...     # once, before any task
        def run(self, tasks, progress=None): ...   # results in task order
        def close(self): ...               # always, even after a failure

An executor only *runs* tasks: each one is `pipeline.engine.tasks.do_task(settings,
task)`, done wherever the executor likes, and it returns a small dict; rows, checkpoints
and rejected lines stay on disk in the task's directory. Besides that, an executor owns
its options (under `executor:` in the config), how many workers a run gets and how big
a map task's piece of the input is (its sizing), and how a stop request reaches its
tasks (`self.stop.is_set()`, checked between tasks; each task checks it at every batch
boundary when given it in its Env).

The built-ins are `local` (this process for one worker, else worker processes: see
local.py and inline.py) and `dask` (dask.py). Others are named in the config by import
path (`executor: {type: mypkg.executors:MyExecutor}`) or found through the entry-point
group `sluice.executors`: adding one touches no module of Sluice.
"""
from __future__ import annotations

from typing import Any

from pipeline.executors.base import Executor, Progress

__all__ = ["Executor", "Progress", "builtin_executors", "executor_class", "resolve"]


def builtin_executors() -> list[type[Executor]]:
    from pipeline.executors.dask import DaskExecutor
    from pipeline.executors.local import LocalExecutor

    return [LocalExecutor, DaskExecutor]


def executor_class(name: str) -> type[Executor]:
    """A built-in executor by name, one from the `sluice.executors` entry points, or
    `package.module:Class`; ConfigError (without a place) if there is none."""
    from importlib import metadata

    from pipeline.errors import ConfigError
    from pipeline.registry import import_path

    if ":" in name:
        try:
            cls = import_path(name)
        except Exception as exc:  # the plugin's own error is the user's to fix
            raise ConfigError(f"cannot import executor {name!r}: {exc}") from None
    else:
        known = {c.name: c for c in builtin_executors()}
        for ep in metadata.entry_points(group="sluice.executors"):
            known.setdefault(ep.name, ep)  # type: ignore[arg-type]
        if name not in known:
            import difflib
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown executor {name!r}{hint}; expected "
                              f"{', '.join(sorted(known))}, or package.module:Class")
        cls = known[name]
        if not isinstance(cls, type):  # an entry point
            try:
                cls = cls.load()  # type: ignore[attr-defined]
            except Exception as exc:
                raise ConfigError(f"cannot load executor {name!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise ConfigError(f"executor {name!r}: {cls!r} is not a subclass of "
                          f"pipeline.executors.Executor")
    return cls


def resolve(cfg: Any, name: str | None = None, flags: dict[str, Any] | None = None
            ) -> tuple[type[Executor], dict[str, Any]]:
    """The executor a run uses (the command line's `name`, else the config's `type`,
    else local) and its options (the config's `executor:` keys, then the command line's
    `flags`), each checked: ConfigError with file:line for a config mistake."""
    from pipeline.config import check_option, suggest
    from pipeline.errors import ConfigError

    lines = cfg.executor_lines
    chosen = name or cfg.executor.get("type", "local")
    try:
        cls = executor_class(chosen)
    except ConfigError as exc:
        where = None if name else lines.get("type")
        raise ConfigError(f"executor: {exc}" if where else str(exc), cfg.path, where) from None
    declared = {o.name: o for o in cls.options}
    options: dict[str, Any] = {}
    given = [(k, v, lines.get(k)) for k, v in cfg.executor.items() if k != "type"]
    given += [(k, v, None) for k, v in (flags or {}).items() if v is not None]
    for key, value, line in given:
        if key not in declared:
            flag = f"--{key.replace('_', '-')}" if line is None else f"{key!r}"
            raise ConfigError(f"executor: {flag} is not an option of executor {cls.name!r}"
                              f"{suggest(key, declared) if line else ''}; it takes "
                              f"{', '.join(declared) or 'none'}",
                              cfg.path if line else None, line)
        problem = check_option(cls.name, declared[key], value, owner="executor")
        if problem:
            raise ConfigError(problem, cfg.path if line else None, line)
        options[key] = value
    return cls, options
