"""Planning a run once: its segments, map tasks, bucket counts and reduce tasks.

    file-input -> p -> reducer A -> q -> reducer B -> r -> output
    |---- segment 0 ----------|                        map tasks over input ranges
                               |-- segment 1 ---------|  map tasks over A's results
                                                        |-- a tail ---|

A segment runs from a source (the input, or the results of an earlier reducer) to its
*leaves*: the first reducer on each path. Segment 0's map tasks read ranges of the input
in parallel; a later segment is one map task over the results it reads, merged in key
(file) order, or, where every stage of it is `order_free` and there are several
workers, one map task per worker over a range of the reducer's buckets. A keyed
reducer's phases then run as reduce tasks over its buckets. What follows the last
reducer of a path, up to its output, is a *tail*, run in the main process.

With a `fork`, the segment that reaches it runs every branch too, up to its own first
reducer; a branch with no reducer ends that segment in a *capture*, which keeps its
records in file order on disk until the branch's output runs as a tail:

    input -> p -> fork -> summary:  site-state-reducer | -> sorted-stdout-output
                       -> statuses: where -> (capture) | -> jsonl-output

A chain without any reducer that runs in parts (job._in_parts) is one segment ending in
a capture, which keeps the output's bytes (Output.encode), and a tail of the output.

The plan is saved in `SLOT/plan.json` (JSON: nothing in it is executed). A resumed run
reuses it, so every task keeps its range, its number (the order keys of its rows) and
its directory. If the input grew, new map tasks are appended for the new part and the
plan's *generation* goes up, which invalidates every reduce result; if the input or
the config changed, the run starts over.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.engine.tasks import STATE_VERSION, Leaf, MapTask, ReduceTask
from pipeline.errors import DamagedState, OldState
from pipeline.keyed import KeyedReducer
from pipeline.stage import Input, Role
from pipeline.state.checkpoint import read_checked_json, write_checked_json

PLAN = "plan.json"
MAX_BUCKETS = 4096
LINE_BYTES_GUESS = 64  # bytes per input line assumed when sizing buckets (real logs: 150+)
CAPTURE_ROW_BYTES = 0   # a capture is never reduced


@dataclass
class Segment:
    number: int
    source: tuple[int, int] | None  # (segment, leaf) whose results it reads; None: input
    stages: list[int]               # cfg.stages run after the source, before any fork
    branches: dict[str, list[int]] = field(default_factory=dict)  # each up to its leaf
    leaves: list[Leaf] = field(default_factory=list)


@dataclass
class Tail:
    source: tuple[int, int]
    stages: list[int]               # ending in an output
    branch: str = ""


def _first_reducer(cfg: PipelineConfig, idx: list[int]) -> int | None:
    for n, i in enumerate(idx):
        if cfg.stages[i].cls.role is Role.REDUCER:
            return n
    return None


def _leaf(cfg: PipelineConfig, name: str, stage: int | None) -> Leaf:
    keyed = stage is not None and issubclass(cfg.stages[stage].cls, KeyedReducer)
    return Leaf(name, stage, keyed)


def layout(cfg: PipelineConfig, parts: bool = False) -> tuple[list[Segment], list[Tail]]:
    """The segments and tails of a config. A config without a reducer has none of
    either (a straight run), unless it runs in `parts`: then it is one segment whose
    every path ends in a capture, and each output is a tail."""
    segs: list[Segment] = []
    tails: list[Tail] = []

    def linear(source: tuple[int, int] | None, rest: list[int], branch: str) -> None:
        while True:
            r = _first_reducer(cfg, rest)
            if r is None:
                if source is None and parts:  # up to a capture before the output
                    segs.append(Segment(0, None, rest[:-1], {}, [_leaf(cfg, branch, None)]))
                    source, rest = (0, 0), rest[-1:]
                if source is not None:
                    tails.append(Tail(source, rest, branch))
                return
            segs.append(Segment(len(segs), source, rest[:r + 1], {},
                                [_leaf(cfg, branch, rest[r])]))
            source, rest = (len(segs) - 1, 0), rest[r + 1:]

    if not cfg.branches:
        linear(None, cfg.trunk[1:], "")
        return segs, tails
    rest = cfg.trunk[1:]
    source: tuple[int, int] | None = None
    while (r := _first_reducer(cfg, rest)) is not None:
        segs.append(Segment(len(segs), source, rest[:r + 1], {}, [_leaf(cfg, "", rest[r])]))
        source, rest = (len(segs) - 1, 0), rest[r + 1:]
    branch_parts, leaves, after = {}, [], {}
    for name, idx in cfg.branches.items():
        r = _first_reducer(cfg, idx)
        if r is None:  # no reducer: its records are captured, its output is a tail
            branch_parts[name], after[name] = idx[:-1], idx[-1:]
            leaves.append(_leaf(cfg, name, None))
        else:
            branch_parts[name], after[name] = idx[:r + 1], idx[r + 1:]
            leaves.append(_leaf(cfg, name, idx[r]))
    if source is None and all(leaf.stage is None for leaf in leaves) and not parts:
        return [], []  # no reducer anywhere: a straight run
    k = len(segs)
    segs.append(Segment(k, source, rest, branch_parts, leaves))
    for j, name in enumerate(cfg.branches):
        linear((k, j), after[name], name)
    return segs, tails


def bucket_count(rows: int, row_bytes: int, reduce_bytes: int) -> int:
    need = -(-rows * row_bytes // max(reduce_bytes, 1))
    return int(min(max(need, 1), MAX_BUCKETS))


class Plan:
    """The saved plan of one slot; see the module docstring."""

    def __init__(self, slot: str, cfg: PipelineConfig, data: dict[str, Any]):
        self.slot, self.cfg, self.data = slot, cfg, data
        self.segments, self.tails = layout(cfg, data.get("parts", False))

    def save(self) -> None:
        write_checked_json(os.path.join(self.slot, PLAN), self.data)

    @property
    def generation(self) -> int:
        return int(self.data["generation"])

    def seg_dir(self, k: int) -> str:
        return os.path.join(self.slot, f"s{k}")

    def nbuckets(self, k: int, leaf: int) -> int:
        return int(self.data["segments"][str(k)]["nbuckets"][leaf])

    def map_tasks(self, k: int) -> list[MapTask]:
        seg = self.segments[k]
        leaves = [Leaf(lf.name, lf.stage, lf.keyed, self.nbuckets(k, j))
                  for j, lf in enumerate(seg.leaves)]
        nonce = self.data["nonce"]
        if seg.source is None:
            return [MapTask(k, i, piece, os.path.join(self.seg_dir(k), f"m{i:05d}"),
                            seg.stages, seg.branches, leaves, nonce, nbytes, numbering)
                    for i, (piece, nbytes, numbering) in enumerate(zip(
                        self.data["ranges"], self.data["range_bytes"],
                        self.data["numbering"]))]
        read = self.data["segments"].get(str(k), {}).get("results")
        if read is None:  # one task, here, reads the results merged in key order
            return [MapTask(k, 0, None, os.path.join(self.seg_dir(k), "m00000"), seg.stages,
                            seg.branches, leaves, nonce)]
        n, tasks = read["nbuckets"], read["tasks"]  # tasks over ranges of the buckets
        return [MapTask(k, i, {**read, "buckets": [i * n // tasks, (i + 1) * n // tasks]},
                        os.path.join(self.seg_dir(k), f"m{i:05d}"), seg.stages, seg.branches,
                        leaves, nonce) for i in range(tasks)]

    def parallel_read(self, k: int) -> bool:
        """Whether segment k > 0 may read its source's buckets in parallel, unmerged:
        its source is a keyed reducer and every stage of it is order_free."""
        seg = self.segments[k]
        if seg.source is None or seg.branches:
            return False
        source = self.segments[seg.source[0]].leaves[seg.source[1]]
        return source.keyed and all(self.cfg.stages[i].cls.is_order_free(self.cfg.stages[i].options)
                                    for i in seg.stages)

    def reduce_tasks(self, k: int, leaf: int, phase: int, groups: int) -> list[ReduceTask]:
        lf = self.segments[k].leaves[leaf]
        n = self.nbuckets(k, leaf)
        inputs = [t.leaf_dir(leaf) for t in self.map_tasks(k)]
        for p in range(phase):
            inputs += [t.dir for t in self.reduce_tasks(k, leaf, p, groups)]
        groups = max(1, min(groups, n))
        out = []
        for g in range(groups):
            buckets = list(range(g * n // groups, (g + 1) * n // groups))
            out.append(ReduceTask(k, lf.stage, phase, buckets, inputs,  # type: ignore[arg-type]
                                  os.path.join(self.seg_dir(k), f"r{leaf}-{phase}-{g:04d}"),
                                  n, self.generation, self.data["nonce"]))
        return out

    def start_segment(self, k: int, generation: int, rows: int,
                      read: dict[str, Any] | None = None) -> bool:
        """Before segment k > 0 runs: True if its saved state can be reused. `read`:
        its map tasks read the source's buckets in parallel ({stage, dirs, nbuckets,
        tasks}: the source reducer, its last reduce phase's directories, its bucket
        count, how many tasks); None: one task reads them merged."""
        key = str(k)
        saved = self.data["segments"].get(key)
        if saved is not None and saved.get("after") == generation:
            return True
        shutil.rmtree(self.seg_dir(k), ignore_errors=True)
        self.data["segments"][key] = {"after": generation, "nbuckets": _sizes(
            self.cfg, self.segments[k], rows, self.data["reduce_bytes"])}
        if read is not None:
            self.data["segments"][key]["results"] = read
        self.save()
        return False


def _sizes(cfg: PipelineConfig, seg: Segment, rows: int, reduce_bytes: int) -> list[int]:
    """Buckets for each leaf of a segment that will see about `rows` records."""
    out = []
    for leaf in seg.leaves:
        if leaf.stage is None:
            out.append(1)
        else:
            row_bytes = cfg.stages[leaf.stage].cls.reduce_row_bytes
            out.append(bucket_count(rows, row_bytes, reduce_bytes))
    return out


def _ranges(source: Input, pieces: list[Any]) -> dict[str, list[Any]]:
    """What the plan keeps of each piece of the input: the piece (as JSON), its identity,
    its size and its numbering (see Input)."""
    pieces = [list(p) if isinstance(p, tuple) else p for p in pieces]
    return {"ranges": pieces, "range_ids": [source.range_identity(p) for p in pieces],
            "range_bytes": [source.range_bytes(p) for p in pieces],
            "numbering": [source.numbering(p) for p in pieces]}


def _saved(slot: str, notices: list[str]) -> dict[str, Any] | None:
    """The saved plan, or None: a damaged or missing one is said, and starts over."""
    path = os.path.join(slot, PLAN)
    try:
        saved = read_checked_json(path)
    except DamagedState as exc:
        if _written_before(path):
            raise OldState(slot) from None
        notices.append(f"{exc}; starting over")
        return None
    if saved is not None and saved.get("version") != STATE_VERSION:
        raise OldState(slot)
    if saved is None and os.path.isdir(slot) and os.listdir(slot):
        notices.append(f"saved state {slot} has no {PLAN}; starting over")
    return saved


def _written_before(path: str) -> bool:
    """A plan.json of a Sluice before checksums: plain JSON with a `version`."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "version" in doc and "sha256" not in doc


