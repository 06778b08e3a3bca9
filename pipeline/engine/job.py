"""One run of a configured pipeline: plan it, run its tasks, merge, report.

    chain without a reducer     one task in this process, reading the input in order
                                (streaming.py); or, with several workers, in parts:
                                map tasks over input ranges that capture the outputs'
                                bytes, then the outputs here (_in_parts)
    chain with reducers         plan.py's segments: map tasks over input ranges, reduce
                                tasks per bucket, then the tail here; on any executor

Whatever runs the tasks, this module decides what is still to do after a resume, copies
the rejected lines into the run's dead-letter file once, follows a growing input, and
builds the report.
"""
from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable, Iterator

from pipeline.config import PipelineConfig
from pipeline.engine.budget import Budget, fewer_collections, loading, own_rss
from pipeline.engine.emit import check_follow, emit
from pipeline.engine.options import (DEFAULT_EMIT_SECONDS, DEFAULT_MEMORY_MB, JobOptions,
                                     checkpoint_enabled, every)
from pipeline.engine.plan import PLAN, layout, open_plan
from pipeline.engine.metrics import LIVE
from pipeline.engine.progress import Progress
from pipeline.engine.report import (Notices, RunReport, add_counters, append_rejects,
                                    collect_counters, copy_rejects, resume_notice, stage_metrics)
from pipeline.engine.results import Capture, Results, captured
from pipeline.engine.resume import job_key
from pipeline.engine.runner import Context, flow_results
from pipeline.engine.signals import NeverSet, StopRequest, stop_on_signals
from pipeline.engine.streaming import stream
from pipeline.engine.tasks import (STATE_VERSION, Env, RunSettings, MapTask, finished_map,
                                   finished_reduce, leaf_position, load_state, do_task)
from pipeline.errors import DamagedState, InputError, Interrupted, SluiceError, Stopped, reason
from pipeline.executors import resolve
from pipeline.keyed import KeyedReducer, result_batches
from pipeline.stage import Batch, Input, InputChanged, Output, Role, Stage
from pipeline.state.deadletter import DeadLetter
from pipeline.state.slot import SlotLock, clear_slot, slot_dir

def run_job(cfg: PipelineConfig, opts: JobOptions) -> RunReport:
    """Run the pipeline; SIGINT/SIGTERM stop it at a batch boundary, checkpointed."""
    request = StopRequest()
    LIVE.budget_bytes = (opts.memory_mb or cfg.memory_mb or DEFAULT_MEMORY_MB) << 20
    with stop_on_signals(request), fewer_collections():
        try:
            report = _start(cfg, opts, request)
            for spec in cfg.stages:  # what the stages say they count, even if 0
                for name in spec.cls.reports:
                    report.counters.setdefault(name, 0)
            return report
        except Stopped as exc:
            raise Interrupted(request.signal or "SIGINT",
                              exc.lines if request.armed else None) from None


def _start(cfg: PipelineConfig, opts: JobOptions, request: StopRequest) -> RunReport:
    source = cfg.stages[0].instance()
    assert isinstance(source, Input)
    notices = Notices(opts.notify)
    enabled = checkpoint_enabled(cfg, opts)
    if enabled and not source.resumable:
        notices.append(f"checkpoints are off: {source.describe()} cannot be read again "
                       f"after a kill")
        enabled = False
    segments, _ = layout(cfg)
    if source.unbounded():
        check_follow(cfg, opts, segments)
    parts = not segments and _in_parts(cfg, opts, source, notices)
    if not segments and not parts:  # no reducer on any path
        damaged = False
        while True:
            try:
                return stream(cfg, opts, notices, enabled, request)
            except InputChanged as exc:  # while following
                notices.append(f"{exc} while it was followed; starting over")
            except DamagedState as exc:  # an output file changed since its checkpoint
                if damaged:
                    raise
                damaged = True
                notices.append(f"{exc}; starting the run over")
            opts.discard = True
    return Job(cfg, opts, source, notices, enabled, request, parts).execute()


