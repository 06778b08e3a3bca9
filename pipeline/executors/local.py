"""The local executor: tasks in N worker processes on this machine (`-w N`); with one
worker, in this process (inline.py).

`run(tasks)` returns the results in task order, or raises the error of the earliest
failed task; tasks after a failed one are not started, tasks before it run to their
end, so `--strict` reports the first bad line in file order.

Local workers are plain subprocesses (`worker.py` beside this file), not multiprocessing
children: they get no copy of this process's memory, locks or stdio, they die with it
(PR_SET_PDEATHSIG, armed before anything else runs in them), and they stop at the next
batch boundary when asked (SIGUSR1), writing a checkpoint first.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any

from pipeline.engine.tasks import RunSettings
from pipeline.errors import SluiceError, Stopped
from pipeline.executors.base import Executor, Progress
from pipeline.executors.inline import InlineExecutor

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
STOP_GRACE = 1.5  # seconds a worker gets to checkpoint and stop before it is killed


class WorkerDied(SluiceError):
    exit_code = 1


class LocalExecutor(Executor):
    """Runs tasks in N worker processes, handing each the next task when it is free."""

    name = "local"
    follows = True  # with one worker, which a followed run needs: then it runs inline

    @classmethod
    def create(cls, workers: int, slot: str, stop: Any, **options: Any) -> Executor:
        if workers == 1:
            return InlineExecutor(1, slot, stop, **options)
        return cls(workers, slot, stop, **options)

    def __init__(self, workers: int, slot: str, stop: Any, **options: Any):
        super().__init__(workers, slot, stop, **options)
        self.log_dir = slot
        self.procs: list[subprocess.Popen] = []
        self.conns: list[Connection] = []
        self.logs: list[str] = []

    def start(self, settings: RunSettings) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        for i in range(self.workers):
            mine, theirs = socket.socketpair()
            log = os.path.join(self.log_dir, f"worker-{i}.log")
            # 0600 like all state: a worker's last words may quote input lines
            with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, WORKER, str(theirs.fileno()), str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    pass_fds=[theirs.fileno()], env=env)
            theirs.close()
            self.procs.append(proc)
            self.conns.append(Connection(mine.detach()))
            self.logs.append(log)
        for conn in self.conns:
            conn.send(settings)

    def _died(self, i: int, task: Any) -> WorkerDied:
        proc = self.procs[i]
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        how = (f"was killed by signal {-code}" if code is not None and code < 0
               else f"exited with code {code}")
        tail = ""
        try:
            with open(self.logs[i], "rb") as fh:
                text = fh.read()[-2000:].decode("utf-8", "replace").strip()
            tail = f"; its last words: {text.splitlines()[-1]}" if text else ""
        except OSError:
            pass
        return WorkerDied(f"worker process {proc.pid} {how} during {task.describe()}"
                          f"{tail}; rerun the same command to resume")

    def run(self, tasks: list[Any], progress: Progress | None = None) -> list[dict[str, Any]]:
        queue = deque(enumerate(tasks))
        idle = deque(range(self.workers))
        busy: dict[int, tuple[int, Any]] = {}   # worker -> (task number, task)
        now_at: dict[int, tuple[int, int]] = {}  # worker -> (bytes, lines) in its task
        done_bytes = done_lines = 0
        results: list[Any] = [None] * len(tasks)
        errors: dict[int, BaseException] = {}
        stop_sent = None
        while queue or busy:
            stopping = self.stop.is_set()
            while queue and idle and not stopping and (not errors or queue[0][0] < min(errors)):
                w = idle.popleft()
                n, task = queue.popleft()
                busy[w] = (n, task)
                now_at[w] = (0, 0)
                self.conns[w].send(task)
            if stopping:
                queue.clear()
                if stop_sent is None:
                    stop_sent = time.monotonic()
                    self._signal(busy, signal.SIGUSR1)
                elif time.monotonic() - stop_sent > STOP_GRACE:
                    self._signal(busy, signal.SIGKILL)
                    raise Stopped(done_lines + sum(x for _, x in now_at.values()))
            if not busy:
                break
            by_conn = {self.conns[w]: w for w in busy}
            for conn in wait(list(by_conn), timeout=0.1):
                w = by_conn[conn]  # type: ignore[index]
                n, task = busy[w]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    if stop_sent is not None:
                        raise Stopped(done_lines) from None
                    raise self._died(w, task) from None
                if msg[0] == "progress":
                    now_at[w] = (msg[1], msg[2])
                    continue
                del busy[w]
                now_at.pop(w, None)
                idle.append(w)
                if msg[0] == "ok":
                    results[n] = msg[1]
                    done_bytes += task.nbytes
                    done_lines += msg[1].get("lines", 0)
                else:
                    errors[n] = msg[1]
                    queue = deque(item for item in queue if item[0] < n)
            if progress is not None:
                progress(done_bytes + sum(b for b, _ in now_at.values()),
                         done_lines + sum(x for _, x in now_at.values()))
        real = {n: e for n, e in errors.items() if not isinstance(e, Stopped)}
        if real:
            raise real[min(real)]
        if errors or self.stop.is_set():
            raise Stopped(done_lines + sum(e.lines for e in errors.values()))  # type: ignore[attr-defined]
        return results

    def _signal(self, busy: dict[int, Any], sig: int) -> None:
        for w in busy:
            try:
                os.kill(self.procs[w].pid, sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 2
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