def open_plan(slot: str, cfg: PipelineConfig, source: Input, target_bytes: int,
              reduce_bytes: int, notices: list[str], parts: bool = False) -> Plan:
    """The saved plan if it still fits config and input (extended if the input grew),
    else a new one; the slot is cleared whenever the plan is new. `parts`: a config
    without a reducer runs in parts (layout())."""
    saved = _saved(slot, notices)
    if saved is not None:
        problem = None
        if saved.get("config") != cfg.identity():
            problem = "the config changed"
        else:
            problem = source.frontier_problem(saved["frontier"])
        for piece, identity in zip(saved["ranges"], saved["range_ids"]):
            if problem is None and source.range_identity(piece) != identity:
                problem = f"the input changed (the bytes of its range {piece} differ)"
        if problem is None:
            plan = Plan(slot, cfg, saved)
            more, frontier = source.ranges(target_bytes, saved["frontier"])
            if more:
                for key, values in _ranges(source, more).items():
                    saved[key] += values
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
    pieces, frontier = source.ranges(target_bytes)
    est = source.estimated_bytes()
    rows = (est // LINE_BYTES_GUESS) if est is not None else 8_000_000
    segs, _ = layout(cfg, parts)
    data = {"version": STATE_VERSION, "config": cfg.identity(), "frontier": frontier,
            "parts": parts,
            "nonce": secrets.token_hex(16), **_ranges(source, pieces),
            "generation": 0, "reduce_bytes": reduce_bytes,
            "segments": {"0": {"after": 0, "nbuckets": _sizes(cfg, segs[0], rows,
                                                               reduce_bytes)}}}
    plan = Plan(slot, cfg, data)
    plan.save()
    return plan