def _in_parts(cfg: PipelineConfig, opts: JobOptions, source: Input, notices: Notices) -> bool:
    """Whether a run without reducers runs in parts (plan.layout): map tasks over
    ranges of the input, in the workers, each capturing its outputs' bytes (or
    records), which the outputs here then write in input order. So it does when its
    executor would cut the input into several pieces (several local workers that the
    memory budget fits, or Dask and an input over a partition, and not one compressed
    file), the input is bounded and of known size, and every output is written in
    parts (Output.in_parts). A
    resumed run goes on the way it started: in parts if its slot holds a plan,
    straight if it holds a straight run's checkpoints."""
    size = source.estimated_bytes()
    if source.unbounded() or size is None:
        return False
    slot = slot_dir(opts.state_dir, cfg.path, source.describe())
    if not (opts.fresh or opts.discard) and os.path.isdir(slot) and os.listdir(slot):
        return os.path.exists(os.path.join(slot, PLAN))
    outputs = [spec.instance() for spec in cfg.stages if spec.cls.role is Role.OUTPUT]
    if not all(isinstance(out, Output) and out.in_parts for out in outputs):
        return False
    kind, options = resolve(cfg, opts.executor, opts.executor_options)
    try:  # as many workers as the memory budget fits: one runs straight
        budget, asked = fit_budget(cfg, opts, kind, size)
    except SluiceError:
        return False
    if budget.workers == 1 < asked:  # (a Job says so itself)
        notices.append(budget.cut(asked))
    piece = kind.piece_bytes(size, budget.workers, options)
    return piece < size and len(source.ranges(piece)[0]) > 1  # a .gz file is one piece


def fit_budget(cfg: PipelineConfig, opts: JobOptions, kind: Any, size: int
               ) -> tuple[Budget, int]:
    """The memory budget of a run, with as many of the workers asked for (returned
    too) as it fits; SluiceError if not even one fits."""
    asked = kind.workers_for(opts.workers or cfg.workers, size)
    memory = opts.memory_mb or cfg.memory_mb or DEFAULT_MEMORY_MB
    return Budget.fit(memory, asked, own_rss(loading(cfg))), asked


