"""The Executor protocol (see pipeline/executors/__init__.py for what an executor is)."""
from __future__ import annotations

import os
from typing import Any, Callable, ClassVar

from pipeline.stage import Option, bind_options

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
        for opt in bind_options(self, self.options, options, f"executor {self.name!r}"):
            setattr(self, opt.name, None)  # a required option not given: unset

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
