"""One run of a configured pipeline: build, resume if a checkpoint allows, run, report."""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
import sys
from typing import Any, Callable

from .checkpoint import CheckpointStore
from .config import PipelineConfig
from .deadletter import DeadLetter
from .errors import SluiceError
from .progress import Progress, chain_hooks
from .runner import Context, run_chain
from .stage import Input, Stage

DEFAULT_STATE_DIR = ".pipeline-state"
DEFAULT_EVERY_RECORDS = 1_000_000
DEFAULT_EVERY_SECONDS = 30.0
STATE_VERSION = 1


@dataclass
class JobOptions:
    state_dir: str = DEFAULT_STATE_DIR
    dead_letter: str | None = None   # default: STATE_DIR/dead_letter.jsonl
    strict: bool = False
    checkpoint: bool | None = None   # None: the config decides (default on)
    every_records: int | None = None
    every_seconds: float | None = None
    fresh: bool = False
    workers: int | None = None       # None: the config's `workers`, else one per CPU
    progress: bool = False           # draw a progress bar on stderr
    executor: str | None = None      # "local" or "dask"; None: the config's, else local
    scheduler: str | None = None     # dask scheduler address; None: a LocalCluster
    partition_mb: int | None = None  # dask partition size
    notify: Callable[[str], None] = lambda text: print(f"sluice: {text}", file=sys.stderr)

    @property
    def dead_letter_path(self) -> str:
        return self.dead_letter or os.path.join(self.state_dir, "dead_letter.jsonl")


@dataclass
class RunReport:
    counters: dict[str, int]
    rejected: int
    dead_letter: str
    notices: list[str] = field(default_factory=list)
    checkpoints: int = 0
    state_bytes: int = 0
    resumed_lines: int | None = None  # lines already counted by the checkpoint resumed
    stages: list[dict[str, Any]] = field(default_factory=list)  # per-stage metrics

    def stats_table(self) -> str:
        """The per-stage metrics as an aligned text table (this run only)."""
        head = f"{'stage':<24} {'records in':>12} {'records out':>12} {'rejected':>9} {'seconds':>8}"
        rows = [head] + [f"{m['stage']:<24} {m['records_in']:>12,} {m['records_out']:>12,} "
                         f"{m['rejected']:>9,} {m['seconds']:>8.2f}" for m in self.stages]
        return "\n".join(rows)

    def summary_line(self) -> str:
        c = self.counters
        lines = c.get("lines", 0)
        read = f"{lines:,} lines read"
        if self.resumed_lines is not None:
            read += f" ({lines - self.resumed_lines:,} this run)"
        parts = [read, f"{c.get('records', 0):,} records",
                 f"{c.get('duplicates', 0):,} duplicates skipped"]
        tail = f"rejected {self.rejected:,} of {lines:,} lines"
        if self.rejected:
            tail += f" (reasons in {self.dead_letter})"
        return ", ".join(parts) + "; " + tail


def collect_counters(stages: list[Stage]) -> dict[str, int]:
    out: dict[str, int] = {}
    for stage in stages:
        for key, value in stage.counters().items():
            out[key] = out.get(key, 0) + value
    return out


def slot_dir(state_dir: str, cfg: PipelineConfig, source: Input) -> str:
    """One checkpoint slot per (config file, input): a changed one is detected, not hidden."""
    who = f"{os.path.abspath(cfg.path)}\0{source.describe()}"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.describe())[:60]
    return os.path.join(state_dir, f"{name}-{hashlib.sha256(who.encode()).hexdigest()[:12]}")


class Checkpointer:
    """Decides when to checkpoint and writes one consistent snapshot of the whole run."""

    def __init__(self, store: CheckpointStore, stages: list[Stage], dead: DeadLetter,
                 header: dict[str, Any], every_records: int, every_seconds: float):
        self.store, self.stages, self.dead, self.header = store, stages, dead, header
        self.every_records, self.every_seconds = every_records, every_seconds
        self.pending = 0
        self.last = time.monotonic()
        self.count = 0

    def __call__(self, records: int, at_end: bool) -> None:
        self.pending += records
        if at_end or self.pending >= self.every_records or (
                time.monotonic() - self.last >= self.every_seconds):
            self.save(complete=at_end)

    def save(self, complete: bool) -> None:
        body = dict(self.header)
        body["complete"] = complete
        body["dead_letter"] = {"path": os.path.abspath(self.dead.path),
                               "bytes": self.dead.tell(), "count": self.dead.count}
        body["stages"] = [s.snapshot() for s in self.stages]
        self.store.save(body)
        self.pending, self.last = 0, time.monotonic()
        self.count += 1


def _resume(store: CheckpointStore, header: dict[str, Any], stages: list[Stage],
            dead: DeadLetter, notices: list[str]) -> bool:
    """Restore every stage from the newest good checkpoint; False means start over."""
    tree = store.load(notices.append)
    if tree is None:
        return False
    source = stages[0]
    assert isinstance(source, Input)
    if tree.get("version") != STATE_VERSION or tree["config"] != header["config"]:
        problem = "the config changed"
    elif tree["dead_letter"]["path"] != os.path.abspath(dead.path):
        problem = "the dead-letter file changed"
    else:
        problem = source.resume_problem(tree["input"], tree["stages"][0])
    if problem:
        notices.append(f"{problem} since the last checkpoint; starting over")
        return False
    for stage, state in zip(stages, tree["stages"]):
        stage.restore(state)
    dead.start(keep_bytes=tree["dead_letter"]["bytes"])
    dead.count = tree["dead_letter"]["count"]
    notices.append(f"resumed at {source.where()}"
                   + (" (already complete: nothing new to read)" if tree["complete"]
                      and not source.resume_has_more() else ""))
    return True


