"""A Prometheus metrics endpoint for a running pipeline (`--metrics-port N`, or config
`metrics: {port, host}`), served by prometheus_client while the run lasts.

The engine tells `LIVE` what it runs as it starts each part (`watch()`): the input,
the stages' meters, the dead-letter file, the checkpointer, windowed reducers, the
state directory and the budget. A scrape reads them as they are at that moment, in this
process: everything of a run without a reducer and of a followed run; for a run with
workers, what the workers report as they go (lines and bytes read) and, per stage,
what each map task counted once it finished.

    sluice_lines_read_total, sluice_bytes_read_total
    sluice_stage_records_in_total{stage}, sluice_stage_records_out_total{stage}
        stage: the stage's label, `branch/stage` in a fork's branch
    sluice_rejects_total{stage, reason}   reason: its class (quoted values and numbers
                                          replaced by _, at most 60 characters)
    sluice_input_lag_bytes                a followed file's bytes not read yet
    sluice_checkpoints_total, sluice_checkpoint_seconds (the last one's duration),
    sluice_checkpoint_age_seconds         since the last good checkpoint
    sluice_state_bytes, sluice_memory_budget_bytes
    sluice_windows_open, sluice_windows_emitted_total
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterator

from pipeline.errors import PathError

class Live:
    """What the run shows; see the module docstring."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.sources: list[Any] = []     # inputs read in this process
        self.contexts: list[Any] = []    # runner Contexts: their meters
        self.dead: list[Any] = []        # DeadLetter objects
        self.checkpointers: list[Any] = []
        self.reducers: list[Any] = []    # stages that may hold windows
        self.progress = (0, 0)           # (bytes, lines) reported by workers
        self.finished: dict[str, list[int]] = {}  # stage label -> [in, out] of done tasks
        self.state_dir: str | None = None
        self.budget_bytes = 0

    LISTS = {"source": "sources", "context": "contexts", "dead": "dead",
             "checkpointer": "checkpointers"}

    def watch(self, **parts: Any) -> None:
        """Show these too: a source, context, dead (letter file) or checkpointer is
        added to its list; of `stages`, the windowed reducers; anything else is set."""
        with self.lock:
            for key, value in parts.items():
                if key in self.LISTS:
                    getattr(self, self.LISTS[key]).append(value)
                elif key == "stages":
                    self.reducers += [s for s in value if getattr(s, "win", None) is not None]
                else:
                    setattr(self, key, value)

    def unwatch_task(self, source: Any, context: Any, dead: Any, checkpointer: Any,
                     stages: list[Any]) -> None:
        """A map task finished here: its meters are counted by the job from now on."""
        with self.lock:
            for items, item in ((self.sources, source), (self.contexts, context),
                                (self.dead, dead), (self.checkpointers, checkpointer)):
                if item in items:
                    items.remove(item)
            self.reducers = [s for s in self.reducers if s not in stages]

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        with self.lock:
            lines, nbytes, lag = self.progress[1], self.progress[0], 0
            for src in self.sources:
                lines += src.counters().get("lines", 0)
                nbytes += src.position()
                follower = getattr(src, "follower", None)
                if follower is not None:
                    lag += sum(max(0, size - at) for size, at in
                               zip(follower.sizes, follower.offsets) if size >= 0)
            yield CounterMetricFamily("sluice_lines_read", "lines read from the input",
                                      value=lines)
            yield CounterMetricFamily("sluice_bytes_read", "bytes read from the input",
                                      value=nbytes)
            yield GaugeMetricFamily("sluice_input_lag_bytes",
                                    "bytes of a followed input not read yet", value=lag)
            inn = CounterMetricFamily("sluice_stage_records_in", "records a stage was given",
                                      labels=["stage"])
            out = CounterMetricFamily("sluice_stage_records_out", "records a stage passed on",
                                      labels=["stage"])
            for label, (a, b) in self._stages().items():
                inn.add_metric([label], a)
                out.add_metric([label], b)
            yield inn
            yield out
            rejects = CounterMetricFamily("sluice_rejects", "records sent to the dead-letter "
                                          "file", labels=["stage", "reason"])
            counts: dict[tuple[str, str], int] = {}
            for dead in self.dead:
                for key, n in dead.by_class.items():
                    counts[key] = counts.get(key, 0) + n
            for (stage, why), n in sorted(counts.items()):
                rejects.add_metric([stage, why], n)
            yield rejects
            done = sum(c.count for c in self.checkpointers)
            yield CounterMetricFamily("sluice_checkpoints", "checkpoints written", value=done)
            last = [c for c in self.checkpointers if c.last_at is not None]
            yield GaugeMetricFamily("sluice_checkpoint_seconds", "how long the last "
                                    "checkpoint took", value=max((c.last_seconds for c in last),
                                                                 default=0.0))
            yield GaugeMetricFamily("sluice_checkpoint_age_seconds", "seconds since the last "
                                    "good checkpoint", value=min(
                                        (time.monotonic() - c.last_at for c in last),
                                        default=0.0))
            yield GaugeMetricFamily("sluice_state_bytes", "bytes in the run's state directory "
                                    "(checkpoints, spills)", value=_tree_bytes(self.state_dir))
            yield GaugeMetricFamily("sluice_memory_budget_bytes", "the run's memory budget",
                                    value=self.budget_bytes)
            live = [s.live for s in self.reducers if s.live is not None]
            yield GaugeMetricFamily("sluice_windows_open", "event-time windows not emitted "
                                    "yet", value=sum(len(w.open) for w in live))
            yield CounterMetricFamily("sluice_windows_emitted", "event-time windows emitted",
                                      value=sum(w.emitted for w in live))

    def _stages(self) -> dict[str, list[int]]:
        seen = {k: list(v) for k, v in self.finished.items()}
        for ctx in self.contexts:
            # a stage is given what the one before it passed on (runner.settle, live)
            trunk_out = ctx.meters[-1].records_out if ctx.meters else 0
            chains = [(None, list(ctx.meters), 0)] + [
                (branch, list(ms), trunk_out) for branch, ms in ctx.branch_meters.items()]
            for branch, meters, given in chains:
                for m in meters:
                    label = f"{branch}/{m.name}" if branch else m.name
                    have = seen.setdefault(label, [0, 0])
                    have[0] += given
                    have[1] += m.records_out
                    given = m.records_out
        return seen


def _tree_bytes(path: str | None) -> int:
    total = 0
    if path and os.path.isdir(path):
        for root, _dirs, files in os.walk(path):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass  # removed while walking
    return total


LIVE = Live()


class Endpoint:
    """The HTTP server of LIVE's metrics, for the length of a `with` block."""

    def __init__(self, port: int | None, host: str = "127.0.0.1"):
        self.port, self.host = port, host
        self.server: Any = None

    def __enter__(self) -> "Endpoint":
        LIVE.reset()
        if not self.port:
            return self
        from prometheus_client import CollectorRegistry, start_http_server
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LIVE)  # type: ignore[arg-type]
        try:
            self.server, _ = start_http_server(self.port, addr=self.host, registry=registry)
        except OSError as exc:
            raise PathError(f"--metrics-port {self.port}: cannot serve metrics on "
                            f"{self.host}:{self.port}: {exc.strerror or exc}; choose "
                            f"another port") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        LIVE.reset()
