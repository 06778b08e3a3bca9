"""Showing a followed run's current result, while it goes on reading (`--follow`).

At a batch boundary, when new lines have come in and `--emit-every` seconds have
passed, the job calls `emit()`: every reducer's state so far is reduced afresh into a
scratch directory (the state itself is not changed), and the tails run into fresh
outputs, which replace what they showed last time: a file is rewritten atomically,
the summary on stdout is printed again, followed by an empty line.
"""
from __future__ import annotations

import os
import pickle
import shutil
from typing import Any, Callable, Iterator

from pipeline.config import PipelineConfig
from pipeline.state.deadletter import DeadLetter
from pipeline.errors import SluiceError
from pipeline.executors import resolve
from pipeline.engine.results import captured
from pipeline.keyed import KeyedReducer, reduce_buckets, result_batches
from pipeline.engine.options import JobOptions
from pipeline.stage import Batch, Stage
from pipeline.engine.tasks import leaf_position


def emit(job: Any, stages: list[Stage]) -> None:
    """Show the current result of `job`, whose one map task holds `stages`."""
    plan, cfg = job.plan, job.cfg
    task, seg = plan.map_tasks(0)[0], plan.segments[0]
    for stage in stages:
        if isinstance(stage, KeyedReducer) and stage.spill is not None:
            stage.spill.mark(durable=False)  # every row so far readable on disk
    scratch = os.path.join(job.settings.slot, "emit")
    shutil.rmtree(scratch, ignore_errors=True)
    streams: dict[tuple[int, int], Callable[[], Iterator[Batch]]] = {}
    for j, leaf in enumerate(seg.leaves):
        if leaf.stage is None:
            streams[(0, j)] = lambda j=j: captured([task.leaf_dir(j)])
            continue
        stage = cfg.stages[leaf.stage].build()
        if not isinstance(stage, KeyedReducer):  # a copy of the live state, finished
            stage.restore(pickle.loads(pickle.dumps(stages[leaf_position(task, j)].snapshot())))
            streams[(0, j)] = stage.finish  # type: ignore[attr-defined]
            continue
        stage.nbuckets = plan.nbuckets(0, j)
        inputs = [task.leaf_dir(j)]
        for phase in range(stage.phases):
            inputs.append(os.path.join(scratch, f"r{j}-{phase}"))
            reduce_buckets(stage, phase, range(stage.nbuckets), inputs[:-1], inputs[-1],
                           job.settings.reduce_bytes)
        streams[(0, j)] = (lambda stage=stage, last=inputs[-1]:
                           result_batches(stage, [last], stage.nbuckets))
    quiet = DeadLetter(None)  # the tails' rejects are kept by the final run only
    for tail in plan.tails:
        job.tail(tail, streams.pop(tail.source), quiet, emitting=True)
    shutil.rmtree(scratch, ignore_errors=True)


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