class Notices(list):
    """A list of notices that also shows each one as it is added."""

    def __init__(self, notify: Callable[[str], None]):
        super().__init__()
        self.notify = notify

    def append(self, text: str) -> None:
        super().append(text)
        self.notify(text)


def checkpoint_enabled(cfg: PipelineConfig, opts: JobOptions) -> bool:
    return opts.checkpoint if opts.checkpoint is not None else cfg.checkpoint.get("enabled", True)


def open_slot(slot: str, stages: list[Stage], header: dict[str, Any], dead: DeadLetter,
              notices: list[str], fresh: bool = False) -> tuple[CheckpointStore, int | None]:
    """Resume `stages` from `slot` if its checkpoint fits, else clear it and start over.

    Returns the store and, after a resume, the lines the checkpoint had already read.
    """
    if fresh and os.path.isdir(slot):
        shutil.rmtree(slot)
        notices.append("--fresh: discarded the saved state")
    store = CheckpointStore(slot)
    if _resume(store, header, stages, dead, notices):
        return store, collect_counters(stages[:1]).get("lines", 0)
    if os.path.isdir(slot):
        shutil.rmtree(slot)
    dead.start(0)
    return CheckpointStore(slot), None


def make_checkpointer(store: CheckpointStore, stages: list[Stage], dead: DeadLetter,
                      header: dict[str, Any], cfg: PipelineConfig, opts: JobOptions,
                      periodic: bool = True) -> Checkpointer:
    every_r = opts.every_records or cfg.checkpoint.get("every_records", DEFAULT_EVERY_RECORDS)
    every_s = opts.every_seconds or cfg.checkpoint.get("every_seconds", DEFAULT_EVERY_SECONDS)
    if not periodic:
        every_r, every_s = 1 << 62, float("inf")
    return Checkpointer(store, stages, dead, header, every_r, every_s)


def run_job(cfg: PipelineConfig, opts: JobOptions) -> RunReport:
    """Run the pipeline in this process, or partitioned over worker processes."""
    from .executor import partition_count, run_partitioned

    stages = cfg.build()
    source = stages[0]
    assert isinstance(source, Input)
    ex = cfg.executor
    if (opts.executor or ex.get("type", "local")) == "dask":
        from .dask_executor import DEFAULT_PARTITION_MB, run_dask

        return run_dask(cfg, opts, stages, opts.scheduler or ex.get("scheduler"),
                        opts.partition_mb or ex.get("partition_mb", DEFAULT_PARTITION_MB))
    if partition_count(cfg, opts, source) > 1:
        return run_partitioned(cfg, opts, stages)
    dead = DeadLetter(opts.dead_letter_path, strict=opts.strict)
    notices = Notices(opts.notify)
    checkpointer = None
    resumed_lines = None
    enabled = checkpoint_enabled(cfg, opts)
    if enabled and not source.resumable:
        notices.append(f"checkpoints are off: {source.describe()} cannot be read again "
                       f"after a kill")
        enabled = False
    if enabled:
        header = {"version": STATE_VERSION, "config": cfg.identity(), "workers": 1,
                  "input": source.identity()}
        with SlotLock(slot_dir(opts.state_dir, cfg, source)) as slot:
            store, resumed_lines = open_slot(slot, stages, header, dead, notices, opts.fresh)
            checkpointer = make_checkpointer(store, stages, dead, header, cfg, opts)
            meters = _run(stages, dead, checkpointer, opts.progress)
    else:
        dead.start(0)
        meters = _run(stages, dead, None, opts.progress)
    report = RunReport(collect_counters(stages), dead.count, dead.path, list(notices),
                       resumed_lines=resumed_lines, stages=stage_metrics(meters, dead))
    if checkpointer is not None:
        report.checkpoints = checkpointer.count
        report.state_bytes = checkpointer.store.size_bytes()
    return report


def stage_metrics(meters: list[Any], dead: DeadLetter) -> list[dict[str, Any]]:
    out = []
    for m in meters:
        d = m.as_dict() if not isinstance(m, dict) else dict(m)
        d["rejected"] = dead.by_stage.get(d["stage"], 0)
        out.append(d)
    return out


def _run(stages: list[Stage], dead: DeadLetter, checkpointer: Checkpointer | None,
         progress: bool) -> list[Any]:
    source = stages[0]
    assert isinstance(source, Input)
    bar = Progress(source.total_bytes(), progress)

    def show(records: int, at_end: bool) -> None:
        bar.update(source.position(), source.counters().get("lines", 0), force=at_end)
    ctx = Context(dead)
    try:
        run_chain(stages, ctx, on_barrier=chain_hooks(checkpointer, show))
    finally:
        bar.close()
        dead.close()
    return ctx.meters


class SlotLock:
    """Holds an exclusive lock on a slot so two runs never write the same state."""

    def __init__(self, slot: str):
        self.slot = slot
        self.fh: Any = None

    def __enter__(self) -> str:
        import fcntl

        os.makedirs(os.path.dirname(self.slot) or ".", exist_ok=True)
        self.fh = open(self.slot + ".lock", "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise SluiceError(f"another run is using the state in {self.slot}; wait for it "
                              f"or use another --state-dir") from None
        return self.slot

    def __exit__(self, *exc: Any) -> None:
        self.fh.close()
