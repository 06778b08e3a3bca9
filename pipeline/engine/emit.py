"""Showing a followed run's current result, while it goes on reading (`--follow`).

At a batch boundary, when new lines have come in and `--emit-every` seconds have
passed, the job calls `emit()`: every reducer gives its result so far
(`Reducer.current()`, which leaves its state as it is), and the tails run into fresh
outputs, which replace what they showed last time: a file is rewritten atomically,
the summary on stdout is printed again, followed by an empty line.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from pipeline.config import PipelineConfig
from pipeline.engine.options import JobOptions
from pipeline.engine.results import captured
from pipeline.engine.tasks import leaf_position
from pipeline.errors import SluiceError
from pipeline.executors import resolve
from pipeline.stage import Batch, Role, Stage
from pipeline.state.deadletter import DeadLetter


def emit(job: Any, stages: list[Stage]) -> None:
    """Show the current result of `job`, whose one map task holds `stages`."""
    plan = job.plan
    task, seg = plan.map_tasks(0)[0], plan.segments[0]
    streams: dict[tuple[int, int], Callable[[], Iterator[Batch]]] = {}
    for j, leaf in enumerate(seg.leaves):
        live = stages[leaf_position(task, j)]
        if leaf.stage is None:  # a capture: its records so far
            live.spill.mark(durable=False)  # type: ignore[attr-defined]
            streams[(0, j)] = lambda j=j: captured([task.leaf_dir(j)])
        else:  # the reducer's own view of its result so far
            streams[(0, j)] = (lambda live=live: live.current(  # type: ignore[attr-defined]
                job.settings.reduce_bytes))
    quiet = DeadLetter(None)  # the tails' rejects are kept by the final run only
    for tail in plan.tails:
        job.tail(tail, streams.pop(tail.source), quiet, emitting=True)


def check_follow(cfg: PipelineConfig, opts: JobOptions, segments: list[Any]) -> None:
    """A followed run is one process, with one reducer on each path."""
    kind, _ = resolve(cfg, opts.executor, opts.executor_options)
    if not kind.follows:
        raise SluiceError(f"--follow runs in one process: leave out --executor {kind.name}")
    if (opts.workers or cfg.workers or 1) > 1:
        raise SluiceError("--follow runs in one process: leave out -w/--workers (and "
                          "`workers:` in the config), or set it to 1")
    if any(seg.source is not None for seg in segments):
        raise SluiceError("--follow takes at most one reducer on each path from the input "
                          "to an output; this config has a reducer after another")
    for path in [cfg.trunk] + [cfg.trunk + idx for idx in cfg.branches.values()]:
        specs = [cfg.stages[i] for i in path]
        reducers = [s for s in specs if s.cls.role is Role.REDUCER]
        out = specs[-1]
        if reducers and out.cls.role is Role.OUTPUT and getattr(out.cls, "appends", False) \
                and out.options.get("mode", "insert") == "insert" \
                and reducers[-1].options.get("window") is None:
            raise SluiceError(
                f"--follow: {out.name} (line {out.line}) inserts rows, and {reducers[-1].name} "
                f"(line {reducers[-1].line}) shows a result that changes while the log grows: "
                f"each emission would insert it again; give {out.name} `mode: upsert` and "
                f"`key`, or {reducers[-1].name} a `window` (a window's rows never change)")