class Job:
    """A run of a chain with reducers: see plan.py for its shape."""

    def __init__(self, cfg: PipelineConfig, opts: JobOptions, source: Input,
                 notices: Notices, enabled: bool, request: StopRequest, parts: bool = False):
        self.cfg, self.opts, self.notices = cfg, opts, notices
        self.parts = parts  # a run without reducers, in parts (_in_parts)
        self.enabled, self.request = enabled, request
        self.source = source
        self.counters: dict[str, int] = {}
        self.records = 0  # what the map tasks' first stage passed on, over all runs
        self.meters: dict[int, dict[str, Any]] = {}  # stage index -> summed metrics
        self.last_results = 0
        self.checkpoint_failures = 0
        self.following = self.source.unbounded()
        self.emit_every = (opts.emit_every or cfg.emit.get("every_seconds")
                           or DEFAULT_EMIT_SECONDS)
        # records read since the last emission; a followed run shows what it has (saved
        # state included) at its first tick, even if nothing new arrives
        self.unemitted = 1 if self.following else 0
        self.last_emit = time.monotonic()

    def execute(self) -> RunReport:
        """Run; a followed input that is truncated or replaced starts the run over, and
        so does saved state found damaged (once: damage in a fresh run is an error)."""
        damaged = False
        while True:
            try:
                return self._attempt()
            except InputChanged as exc:
                self.notices.append(f"{exc} while it was followed; starting over")
            except DamagedState as exc:
                if damaged:
                    raise
                damaged = True
                self.notices.append(f"{exc}; starting the run over")
            self.opts.discard = True  # what was saved is not used again
            self.counters, self.meters, self.records = {}, {}, 0
            self.checkpoint_failures = 0

    def _attempt(self) -> RunReport:
        cfg, opts = self.cfg, self.opts
        kind, options = resolve(cfg, opts.executor, opts.executor_options)
        size = self.source.estimated_bytes() or 0
        budget, asked = fit_budget(cfg, opts, kind, size)
        if budget.workers < asked:
            self.notices.append(budget.cut(asked))
        slot = os.path.abspath(slot_dir(opts.state_dir, cfg.path, self.source.describe()))
        with SlotLock(slot):
            work = slot if self.enabled else slot + ".scratch"
            if (opts.fresh or opts.discard) and os.path.isdir(slot):
                clear_slot(slot)
                if not opts.discard:
                    self.notices.append("--fresh: discarded the saved state")
            if not self.enabled:
                shutil.rmtree(work, ignore_errors=True)
            partition = kind.piece_bytes(size, budget.workers, options)
            try:
                plan = open_plan(work, cfg, self.source, partition, budget.reduce_bytes,
                                 self.notices, self.parts)
            except OSError as exc:  # planning reads the input: say which file, on one line
                state = str(exc.filename or "").startswith(work)
                raise (SluiceError if state else InputError)(
                    f"cannot {'use saved state' if state else 'read input'} "
                    f"{exc.filename!r}: {reason(exc)}") from None
            every_r, every_s = every(cfg, opts)
            settings = RunSettings(cfg, work, {"version": STATE_VERSION,
                                               "config": cfg.identity(), "input": None},
                                   strict=opts.strict, checkpoint=self.enabled,
                                   every_records=every_r, every_seconds=every_s,
                                   buffer_bytes=budget.buffer_bytes,
                                   reduce_bytes=budget.reduce_bytes, durable=self.enabled)
            # one map task keeps no worker busy: then starting workers only costs time
            workers = budget.workers if len(plan.map_tasks(0)) > 1 else 1
            # a followed run ends on a stop request with its final result: nothing stops that
            executor = kind.create(workers, work, NeverSet() if self.following else self.request,
                                   **options)
            LIVE.watch(state_dir=work)
            try:
                executor.start(settings)
                self.settings, self.executor, self.plan = settings, executor, plan
                report = self._phases(budget)
            finally:
                executor.close()
                if not self.enabled:
                    shutil.rmtree(work, ignore_errors=True)
            report.state_bytes = _tree_bytes(work) if self.enabled else 0
            return report

    # -- the phases of a run ----------------------------------------------------------
    def _phases(self, budget: Budget) -> RunReport:
        plan, opts = self.plan, self.opts
        dead = DeadLetter(opts.dead_letter_path, strict=opts.strict)
        dead.start(0)
        LIVE.watch(dead=dead)
        clock = time.monotonic()
        phases: dict[str, float] = {}

        def lap(name: str) -> None:
            nonlocal clock
            now = time.monotonic()
            phases[name] = phases.get(name, 0.0) + now - clock
            clock = now
        self.request.arm()
        try:
            resumed = self._map_first(dead)
            lap("map")
            streams: dict[tuple[int, int], Results] = {}
            for seg in plan.segments:
                if seg.number > 0:
                    self._map_later(seg, streams.pop(seg.source), dead)  # type: ignore[arg-type]
                    lap("map")
                for j, leaf in enumerate(seg.leaves):
                    streams[(seg.number, j)] = self._finish(seg, j, leaf, budget)
                lap("reduce")
            if self.request.is_set() and not self.following:
                raise Stopped(self.counters.get("lines", 0))
            for tail in plan.tails:  # nothing is output before all of it is verified
                streams[tail.source].verify()
            for tail in plan.tails:
                self.tail(tail, streams.pop(tail.source), dead)
            lap("output")
        finally:
            dead.close()
        metrics = [self.meters[i] for i in sorted(self.meters)]
        return RunReport(self.counters, dead.count, dead.path, list(self.notices),
                         resumed_lines=resumed, stages=stage_metrics(metrics, dead),
                         phases=phases, checkpoint_failures=self.checkpoint_failures,
                         records=self.records)

    def _warn_tasks(self, results: list[dict[str, Any]]) -> None:
        """The checkpoint warnings of tasks run now (in workers, maybe), as one line."""
        said = [w for r in results for w in r.get("warnings", ())]
        self.checkpoint_failures += sum(r.get("checkpoint_failures", 0) for r in results)
        if said:
            more = f" (and {len(said) - 1} more such warnings)" if len(said) > 1 else ""
            self.notices.append(f"warning: {said[0]}{more}")

    def _meter(self, index: int, m: dict[str, Any]) -> None:
        have = self.meters.get(index)
        if have is None:
            have = self.meters[index] = {"stage": self.cfg.stages[index].label,
                                         "records_in": 0, "records_out": 0, "seconds": 0.0}
        for k in ("records_in", "records_out", "seconds"):
            have[k] += m[k]
        LIVE.finished[have["stage"]] = [have["records_in"], have["records_out"]]

    def _task_meters(self, task: MapTask, result: dict[str, Any], with_source: bool) -> None:
        trunk = result["meters"]
        if with_source:
            self._meter(0, trunk[0])
        for i, m in zip(task.stages, trunk[1:]):
            self._meter(i, m)
        if len(trunk) > 1 + len(task.stages):  # a capture: its time is its output's
            self._meter(self.cfg.trunk[-1], {**trunk[-1], "records_in": 0, "records_out": 0})
        for name, ms in result.get("branch_meters", {}).items():
            for i, m in zip(task.branches[name], ms):
                self._meter(i, m)
            if len(ms) > len(task.branches[name]):
                self._meter(self.cfg.branches[name][-1],
                            {**ms[-1], "records_in": 0, "records_out": 0})

    def _map_first(self, dead: DeadLetter) -> int | None:
        """Segment 0: its map tasks over the input's ranges, on the executor."""
        tasks = self.plan.map_tasks(0)
        if self.following:  # its one map task resumes and goes on reading until stopped
            result = do_task(self.settings, tasks[0], Env(stop=self.request, tick=self._tick))
            self._warn_tasks([result])
            self.counters = add_counters(self.counters, result["counters"])
            self.records = result["records"]
            self._task_meters(tasks[0], result, with_source=True)
            copy_rejects(tasks, [result], dead)
            resumed = result["resumed_lines"]
            if resumed is not None:
                self.notices.append(f"resumed at {result['resumed_at']}")
            return resumed
        results = [finished_map(t, self.notices) for t in tasks]
        pending = [t for t, r in zip(tasks, results) if r is None]
        total = sum(t.nbytes for t in pending)
        bar = Progress(total or None, self.opts.progress)

        def progress(b: int, n: int) -> None:
            bar.update(b, n)
            LIVE.progress = (b, n)
        try:
            fresh = self.executor.run(pending, progress=progress)
        except Stopped as exc:
            raise Stopped(exc.lines + sum(r["lines"] for r in results if r is not None)) from None
        finally:
            bar.close()
        self._warn_tasks(fresh)
        it = iter(fresh)
        results = [r if r is not None else next(it) for r in results]
        text, resumed = resume_notice(tasks, results, pending)
        if text:
            self.notices.append(text)
        self.records = sum(r["records"] for r in results)
        for task, r in zip(tasks, results):
            self.counters = add_counters(self.counters, r["counters"])
            for n in r.get("notices", []):
                if _worth_repeating(n):
                    self.notices.append(n)
            self._task_meters(task, r, with_source=True)
        copy_rejects(tasks, results, dead)
        return resumed

    def _map_later(self, seg: Any, source: Results, dead: DeadLetter) -> None:
        """A later segment over an earlier reducer's results: one map task, here, that
        reads them merged in key order; or, where every stage of it is order_free and
        the reducer keyed, a map task per range of its buckets, on the executor."""
        from pipeline.engine.results import ResultsInput

        reducer = self.plan.segments[seg.source[0]].leaves[seg.source[1]].stage
        read = None
        if self.plan.parallel_read(seg.number) and not self.following:
            n = self.plan.nbuckets(*seg.source)
            tasks = min(n, self.executor.workers)
            if tasks > 1:
                read = {"stage": reducer, "dirs": source.dirs, "nbuckets": n, "tasks": tasks}
        reuse = self.plan.start_segment(seg.number, self.plan.generation, self.last_results,
                                        read)
        tasks = self.plan.map_tasks(seg.number)
        results = [finished_map(t, self.notices) if reuse else None for t in tasks]
        pending = [t for t, r in zip(tasks, results) if r is None]
        if len(tasks) == 1 and pending:
            stream = source()
            of = self.cfg.stages[reducer or 0].label
            fresh = [do_task(self.settings, tasks[0], Env(
                stop=self.request, source=lambda: ResultsInput(stream, of)))]
        else:
            try:
                fresh = self.executor.run(pending) if pending else []
            except Stopped:
                raise Stopped(self.counters.get("lines", 0)) from None
        self._warn_tasks(fresh)
        it = iter(fresh)
        results = [r if r is not None else next(it) for r in results]
        for task, result in zip(tasks, results):
            self.counters = add_counters(self.counters, result["counters"])
            self._task_meters(task, result, with_source=False)
            if reducer is not None:  # what the reducer emitted is what this task read
                self._meter(reducer, {"records_in": 0, "seconds": 0.0,
                                      "records_out": result["meters"][0]["records_out"]})
            append_rejects(os.path.join(task.dir, "dead_letter.jsonl"), result["dead_letter"],
                           dead, None)

    def _finish(self, seg: Any, j: int, leaf: Any, budget: Budget) -> Results:
        """Reduce a leaf; returns what produces its results, merged, as batches."""
        tasks = self.plan.map_tasks(seg.number)
        if leaf.stage is None:
            self.last_results = 0
            dirs = [t.leaf_dir(j) for t in tasks]
            return Results(lambda: captured(dirs), dirs, Capture.all_sets())
        spec = self.cfg.stages[leaf.stage]
        if not leaf.keyed:
            at = leaf_position(tasks[0], j)
            reducer = None
            notes: list[str] = []
            for task in tasks:
                partial = spec.build()
                partial.restore(load_state(task, at, notes))
                if reducer is None:
                    reducer = partial
                else:
                    reducer.merge(partial)  # type: ignore[attr-defined]
            assert reducer is not None
            self.counters = add_counters(self.counters, collect_counters([reducer]))
            self.last_results = len(reducer) if hasattr(reducer, "__len__") else 0
            return Results(reducer.finish)  # type: ignore[attr-defined]
        stage = spec.instance()
        assert isinstance(stage, KeyedReducer)
        stage.nbuckets = self.plan.nbuckets(seg.number, j)
        groups = self.executor.reduce_groups(stage.nbuckets)
        results_count = 0
        for phase in range(stage.phases):
            rtasks = self.plan.reduce_tasks(seg.number, j, phase, groups)
            # while following, the rows grow under the same plan: never reuse a result
            done = [None if self.following else finished_reduce(t, self.notices)
                    for t in rtasks]
            pending = [t for t, d in zip(rtasks, done) if d is None]
            try:
                ran = self.executor.run(pending)
            except Stopped:
                raise Stopped(self.counters.get("lines", 0)) from None
            self._warn_tasks(ran)
            fresh = iter(ran)
            for d in done:
                result = d if d is not None else next(fresh)
                self.counters = add_counters(self.counters, result["counters"])
                results_count += result["counters"].get("_results", 0)
                self._meter(leaf.stage, {"records_in": 0, "records_out": 0,
                                         "seconds": result["seconds"]})
        self.last_results = results_count
        last = [t.dir for t in self.plan.reduce_tasks(seg.number, j, stage.phases - 1, groups)]
        return Results(lambda: result_batches(stage, last, stage.nbuckets), last,
                       stage.all_sets())

    def tail(self, tail: Any, source: Callable[[], Iterator[Batch]], dead: DeadLetter,
              emitting: bool | None = None) -> None:
        """The stages after a path's last reducer, here, ending in its output."""
        leaf = self.plan.segments[tail.source[0]].leaves[tail.source[1]]
        stages = [self.cfg.stages[i].build() for i in tail.stages]
        ctx = Context(dead)
        ctx.emitting = self.following if emitting is None else emitting
        ctx.job = job_key(self.cfg, self.source)
        name = self.cfg.stages[leaf.stage].label if leaf.stage is not None else "capture"
        flow_results(source(), name, stages, ctx)
        if emitting:
            return  # a live emission: counted once, at the end
        self.counters = add_counters(self.counters, collect_counters(stages))
        for i, m in zip(tail.stages, ctx.meters[1:]):
            self._meter(i, m.as_dict())
        if leaf.stage is not None and ctx.meters:
            self._meter(leaf.stage, {"records_in": 0, "seconds": ctx.meters[0].seconds,
                                     "records_out": ctx.meters[0].records_out})


    # -- following a growing input ------------------------------------------------------
    def _tick(self, records: int, stages: list[Stage]) -> None:
        """At a batch boundary of the followed map task: emit if it is time."""
        self.unemitted += records
        if self.unemitted and time.monotonic() - self.last_emit >= self.emit_every:
            emit(self, stages)
            self.unemitted, self.last_emit = 0, time.monotonic()


def _worth_repeating(notice: str) -> bool:
    """Task notices worth repeating: damaged checkpoints, not routine resumes."""
    return "unusable" in notice or "starting over" in notice


def _tree_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
