"""A run without a reducer: one process reads the input in order, through the
processors (and a fork's branches) to the outputs, checkpointing as it goes."""
from __future__ import annotations

from typing import Any

from pipeline.config import PipelineConfig
from pipeline.engine.options import JobOptions, every
from pipeline.engine.progress import Progress, chain_hooks
from pipeline.engine.report import Notices, RunReport, collect_counters, stage_metrics
from pipeline.engine.resume import Checkpointer, job_key, open_slot, resumed_records
from pipeline.engine.metrics import LIVE
from pipeline.engine.runner import Context, flow
from pipeline.engine.signals import StopRequest
from pipeline.engine.tasks import STATE_VERSION
from pipeline.errors import Stopped
from pipeline.stage import Input, Stage
from pipeline.state.deadletter import DeadLetter
from pipeline.state.slot import SlotLock, slot_dir


def stream(cfg: PipelineConfig, opts: JobOptions, notices: Notices, enabled: bool,
           request: StopRequest) -> RunReport:
    """input -> processors -> output (or a fork's outputs), here, in input order."""
    source = cfg.stages[0].instance()  # what the input is; the run reads with its own
    stages: list[Stage] = [source]
    assert isinstance(source, Input)
    dead = DeadLetter(opts.dead_letter_path, strict=opts.strict)
    header = {"version": STATE_VERSION, "config": cfg.identity(), "input": source.identity()}
    checkpointer = None
    resumed = None
    bar = Progress(source.total_bytes(), opts.progress)

    def show(records: int, at_end: bool) -> None:
        src = stages[0]  # open_slot may have rebuilt the stages
        bar.update(src.position(), src.counters().get("lines", 0), force=at_end)  # type: ignore[attr-defined]
        if request.is_set() and not at_end and not src.unbounded():  # type: ignore[attr-defined]
            if checkpointer is not None:
                checkpointer.save(complete=False)
            raise Stopped(src.counters().get("lines", 0))
    ctx = Context(dead)
    ctx.stop = request
    ctx.job = job_key(cfg, source)

    def run(on_barrier: Any) -> None:
        request.arm()
        LIVE.watch(source=stages[0], context=ctx, dead=dead)
        trunk = [stages[i] for i in cfg.trunk]
        branches = {name: [stages[i] for i in idx] for name, idx in cfg.branches.items()}
        flow(trunk, branches, ctx, on_barrier=on_barrier)
    try:
        if enabled:
            with SlotLock(slot_dir(opts.state_dir, cfg.path, source.describe())) as slot:
                built, store, resumed = open_slot(slot, cfg.build, header, dead, notices,
                                                  opts.fresh, opts.discard)
                stages[:] = built
                ctx.records_base = resumed_records(store) if resumed is not None else 0
                saved = dead.first_saved() if dead.count else None
                if saved is not None:
                    dead.refuse_if_strict(saved)
                checkpointer = Checkpointer(store, stages, dead, header, *every(cfg, opts),
                                            warn=lambda text: notices.append(f"warning: {text}"),
                                            records=ctx.records)
                LIVE.watch(checkpointer=checkpointer, state_dir=slot)
                ctx.checkpoint = lambda: checkpointer.save(complete=False)  # on EPIPE
                run(chain_hooks(checkpointer, show))
        else:
            dead.start(0)
            stages[:] = cfg.build()
            run(show)
    finally:
        bar.close()
        dead.close()
    metrics = [m.as_dict() for m in ctx.meters]
    for name, meters in ctx.branch_meters.items():
        metrics += [{**m.as_dict(), "stage": f"{name}/{m.name}"} for m in meters]
    report = RunReport(collect_counters(stages), dead.count, dead.path, list(notices),
                       resumed_lines=resumed, stages=stage_metrics(metrics, dead),
                       records=ctx.records())
    if checkpointer is not None:
        report.checkpoints = checkpointer.count
        report.checkpoint_failures = checkpointer.failures
        report.state_bytes = checkpointer.store.size_bytes()
    return report
