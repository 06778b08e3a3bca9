"""Planning a run once: its segments, map tasks, bucket counts and reduce tasks.

    file-input -> p -> reducer A -> q -> reducer B -> r -> output
    |---- segment 0 ----------|                        map tasks over input ranges
                               |-- segment 1 ---------|  one map task over A's results
                                                        |-- the tail --|

A segment ends in a reducer. Segment 0's map tasks read ranges of the input and run in
parallel; each later segment reads the merged results of the reducer before it. A
keyed reducer's phases then run as reduce tasks over its buckets.

The plan is saved in `SLOT/plan.json` (JSON: nothing in it is executed). A resumed run
reuses it, so every task keeps its range, its number (the order keys of its rows) and
its directory. If the input grew, new map tasks are appended for the new part and the
plan's *generation* goes up, which invalidates every reduce result; if the input or
the config changed, the run starts over.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

from .checkpoint import read_json, write_json_atomic
from .config import PipelineConfig
from .keyed import KeyedReducer
from .stage import Input, Kind
from .tasks import STATE_VERSION, MapTask, ReduceTask

PLAN = "plan.json"
MAX_BUCKETS = 4096
LINE_BYTES_GUESS = 64  # bytes per input line assumed when sizing buckets (real logs: 150+)


@dataclass
class Segment:
    number: int
    first: int      # cfg.stages[first:reducer + 1] run in its map tasks
    reducer: int
    keyed: bool


def segments(cfg: PipelineConfig) -> list[Segment]:
    out: list[Segment] = []
    first = 1
    for i, spec in enumerate(cfg.stages):
        if spec.cls.kind is Kind.REDUCER:
            out.append(Segment(len(out), first, i, issubclass(spec.cls, KeyedReducer)))
            first = i + 1
    return out


def bucket_count(rows: int, row_bytes: int, reduce_bytes: int) -> int:
    need = -(-rows * row_bytes // max(reduce_bytes, 1))
    return int(min(max(need, 1), MAX_BUCKETS))


class Plan:
    """The saved plan of one slot; see the module docstring."""

    def __init__(self, slot: str, cfg: PipelineConfig, data: dict[str, Any]):
        self.slot, self.cfg, self.data = slot, cfg, data
        self.segments = segments(cfg)

    def save(self) -> None:
        write_json_atomic(os.path.join(self.slot, PLAN), self.data)

    @property
    def generation(self) -> int:
        return int(self.data["generation"])

    def seg_dir(self, k: int) -> str:
        return os.path.join(self.slot, f"s{k}")

    def nbuckets(self, k: int) -> int:
        return int(self.data["segments"][str(k)]["nbuckets"])

    def map_tasks(self, k: int) -> list[MapTask]:
        seg = self.segments[k]
        stages = (seg.first, seg.reducer + 1)
        if k == 0:
            return [MapTask(0, i, where, os.path.join(self.seg_dir(0), f"m{i:05d}"), stages,
                            self.nbuckets(0)) for i, where in enumerate(self.data["ranges"])]
        return [MapTask(k, 0, None, os.path.join(self.seg_dir(k), "m00000"), stages,
                        self.nbuckets(k))]

    def reduce_tasks(self, k: int, phase: int, groups: int) -> list[ReduceTask]:
        seg = self.segments[k]
        n = self.nbuckets(k)
        inputs = [t.dir for t in self.map_tasks(k)]
        for p in range(phase):
            inputs += [t.dir for t in self.reduce_tasks(k, p, groups)]
        groups = max(1, min(groups, n))
        out = []
        for g in range(groups):
            buckets = list(range(g * n // groups, (g + 1) * n // groups))
            out.append(ReduceTask(k, seg.reducer, phase, buckets, inputs,
                                  os.path.join(self.seg_dir(k), f"r{phase}-{g:04d}"), n,
                                  self.generation))
        return out

    def start_segment(self, k: int, generation: int, rows: int) -> bool:
        """Before segment k > 0 runs: True if its saved state can be reused."""
        key = str(k)
        saved = self.data["segments"].get(key)
        if saved is not None and saved.get("after") == generation:
            return True
        shutil.rmtree(self.seg_dir(k), ignore_errors=True)
        cls = self.cfg.stages[self.segments[k].reducer].cls
        row_bytes = getattr(cls, "reduce_row_bytes", 256)
        self.data["segments"][key] = {"after": generation, "nbuckets": bucket_count(
            rows, row_bytes, self.data["reduce_bytes"])}
        self.save()
        return False


def open_plan(slot: str, cfg: PipelineConfig, source: Input, target_bytes: int,
              reduce_bytes: int, notices: list[str]) -> Plan:
    """The saved plan if it still fits config and input (extended if the input grew),
    else a new one; the slot is cleared whenever the plan is new."""
    saved = read_json(os.path.join(slot, PLAN))
    if saved is not None:
        problem = None
        if saved.get("version") != STATE_VERSION or saved.get("config") != cfg.identity():
            problem = "the config changed"
        else:
            problem = source.frontier_problem(saved["frontier"])
        if problem is None:
            plan = Plan(slot, cfg, saved)
            more, frontier = source.ranges(target_bytes, saved["frontier"])
            if more:
                saved["ranges"] += [list(w) if isinstance(w, tuple) else w for w in more]
                saved["generation"] += 1
                for k in list(saved["segments"]):
                    if k != "0":
                        del saved["segments"][k]
            saved["frontier"] = frontier
            plan.save()
            return plan
        notices.append(f"{problem} since the last checkpoint; starting over")
    if os.path.isdir(slot):
        shutil.rmtree(slot)
    os.makedirs(slot, mode=0o700)
    ranges, frontier = source.ranges(target_bytes)
    segs = segments(cfg)
    est = source.estimated_bytes()
    rows = (est // LINE_BYTES_GUESS) if est is not None else 8_000_000
    first = cfg.stages[segs[0].reducer].cls if segs else None
    nb = bucket_count(rows, getattr(first, "reduce_row_bytes", 256), reduce_bytes)
    data = {"version": STATE_VERSION, "config": cfg.identity(), "frontier": frontier,
            "ranges": [list(w) if isinstance(w, tuple) else w for w in ranges],
            "generation": 0, "reduce_bytes": reduce_bytes,
            "segments": {"0": {"after": 0, "nbuckets": nb}}}
    plan = Plan(slot, cfg, data)
    plan.save()
    return plan
