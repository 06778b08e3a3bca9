"""The tasks of a run, and the code that runs one, wherever it runs.

A run is planned (engine/plan.py) as:

    map tasks      an input range -> processors -> the first reducer's update(), which
                   spills key-partitioned rows; one checkpoint slot per task
    reduce tasks   one phase of one reducer over some of its buckets, reading every map
                   task's rows (and earlier phases' rows) for them
    the tail       results merged by key -> the stages after the reducer -> the output,
                   in the main process

Executors (inline, local worker processes, Dask) only call `do_task(settings, task)`; all
they exchange are these small records and small result dicts. Rows, partial states
and rejected lines stay on disk in the task's directory.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.config import PipelineConfig
from pipeline.engine.budget import fewer_collections, give_back
from pipeline.engine.metrics import LIVE
from pipeline.engine.report import collect_counters
from pipeline.engine.results import Capture
from pipeline.engine.resume import Checkpointer, open_slot, resumed_records
from pipeline.engine.runner import Context, flow
from pipeline.engine.signals import NeverSet
from pipeline.errors import CheckpointFailed, DamagedState, RejectedLine, SluiceError, Stopped
from pipeline.keyed import KeyedReducer, bucket_batches, reduce_buckets
from pipeline.engine.results import ResultsInput
from pipeline.stage import Input, Output, Role, Stage
from pipeline.state.checkpoint import CheckpointStore, read_checked_json, write_checked_json
from pipeline.state.deadletter import DeadLetter

STATE_VERSION = 8  # 3: checksums; 4: the engine's subpackages; 5: dedupe's string keys;
#                    6: aggregate's distinct values as Arrow tables; 7: and their counts;
#                    8: windows (count's rows hold their window; the closed set)
RESULT_FILE = "result.json"


@dataclass
class RunSettings:
    """What every task of a run needs; sent to each worker once."""

    cfg: PipelineConfig
    slot: str
    header: dict[str, Any]          # version, config identity, input identity
    strict: bool = False
    checkpoint: bool = True         # periodic checkpoints (the final one is always written)
    every_records: int = 1_000_000
    every_seconds: float = 30.0
    buffer_bytes: int = 8 << 20     # a map task's spill buffer
    reduce_bytes: int = 128 << 20   # what one bucket may use while it is reduced
    durable: bool = True            # fsync spill files at checkpoints


@dataclass
class Leaf:
    """Where a map task's path ends: a reducer (`stage`), or a capture (None)."""

    name: str                       # the fork branch, or ""
    stage: int | None
    keyed: bool
    nbuckets: int = 1


@dataclass
class MapTask:
    segment: int
    index: int                      # task number: the high bits of its rows' order keys
    piece: Any                      # its piece of the input (the input's own descriptor)
    dir: str
    stages: list[int]               # cfg.stages that follow the source
    branches: dict[str, list[int]]  # then each fork branch, up to its leaf
    leaves: list[Leaf]
    plan: str = ""                  # the plan's nonce: state of another plan is not ours
    nbytes: int = 0                 # bytes of input it reads (for progress), 0: not known
    numbering: str = ""             # whose line numbers it continues (Input.numbering)

    def describe(self) -> str:
        return f"map task {self.index}"

    def leaf_dir(self, j: int) -> str:
        return self.dir if not self.branches else os.path.join(self.dir, f"leaf{j}")


@dataclass
class ReduceTask:
    segment: int
    stage: int                      # index in cfg.stages of the keyed reducer
    phase: int
    buckets: list[int]
    inputs: list[str]               # writer directories to read, in order
    dir: str
    nbuckets: int
    generation: int = 0
    plan: str = ""
    nbytes: int = 0                 # it reads no input

    def describe(self) -> str:
        return f"reduce phase {self.phase}, buckets {self.buckets[0]}-{self.buckets[-1]}"


@dataclass
class Env:
    """What the executor lends a task: a stop flag and a progress callback."""

    stop: Any = field(default_factory=NeverSet)
    progress: Callable[[int, int], None] | None = None  # (bytes, lines) so far
    source: Callable[[], Input] | None = None  # segment > 0: an earlier reducer's results
    # while following a growing input: called at every batch boundary with the records
    # just finished and the task's stages, to emit the current result when it is time
    tick: Callable[[int, list[Stage]], None] | None = None


