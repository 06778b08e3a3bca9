"""Run the same YAML pipeline on a Dask cluster.

The design is the local executor's: partition -> per-partition chain -> partial
reducer states -> merge in input order -> finish and output here, on the client.

- Partitions are newline-aligned byte ranges of each input file (`partition_mb`).
- Each runs input -> processors -> reducer.update() in a Dask task, which returns the
  reducer's compact snapshot, its rejects and its counters. Rejects travel inside the
  result, so a task Dask retries after a worker dies cannot write them twice.
- Partial states merge pairwise, left before right, in a tree of tasks on the cluster.
- As each partition finishes, the client saves its result in the state directory
  (keyed by partition bounds, under the config + input identity), so a client that is
  killed and rerun submits only the partitions that never finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from typing import Any

from .config import PipelineConfig
from .deadletter import DeadLetter
from .errors import SluiceError
from .job import (STATE_VERSION, JobOptions, RunReport, SlotLock, Notices, collect_counters,
                  slot_dir, stage_metrics)
from .executor import combine_meters, partition_stages, sum_counters
from .progress import Progress
from .runner import Context, partition_boundary, run_partial, run_tail
from .stage import Input, Stage

DEFAULT_PARTITION_MB = 64


def run_partition(cfg: PipelineConfig, part: Input, strict: bool) -> dict[str, Any]:
    """A Dask task: one partition up to its reducer's partial state."""
    stages = partition_stages(cfg, part)
    sink = DeadLetter(None, strict=strict)  # kept in memory, returned with the result
    ctx = Context(sink)
    run_partial(stages, ctx)
    return {"state": stages[-1].snapshot(), "rejects": sink.entries,
            "counters": collect_counters(stages[:-1]), "meters": [m.as_dict() for m in ctx.meters],
            "lines": part.counters().get("lines", 0)}


def merge_states(cfg: PipelineConfig, left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """A Dask task: fold `right` (later input) into `left`; returns a new state."""
    boundary = partition_boundary([s.cls for s in cfg.stages])
    spec = cfg.stages[boundary - 1]  # type: ignore[operator]
    a, b = spec.build(), spec.build()
    a.restore(left)
    b.restore(right)
    a.merge(b)  # type: ignore[attr-defined]
    return a.snapshot()


def _key(part: Any) -> str:
    raw = f"{part.files[0]}:{part.start}:{part.end}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def run_dask(cfg: PipelineConfig, opts: JobOptions, stages: list[Stage],
             scheduler: str | None, partition_mb: int) -> RunReport:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SluiceError("--executor dask needs dask[distributed]: "
                          "pip install 'dask[distributed]'") from None
    source = stages[0]
    boundary = partition_boundary(stages)
    if boundary is None or not hasattr(source, "partitions"):
        raise SluiceError("--executor dask needs a chain with a reducer and a file input")
    notices = Notices(opts.notify)
    parts = source.partitions(partition_mb << 20)  # type: ignore[attr-defined]
    slot = slot_dir(opts.state_dir, cfg, source) + ".dask"
    ident = {"version": STATE_VERSION, "config": cfg.identity(), "input": source.identity(),
             "parts": [(p.files[0], p.start, p.end) for p in parts]}
    with SlotLock(slot):
        done = _open_done(slot, ident, opts.fresh, notices)
        cluster = None
        if scheduler is None:
            cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                                   processes=True, host="127.0.0.1", dashboard_address=None)
        try:
            with Client(scheduler or cluster) as client:
                results = _compute(client, as_completed, cfg, parts, opts, done, slot, notices)
                final_state = results.pop("merged")
        finally:
            if cluster is not None:
                cluster.close()
        reducer = cfg.stages[boundary - 1].build()
        reducer.restore(final_state)
        dead = DeadLetter(opts.dead_letter_path)
        dead.start(0)
        base: dict[str, int] = {}
        for p, r in zip(parts, results["parts"]):
            f = p.files[0]
            for entry in r["rejects"]:
                if entry.get("line") is not None:
                    entry["line"] += base.get(f, 0)
                if len(source.files) > 1:  # type: ignore[attr-defined]
                    entry = {"file": f, **entry}
                dead.append_entry(entry)
            base[f] = base.get(f, 0) + r["lines"]
        dead.close()
        tail_ctx = Context(dead)
        run_tail(reducer, stages[boundary:], tail_ctx)
        if opts.checkpoint is False:
            shutil.rmtree(slot, ignore_errors=True)
    meters = combine_meters(results["parts"], tail_ctx.meters)
    return RunReport(sum_counters(results["parts"], reducer), dead.count, dead.path, list(notices),
                     stages=stage_metrics(meters, dead))


