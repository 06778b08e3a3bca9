"""Partitioned execution: split the input, run the per-partition chain in worker
processes, merge the reducers' partial states in input order, finish once.

    input.split(N) -> [input_i -> processors -> reducer_i.update]  (worker i)
                   -> reducer_0.merge(reducer_1).merge(...)        (this process)
                   -> reducer.finish() -> processors -> output     (this process)

Each partition checkpoints into its own sub-slot (`part-000`, ...), with its own
dead-letter file, so a killed run resumes every partition where it stopped. The
partition bounds are fixed in `plan.pkl` on the first run: a rerun on a grown input
reuses them, and only the last, open-ended partition reads the appended lines.
Partial states travel through the checkpoint store on disk, never through a pipe,
so no worker holds its state twice.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from .checkpoint import CheckpointStore
from .config import PipelineConfig
from .deadletter import DeadLetter
from .errors import RejectedLine
from .job import (STATE_VERSION, JobOptions, RunReport, SlotLock, Notices,
                  checkpoint_enabled, collect_counters, make_checkpointer, open_slot,
                  slot_dir, stage_metrics)
from .progress import Progress, chain_hooks
from .runner import Context, partition_boundary, run_partial, run_tail
from .stage import Input, Stage

MIN_PARTITION_BYTES = 32 << 20  # below this a default run stays in one process


def partition_count(cfg: PipelineConfig, opts: JobOptions, source: Input) -> int:
    """How many partitions to run: 1 means the plain single-process run."""
    if type(source).split is Input.split or partition_boundary(
            [s.cls for s in cfg.stages]) is None:
        return 1
    explicit = opts.workers or cfg.workers
    if explicit:
        return explicit
    size = source.total_bytes() or 0
    return max(1, min(os.cpu_count() or 1, size // MIN_PARTITION_BYTES))


def partition_stages(cfg: PipelineConfig, part: Input) -> list[Stage]:
    """Fresh stages for one partition: its input, then everything up to the reducer."""
    boundary = partition_boundary([s.cls for s in cfg.stages])
    assert boundary is not None
    return [part] + [s.build() for s in cfg.stages[1:boundary]]


def sum_counters(results: list[dict[str, Any]], reducer: Stage) -> dict[str, int]:
    """The partitions' counters added up, plus the merged reducer's."""
    counters: dict[str, int] = {}
    for counts in [r["counters"] for r in results] + [collect_counters([reducer])]:
        for k, v in counts.items():
            counters[k] = counters.get(k, 0) + v
    return counters


def _die_with_parent() -> None:
    # a SIGKILLed run must not leave workers writing into the state directory
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_POSITIONS: Any = None  # shared (bytes, lines) read per partition, set before forking


def _run_partition(cfg: PipelineConfig, settings: dict[str, Any], part: Input,
                   part_slot: str, header: dict[str, Any], index: int) -> dict[str, Any]:
    """Worker: run input -> ... -> reducer on one partition; leave its state on disk."""
    stages = partition_stages(cfg, part)
    notices: list[str] = []
    dead = DeadLetter(os.path.join(part_slot, "dead_letter.jsonl"), strict=settings["strict"])
    opts = JobOptions(every_records=settings["every_records"],
                      every_seconds=settings["every_seconds"])
    store, resumed = open_slot(part_slot, stages, header, dead, notices)
    checkpointer = make_checkpointer(store, stages, dead, header, cfg, opts,
                                     periodic=settings["checkpoint"])
    def publish(records: int, at_end: bool) -> None:
        if _POSITIONS is not None:
            _POSITIONS[2 * index] = part.position()
            _POSITIONS[2 * index + 1] = part.counters().get("lines", 0)
    ctx = Context(dead)
    try:
        run_partial(stages, ctx, on_barrier=chain_hooks(checkpointer, publish))
    except RejectedLine as exc:
        if exc.line is None:
            raise
        raise RejectedLine(exc.reason, exc.line + part.lines_before(), exc.stage) from None
    finally:
        dead.close()
    return {"counters": collect_counters(stages[:-1]), "notices": notices,
            "resumed_lines": resumed, "where": part.where(),
            "meters": [m.as_dict() for m in ctx.meters]}


def _plan(slot: str, cfg: PipelineConfig, source: Input, n: int,
          notices: list[str]) -> list[Input]:
    """The partitions: the saved plan if it still fits the input, else a new one."""
    path = os.path.join(slot, "plan.pkl")
    identity = source.identity()
    want = {"version": STATE_VERSION, "config": cfg.identity(), "workers": n}
    try:
        with open(path, "rb") as fh:
            saved = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError):
        saved = None
    if saved is not None:
        problem = None
        if {k: saved.get(k) for k in want} != want:
            problem = "the config or worker count changed"
        else:
            problem = source.resume_problem(saved["input"], {"offset": saved["size"]})
        if problem is None:
            return [source.part(lo, hi) for lo, hi in saved["bounds"]]
        notices.append(f"{problem} since the last checkpoint; starting over")
    if os.path.isdir(slot):
        shutil.rmtree(slot)
    os.makedirs(slot)
    parts = source.split(n)
    bounds = [(p.start, p.end) for p in parts]
    bounds[-1] = (bounds[-1][0], None)  # the last partition reads whatever is appended
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump({**want, "input": identity, "size": source.total_bytes(),
                     "bounds": bounds}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return [source.part(lo, hi) for lo, hi in bounds]


def run_partitioned(cfg: PipelineConfig, opts: JobOptions, stages: list[Stage]) -> RunReport:
    source = stages[0]
    assert isinstance(source, Input)
    boundary = partition_boundary(stages)
    assert boundary is not None
    n = partition_count(cfg, opts, source)
    notices = Notices(opts.notify)
    checkpointing = checkpoint_enabled(cfg, opts)
    settings = {"strict": opts.strict, "checkpoint": checkpointing,
                "every_records": opts.every_records, "every_seconds": opts.every_seconds}
    slot = slot_dir(opts.state_dir, cfg, source)
    with SlotLock(slot):
        if (opts.fresh or not checkpointing) and os.path.isdir(slot):
            shutil.rmtree(slot)
            if opts.fresh:
                notices.append("--fresh: discarded the saved state")
        parts = _plan(slot, cfg, source, n, notices)
        part_slots = [os.path.join(slot, f"part-{i:03d}") for i in range(len(parts))]
        header = {"version": STATE_VERSION, "config": cfg.identity(), "workers": n,
                  "input": source.identity()}
        global _POSITIONS
        mp = get_context("fork")
        _POSITIONS = mp.Array("q", 2 * len(parts), lock=False)  # (bytes, lines) each
        bar = Progress(source.total_bytes(), opts.progress)
        try:
            with ProcessPoolExecutor(len(parts), mp_context=mp,
                                     initializer=_die_with_parent) as pool:
                futures = [pool.submit(_run_partition, cfg, settings, part, ps,
                                       {**header, "partition": i}, i)
                           for i, (part, ps) in enumerate(zip(parts, part_slots))]
                while wait(futures, timeout=0.2).not_done:
                    bar.update(sum(_POSITIONS[0::2]), sum(_POSITIONS[1::2]))
                results = [f.result() for f in futures]
        finally:
            bar.close()
            _POSITIONS = None
        resumed = [r for r in results if r["resumed_lines"] is not None]
        if resumed:
            notices.append(f"resumed {len(resumed)} of {len(parts)} partitions at "
                           + ", ".join(f"{i + 1}: {r['where']}" for i, r in enumerate(results)
                                       if r["resumed_lines"] is not None))
        dead = DeadLetter(opts.dead_letter_path)
        dead.start(0)
        base = 0
        for ps, r in zip(part_slots, results):
            _copy_rejects(os.path.join(ps, "dead_letter.jsonl"), dead, base)
            base += r["counters"].get("lines", 0)
        dead.close()
        reducer = _merge(cfg, boundary, part_slots, notices)
        tail_ctx = Context(dead)
        run_tail(reducer, stages[boundary:], tail_ctx)
        state_bytes = _tree_bytes(slot)
        if not checkpointing:
            shutil.rmtree(slot)
    report = RunReport(sum_counters(results, reducer), dead.count, dead.path, list(notices),
                       resumed_lines=sum(r["resumed_lines"] or 0 for r in results)
                       if resumed else None,
                       stages=stage_metrics(combine_meters(results, tail_ctx.meters), dead))
    report.state_bytes = state_bytes if checkpointing else 0
    return report


def combine_meters(results: list[dict[str, Any]], tail: list[Any]) -> list[dict[str, Any]]:
    """Per-stage metrics over all workers (seconds are summed: worker CPU time), then the
    stages after the reducer; the reducer's finish() time is added to its own."""
    head: list[dict[str, Any]] = []
    for r in results:
        for i, m in enumerate(r["meters"]):
            if i == len(head):
                head.append(dict(m))
            else:
                for k in ("records_in", "records_out", "seconds"):
                    head[i][k] += m[k]
    tail_dicts = [m.as_dict() for m in tail]
    head[-1]["seconds"] += tail_dicts[0]["seconds"]
    head[-1]["records_out"] = tail_dicts[0]["records_out"]
    return head + tail_dicts[1:]


def _merge(cfg: PipelineConfig, boundary: int, part_slots: list[str],
           notices: list[str]) -> Stage:
    """Load each partition's final state in order and fold it into one reducer."""
    spec = cfg.stages[boundary - 1]
    merged = None
    for ps in part_slots:
        tree = CheckpointStore(ps).load(notices.append)
        if tree is None or not tree.get("complete"):
            raise RuntimeError(f"partition state in {ps} is missing after its worker finished")
        partial = spec.build()
        partial.restore(tree["stages"][-1])
        del tree
        if merged is None:
            merged = partial
        else:
            merged.merge(partial)  # type: ignore[attr-defined]
    assert merged is not None
    return merged


def _copy_rejects(path: str, dead: DeadLetter, line_base: int) -> None:
    """Append a partition's rejects to the run's file, with absolute line numbers."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as fh:
        for raw in fh:
            entry = json.loads(raw)
            if entry.get("line") is not None:
                entry["line"] += line_base
            dead.append_entry(entry)


def _tree_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
