"""The inline executor: every task in this process, one after another (`-w 1`, and
every followed run)."""
from __future__ import annotations

from typing import Any

from pipeline.engine.tasks import Env, do_task
from pipeline.errors import Stopped
from pipeline.executors.base import Executor, Progress


class InlineExecutor(Executor):
    """Runs every task in this process, one after another."""

    name = "inline"
    follows = True

    def __init__(self, workers: int = 1, slot: str = "", stop: Any = None, **options: Any):
        super().__init__(1, slot, stop, **options)

    def run(self, tasks: list[Any], progress: Progress | None = None) -> list[dict[str, Any]]:
        results = []
        base = [0, 0]  # bytes and lines of the tasks done

        def each(done: int, lines: int) -> None:
            if progress is not None:
                progress(base[0] + done, base[1] + lines)
        for task in tasks:
            if self.stop.is_set():
                raise Stopped(base[1])
            try:
                result = do_task(self.settings, task, Env(stop=self.stop, progress=each))
            except Stopped as exc:
                raise Stopped(base[1] + exc.lines) from None
            base[0] += task.nbytes
            base[1] += result.get("lines", 0)
            results.append(result)
        return results