def _open_done(slot: str, ident: dict[str, Any], fresh: bool, notices: list[str]) -> dict[str, str]:
    """Partition results saved by an earlier client, if they belong to this run."""
    marker = os.path.join(slot, "identity.json")
    saved = None
    if os.path.exists(marker) and not fresh:
        with open(marker, encoding="utf-8") as fh:
            saved = json.load(fh)
    if saved is not None and saved != json.loads(json.dumps(ident)):
        notices.append("the config or input changed since the last run; starting over")
        saved = None
    if saved is None:
        shutil.rmtree(slot, ignore_errors=True)
        os.makedirs(slot)
        with open(marker, "w", encoding="utf-8") as fh:
            json.dump(ident, fh)
    return {name[:-4]: os.path.join(slot, name) for name in os.listdir(slot)
            if name.endswith(".pkl")}


def _save(slot: str, key: str, result: dict[str, Any]) -> None:
    path = os.path.join(slot, key + ".pkl")
    with open(path + ".tmp", "wb") as fh:
        pickle.dump(result, fh, protocol=5)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(path + ".tmp", path)


def _compute(client: Any, as_completed: Any, cfg: PipelineConfig, parts: list[Any],
             opts: JobOptions, done: dict[str, str], slot: str,
             notices: list[str]) -> dict[str, Any]:
    keys = [_key(p) for p in parts]
    futures: dict[int, Any] = {}
    loaded: dict[int, dict[str, Any]] = {}
    for i, (p, k) in enumerate(zip(parts, keys)):
        if k in done:
            with open(done[k], "rb") as fh:
                loaded[i] = pickle.load(fh)
        else:
            futures[i] = client.submit(run_partition, cfg, p, opts.strict, key=f"sluice-part-{k}-{i}",
                                       pure=False)
    if loaded:
        notices.append(f"reused {len(loaded)} of {len(parts)} finished partitions; "
                       f"computing {len(futures)}")
    order = {f.key: i for i, f in futures.items()}
    results: dict[int, dict[str, Any]] = dict(loaded)
    sizes = [p.total_bytes() or 0 for p in parts]
    bar = Progress(sum(sizes), opts.progress)
    done_bytes = sum(sizes[i] for i in loaded)
    try:
        for future in as_completed(list(futures.values())):
            i = order[future.key]
            result = future.result()
            _save(slot, keys[i], result)  # a killed client will not recompute this one
            results[i] = {k: v for k, v in result.items() if k != "state"}
            del result
            done_bytes += sizes[i]
            bar.update(done_bytes, force=True)
    finally:
        bar.close()
    # the tree merge runs on the cluster: computed states stay there, saved ones are
    # scattered back; the client keeps only rejects and counters
    level = []
    for i in range(len(parts)):
        if i in loaded:
            level.append(client.scatter([loaded.pop(i)["state"]], hash=False)[0])
        else:
            level.append(client.submit(_state_of, futures[i], pure=False))
    futures.clear()  # the tree holds what it needs; let merged inputs be released
    while len(level) > 1:
        nxt = [client.submit(merge_states, cfg, level[j], level[j + 1], pure=False)
               for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    merged = level[0].result()
    return {"parts": [{k: v for k, v in results[i].items() if k != "state"}
                      for i in range(len(parts))], "merged": merged}


def _state_of(result: dict[str, Any]) -> Any:
    return result["state"]
