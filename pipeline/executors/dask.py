"""The Dask executor: the same planned tasks, run on a Dask cluster.

Map and reduce tasks run on the workers and write their rows, checkpoints and rejected
lines into the state directory, which every worker must reach (one machine, or a path
shared between them); a task returns only a small dict of counts. The client keeps
nothing but those, reads the rejected lines and the reducers' results from disk, and
runs the stages after the reducer: its memory does not grow with the input.

Without a scheduler address a LocalCluster (one single-threaded worker process per CPU,
on 127.0.0.1) is started and closed at the end; its workers exit when this process
does. A stop request (SIGINT/SIGTERM) writes `SLOT/STOP`, which running tasks check at
every batch boundary, cancels what has not started, and closes a LocalCluster.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from pipeline.engine.signals import FileFlag
from pipeline.engine.tasks import Env, RunSettings, do_task
from pipeline.errors import SluiceError, Stopped
from pipeline.executors.base import Executor
from pipeline.stage import Option, positive_at_most

CONNECT_TIMEOUT = 15  # seconds to reach a scheduler before giving up
STOP_GRACE = 1.5


def _probe(address: str) -> None:
    """Fail fast, on one line, when nothing listens at a tcp:// scheduler address:
    Dask itself retries until CONNECT_TIMEOUT and then says so at length."""
    import socket

    scheme, sep, rest = address.rpartition("://")
    if sep and scheme != "tcp":
        return  # tls://, ucx://, ...: left to Dask
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise SluiceError(f"--scheduler {address}: expected an address like "
                          f"tcp://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        why = exc.strerror or str(exc) or exc.__class__.__name__
        raise SluiceError(f"cannot reach the Dask scheduler at {address}: {why} (expected "
                          f"a scheduler listening there; start one with `dask scheduler`, or "
                          f"leave out --scheduler for a local cluster)") from None


def _run_on_worker(settings: RunSettings, task: Any, stop_path: str) -> dict[str, Any]:
    return do_task(settings, task, Env(stop=FileFlag(stop_path)))


def _address(value: Any) -> str | None:
    return None if "\0" not in value else f"must not hold a NUL character; got {value!r}"


class DaskExecutor(Executor):
    """Map and reduce tasks on a Dask cluster: the one at `scheduler`, or a LocalCluster
    of one single-threaded worker process per CPU, started and closed with the run."""

    name = "dask"
    options = (
        Option("scheduler", str, None, "Dask scheduler, e.g. tcp://127.0.0.1:8786 (default: "
                                       "a LocalCluster)", check=_address),
        Option("partition_mb", int, 64, "Dask partition size in MiB",
               check=positive_at_most(1 << 20)),
    )

    @classmethod
    def workers_for(cls, requested: int | None, input_bytes: int) -> int:
        return 1  # the cluster's workers are its own: the budget here is the client's

    @classmethod
    def piece_bytes(cls, input_bytes: int, workers: int, options: dict[str, Any]) -> int:
        return int(options.get("partition_mb") or 64) << 20

    def reduce_groups(self, nbuckets: int) -> int:
        return nbuckets  # a task per bucket: the cluster spreads them

    def __init__(self, workers: int, slot: str, stop: Any, **options: Any):
        super().__init__(workers, slot, stop, **options)
        self.stop_path = os.path.join(slot, "STOP")
        self.client: Any = None
        self.cluster: Any = None

    def start(self, settings: RunSettings) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise SluiceError("--executor dask needs dask[distributed]: "
                              "pip install 'dask[distributed]'") from None
        if os.path.exists(self.stop_path):
            os.unlink(self.stop_path)
        self.settings = settings
        # a stopped run cancels tasks: Dask would log each one on stderr
        logging.getLogger("distributed").setLevel(logging.ERROR)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")  # the spawned workers
        if self.scheduler is not None:
            _probe(self.scheduler)
        if self.scheduler is None:
            self.cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                                        processes=True, host="127.0.0.1",
                                        dashboard_address=None)
        try:
            self.client = Client(self.scheduler or self.cluster, timeout=CONNECT_TIMEOUT)
        except Exception as exc:  # a timeout, or something that is not a Dask scheduler
            text = " ".join(str(exc).split())[:300]  # one line, whatever Dask said
            raise SluiceError(f"cannot connect to the Dask scheduler at {self.scheduler} "
                              f"({exc.__class__.__name__.lstrip('_')}: {text}); expected a Dask "
                              f"scheduler answering there within {CONNECT_TIMEOUT} s") from None
        self.workers = max(len(self.client.scheduler_info().get("workers", {})), 1)

    def run(self, tasks: list[Any], progress: Callable[[int, int], None] | None = None
            ) -> list[dict[str, Any]]:
        futures = [self.client.submit(_run_on_worker, self.settings, task, self.stop_path,
                                      key=f"sluice-{os.path.basename(task.dir)}-"
                                          f"{abs(hash(task.dir)):x}-{time.monotonic_ns()}",
                                      pure=False, retries=2)
                   for task in tasks]
        results: list[Any] = [None] * len(tasks)
        done_bytes = done_lines = 0
        pending = set(range(len(tasks)))
        stop_at = None
        while pending:
            if self.stop.is_set() and stop_at is None:
                stop_at = time.monotonic()
                os.close(os.open(self.stop_path, os.O_WRONLY | os.O_CREAT, 0o600))
                for i in pending:
                    futures[i].cancel()
            if stop_at is not None and time.monotonic() - stop_at > STOP_GRACE:
                raise Stopped(done_lines)
            finished = sorted(i for i in pending if futures[i].done())
            if not finished:
                time.sleep(0.05)
            for i in finished:
                f = futures[i]
                pending.discard(i)
                if f.status == "cancelled":
                    continue
                exc = f.exception()
                if exc is not None:
                    for j in pending:
                        if j > i:
                            futures[j].cancel()
                    pending = {j for j in pending if j < i}
                    if not isinstance(exc, Stopped):
                        self._raise_first(futures, tasks, i, exc)
                    continue
                results[i] = f.result()
                done_lines += results[i].get("lines", 0)
                done_bytes += tasks[i].nbytes
                if progress is not None:
                    progress(done_bytes, done_lines)
        if self.stop.is_set() or any(r is None for r in results):
            raise Stopped(done_lines)
        return results

    def _raise_first(self, futures: list[Any], tasks: list[Any], i: int,
                     exc: BaseException) -> None:
        """Let the tasks before the failed one finish: one of them may fail earlier."""
        from distributed import wait

        earlier = [f for f in futures[:i] if f.status not in ("finished", "cancelled")]
        if earlier:
            wait(earlier)
        for f in futures[:i]:
            if f.status == "error" and not isinstance(f.exception(), Stopped):
                raise f.exception()
        raise exc

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
