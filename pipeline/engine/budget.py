"""The memory budget (`--memory-mb`): how it is shared between processes and jobs."""
from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import sys
from typing import Any, Iterable, Iterator

from pipeline.errors import SluiceError

MAP_WORK_BYTES = 48 << 20       # a map task's batches and temporaries, besides its buffer
HEADROOM = 0.10                 # of the budget, kept back: the shares below are estimates
SQUEEZE = "SLUICE_TEST_BUCKET_KB"  # tests only: the memory one bucket may use, in KiB
GC_THRESHOLDS = (500_000, 20, 10)  # see fewer_collections()


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while a run or a task works, and put
    the process's thresholds back after. Records are acyclic (reference counting frees
    them), but decoding millions of them makes the default thresholds (700, 10, 10)
    walk the young objects again and again: on a 1M-line dedupe-and-count run it took
    a third of the time (32.6 s against 20.9 s), at the same peak memory. The first
    threshold is above what one batch keeps alive (25,000 records of a few containers
    each): at 50,000, every batch was walked once or twice while it was processed,
    61 collections and 0.43 s of a 4.7 s count run in one process; at 500,000, 8 and
    0.001 s (4.04-4.34 s against 4.41-6.52 s, alternated, the same peak)."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class Budget:
    """How `--memory-mb` is shared: every process's interpreter (measured here, at
    start), each worker's map buffers and batches, and the bucket each worker reduces
    at a time. A tenth is kept back, because the map and reduce shares are estimates
    of what the data will take."""

    def __init__(self, memory_mb: int, workers: int, base_bytes: int):
        total = int((memory_mb << 20) * (1 - HEADROOM))
        processes = workers + (1 if workers > 1 else 0)  # the workers and this process
        self.per_worker = (total - processes * base_bytes) // workers
        self.buffer_bytes = int(min(max(self.per_worker // 16, 1 << 20), 16 << 20))
        self.reduce_bytes = int(self.per_worker * 0.75)
        squeeze = os.environ.get(SQUEEZE)  # tests: tiny buckets exercise every spill path
        if squeeze:
            self.reduce_bytes = int(squeeze) << 10
            self.buffer_bytes = min(self.buffer_bytes, max(self.reduce_bytes // 8, 4096))
        self.workers, self.memory_mb, self.base_bytes = workers, memory_mb, base_bytes

    def cut(self, asked: int) -> str:
        """The notice of a run given fewer workers than `asked`."""
        return (f"--memory-mb {self.memory_mb} fits {self.workers} of {asked} workers; "
                f"using {self.workers}")

    @staticmethod
    def fit(memory_mb: int, workers: int, base_bytes: int) -> "Budget":
        """The budget for at most `workers` workers; fewer if they would not fit."""
        while True:
            budget = Budget(memory_mb, workers, base_bytes)
            if budget.per_worker >= MAP_WORK_BYTES + budget.buffer_bytes:
                return budget
            if workers == 1:
                need = (base_bytes + MAP_WORK_BYTES + (1 << 20)) / (1 - HEADROOM) / (1 << 20) + 1
                raise SluiceError(f"--memory-mb {memory_mb} is too small: one process "
                                  f"needs about {need:.0f} MB here")
            workers -= 1


def give_back() -> None:
    """Return the memory a finished piece of work freed to the system: Arrow's pool
    and the C heap keep freed memory for reuse, so a process that goes on waiting
    (the main process while the workers reduce) would go on holding its peak."""
    gc.collect()
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        arrow.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc; elsewhere there is nothing to call
    except (OSError, AttributeError):
        pass


def loading(cfg: Any) -> list[str]:
    """The modules the pipeline's stages load when they run (Stage.loads_with, and
    pyarrow where records flow as columns)."""
    names = [m for spec in cfg.stages for m in spec.cls.loads_with(spec.options)]
    if any(spec.feeds_columns for spec in cfg.stages):
        names.append("pyarrow")
    return list(dict.fromkeys(names))


def own_rss(modules: Iterable[str] = ()) -> int:
    """This process's resident memory, once `modules` are imported (and warmed up,
    where a module has a `warm_up()`: what it takes once at work, as an embedded
    database's first query): a process that runs a stage holds the libraries it
    loads (pyarrow's take about 37 MB), so every process's share of the budget is
    measured with them."""
    for name in modules:
        warm = getattr(importlib.import_module(name), "warm_up", None)
        if callable(warm):
            warm()
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 48 << 20
