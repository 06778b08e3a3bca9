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

import os
from typing import Any, Callable, ClassVar

from pipeline.stage import Option

Progress = Callable[[int, int], None]  # (bytes, lines) read so far, over all tasks
MIN_PARTITION_BYTES = 32 << 20  # below this a default run stays in one process
MIN_TASK_BYTES = 256 << 10      # the smallest input piece worth a map task


class Executor:
    """Base of every executor; see the module docstring."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    follows: ClassVar[bool] = False  # can run a followed (unbounded) input, in this process

    def __init__(self, workers: int, slot: str, stop: Any, **options: Any):
        self.workers = workers
        self.slot = slot      # the run's state directory: for logs and stop files
        self.stop = stop      # the run's stop request: `stop.is_set()`
        declared = {o.name: o for o in self.options}
        for key, value in options.items():
            if key not in declared:
                raise TypeError(f"executor {self.name!r}: unknown option {key!r}")
            setattr(self, key, value)
        for opt in self.options:
            if opt.name not in options:
                setattr(self, opt.name, None if opt.required else opt.default)

    # -- sizing -------------------------------------------------------------------------
    @classmethod
    def create(cls, workers: int, slot: str, stop: Any, **options: Any) -> "Executor":
        """The executor for a run with `workers` workers (a subclass may hand the run to
        another, as local does to inline for one worker)."""
        return cls(workers, slot, stop, **options)

    @classmethod
    def workers_for(cls, requested: int | None, input_bytes: int) -> int:
        """How many workers a run gets: `requested` (-w, `workers:`), or a default for
        an input of this size. They share the memory budget."""
        if requested:
            return requested
        return max(1, min(os.cpu_count() or 1, input_bytes // MIN_PARTITION_BYTES))

    @classmethod
    def piece_bytes(cls, input_bytes: int, workers: int, options: dict[str, Any]) -> int:
        """About how many bytes of input one map task reads: eight tasks per worker keep
        them all busy to the end; one worker needs one task."""
        if workers == 1:
            return max(input_bytes, 1)
        return min(max(input_bytes // (8 * workers), MIN_TASK_BYTES), 256 << 20)

    def reduce_groups(self, nbuckets: int) -> int:
        """Into how many tasks a reduce phase's buckets are grouped."""
        return 4 * max(self.workers, 1)

    # -- running ------------------------------------------------------------------------
    def start(self, settings: Any) -> None:
        """Before any task: `settings` (engine.tasks.RunSettings) is what every task of
        the run needs; send it wherever tasks will run."""
        self.settings = settings

    def run(self, tasks: list[Any], progress: Progress | None = None) -> list[dict[str, Any]]:
        """Run the tasks; their results in task order. Raise the error of the earliest
        failed task (tasks before it run to their end, tasks after it need not start),
        or errors.Stopped when the stop request was set."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers and clusters; called after every run, failed ones too."""


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