def do_task(settings: RunSettings, task: Any, env: Env | None = None) -> dict[str, Any]:
    """Run one task. Its directory is locked meanwhile: if Dask retries a task on
    another worker while a first attempt is still alive, the second waits for it."""
    import fcntl

    env = env or Env()
    os.makedirs(os.path.dirname(task.dir), mode=0o700, exist_ok=True)  # state is private
    fd = os.open(task.dir + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with fewer_collections():  # in a worker process too
            if isinstance(task, MapTask):
                done = _do_map(settings, task, env)
            else:
                done = _do_reduce(settings, task, env)
    finally:
        os.close(fd)
    give_back()  # the next task starts from this process's base, not this one's peak
    return done


def map_stages(settings: RunSettings, task: MapTask, source: Input
               ) -> tuple[list[Stage], list[Stage], dict[str, list[Stage]]]:
    """(every stage, flat, for checkpoints; the trunk; the branches) of a map task."""
    cfg = settings.cfg
    trunk = [source] + [cfg.stages[i].build() for i in task.stages]
    branches: dict[str, list[Stage]] = {}
    for j, leaf in enumerate(task.leaves):
        if not task.branches:
            if leaf.stage is None:
                trunk.append(_capture(cfg, cfg.trunk[-1]))
            last = trunk[-1]
        else:
            part = [cfg.stages[i].build() for i in task.branches[leaf.name]]
            if leaf.stage is None:
                part.append(_capture(cfg, cfg.branches[leaf.name][-1]))
            branches[leaf.name] = part
            last = part[-1]
        if isinstance(last, KeyedReducer):
            last.configure(task.leaf_dir(j), leaf.nbuckets, task.index, settings.buffer_bytes)
    flat = trunk + [s for part in branches.values() for s in part]
    return flat, trunk, branches


def _capture(cfg: PipelineConfig, output: int) -> Capture:
    """The capture at the end of a path without a reducer, before its output: it keeps
    the output's bytes if the output is written in parts (Output.in_parts), else the
    records."""
    out = cfg.stages[output].instance()
    return Capture(out.encode if isinstance(out, Output) and out.in_parts else None)


def results_reader(settings: RunSettings, piece: dict[str, Any]) -> Input:
    """A reader of a range of a keyed reducer's result buckets (Plan.map_tasks)."""
    spec = settings.cfg.stages[piece["stage"]]
    stage = spec.instance()
    assert isinstance(stage, KeyedReducer)
    lo, hi = piece["buckets"]
    return ResultsInput(bucket_batches(stage, piece["dirs"], range(lo, hi)), spec.label)


def _do_map(settings: RunSettings, task: MapTask, env: Env) -> dict[str, Any]:
    """input range -> ... -> reducer.update(); leaves rows and state in task.dir."""
    shape: dict[str, Any] = {}

    def build() -> list[Stage]:
        if env.source is not None:
            source = env.source()
        elif isinstance(task.piece, dict):  # a range of an earlier reducer's buckets
            source = results_reader(settings, task.piece)
        else:
            source = settings.cfg.stages[0].instance().part(task.piece)  # type: ignore[attr-defined]
        flat, shape["trunk"], shape["branches"] = map_stages(settings, task, source)
        return flat
    header = {**settings.header, "task": task.index, "segment": task.segment, "plan": task.plan,
              "piece": list(task.piece) if isinstance(task.piece, tuple) else task.piece}
    dead = DeadLetter(os.path.join(task.dir, "dead_letter.jsonl"), strict=settings.strict)
    notices: list[str] = []
    stages, store, resumed = open_slot(task.dir, build, header, dead, notices)
    source = stages[0]
    resumed_at = source.location() if resumed is not None else None
    every = ((settings.every_records, settings.every_seconds) if settings.checkpoint
             else (1 << 62, float("inf")))
    warnings: list[str] = []  # a failed checkpoint: the parent tells the user, once
    ctx = Context(dead)
    ctx.records_base = resumed_records(store) if resumed is not None else 0
    checkpointer = Checkpointer(store, stages, dead, header, *every, warn=warnings.append,
                                label=f"{task.describe()}: ", records=ctx.records)

    def hook(records: int, at_end: bool) -> None:
        checkpointer(records, at_end)
        if env.progress is not None:
            env.progress(source.position(), source.counters().get("lines", 0))
        if env.tick is not None and not at_end:
            env.tick(records, stages)
        if not at_end and env.stop.is_set() and not following:
            if settings.checkpoint:
                checkpointer.save(complete=False)
            raise Stopped(source.counters().get("lines", 0))

    following = source.unbounded()  # it ends when stopped
    ctx.stop, ctx.following = env.stop, following
    if following:  # run here, in the process that serves the metrics (if any)
        LIVE.watch(source=source, context=ctx, dead=dead, checkpointer=checkpointer,
                   stages=stages)
    if settings.checkpoint:  # an input that breaks off keeps what was read before it
        ctx.checkpoint = lambda: checkpointer.save(complete=False)
    try:
        flow(shape["trunk"], shape["branches"], ctx, on_barrier=hook)
    except RejectedLine as exc:
        if exc.line is None:
            raise
        raise RejectedLine(exc.reason, exc.line + source.lines_before(), exc.stage,
                           exc.file) from None
    finally:
        dead.close()
        for stage in stages:
            if isinstance(stage, KeyedReducer) and stage.spill is not None:
                stage.spill.close()
        if following:
            LIVE.unwatch_task(source, ctx, dead, checkpointer, stages)
    # a mergeable reducer's counts are taken once, after its states are merged
    counted = [s for s in stages if s.role is not Role.REDUCER or isinstance(s, KeyedReducer)]
    result = {"counters": collect_counters(counted),
              "lines": source.counters().get("lines", 0), "resumed_lines": resumed,
              "location": source.location(), "resumed_at": resumed_at, "notices": notices,
              "rejected": dead.count, "plan": task.plan, "dead_letter": dead.seal(),
              "records": ctx.records(),
              "meters": [m.as_dict() for m in ctx.meters], "checkpoints": checkpointer.count,
              "branch_meters": {b: [m.as_dict() for m in ms]
                                for b, ms in ctx.branch_meters.items()},
              "warnings": warnings if settings.checkpoint else [],
              "checkpoint_failures": checkpointer.failures if settings.checkpoint else 0}
    _save_result(task, result, settings.checkpoint)
    return result


def _save_result(task: Any, result: dict[str, Any], warn: bool) -> None:
    """result.json marks a task finished; if it cannot be written, a rerun redoes the
    task (from its last checkpoint): a warning, not a failure."""
    try:
        write_checked_json(os.path.join(task.dir, RESULT_FILE), result)
    except CheckpointFailed as exc:
        if warn:
            result.setdefault("warnings", []).append(
                f"{task.describe()}: its finished state was not saved ({exc.short}); "
                f"a rerun would do it again")
            result["checkpoint_failures"] = result.get("checkpoint_failures", 0) + 1


def _result(task: Any, notices: list[str]) -> dict[str, Any] | None:
    """A task's result.json if it is this plan's and intact; a damaged one is said and
    the task is done again."""
    try:
        result = read_checked_json(os.path.join(task.dir, RESULT_FILE))
    except DamagedState as exc:
        notices.append(f"{exc}; doing {task.describe()} again")
        return None
    if result is None or result.get("plan") != task.plan:
        return None
    return result


def finished_map(task: MapTask, notices: list[str]) -> dict[str, Any] | None:
    """The result a finished map task left, or None if it has not finished."""
    return _result(task, notices)


def _do_reduce(settings: RunSettings, task: ReduceTask, env: Env) -> dict[str, Any]:
    stage = settings.cfg.stages[task.stage].instance()
    assert isinstance(stage, KeyedReducer)
    stage.nbuckets = task.nbuckets
    start = time.perf_counter()
    counters = reduce_buckets(stage, task.phase, task.buckets, task.inputs, task.dir,
                              settings.reduce_bytes, durable=settings.durable, stop=env.stop)
    result = {"counters": counters, "generation": task.generation, "plan": task.plan,
              "seconds": time.perf_counter() - start, "buckets": task.buckets}
    _save_result(task, result, settings.checkpoint)
    return result


def finished_reduce(task: ReduceTask, notices: list[str]) -> dict[str, Any] | None:
    """The result of a reduce task finished for this plan's generation, or None."""
    result = _result(task, notices)
    if result is None or (result.get("generation"), result.get("buckets")) != (
            task.generation, task.buckets):
        return None
    return result


def leaf_position(task: MapTask, j: int) -> int:
    """Where leaf j's stage is in a map task's flat list of stages (see map_stages)."""
    if not task.branches:
        return len(task.stages) + (task.leaves[0].stage is None)  # after it, a capture
    at = 1 + len(task.stages)
    for k, leaf in enumerate(task.leaves):
        at += len(task.branches[leaf.name]) + (leaf.stage is None)
        if k == j:
            return at - 1
    raise IndexError(j)


def load_state(task: MapTask, position: int, notices: list[str]) -> Any:
    """The final state of the stage at `position` (a mergeable reducer) of a map task."""
    tree = CheckpointStore(task.dir).load(notices.append)
    if tree is None or not tree.get("complete"):  # its last checkpoint failed (disk full?)
        raise SluiceError(f"the final state of {task.describe()} in {task.dir} is missing "
                          f"after it finished: it could not be saved; rerun the same "
                          f"command to redo the task")
    return tree["stages"][position]
