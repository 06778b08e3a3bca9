"""A worker process: `python pipeline/executors/worker.py FD PARENT_PID`.

Run as a script, not as `-m pipeline.executors.worker`, so that nothing (not even the
package's __init__) runs before the parent-death signal is armed. Started by the local
executor (local.py) with the parent's sys.path as PYTHONPATH, with stdin and stdout on
/dev/null, stderr on a log file in the state directory, and one socket (FD) to the
parent. The first thing it does,
before any import that could take time, is to ask the kernel to kill it when its parent
dies, and then to check that the parent has not died already: a SIGKILLed run leaves
no worker behind, holding nothing.

Messages on the socket are pickles: the parent sends the RunSettings once, then tasks
(None to finish); the worker answers ("progress", bytes, lines), ("ok", result) or ("error",
exception, traceback text) for each task.
"""
import os
import signal
import sys


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the socket's EOF still ends us
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(3)


def main() -> None:
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(parent)
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == here:
        del sys.path[0]  # this file's folder: its dask.py is not the dask package
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how a run stops
    stop = {"set": False}

    def request_stop(_signum: int, _frame: object) -> None:
        stop["set"] = True
    signal.signal(signal.SIGUSR1, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    import time
    import traceback
    from multiprocessing.connection import Connection

    from pipeline.engine.tasks import Env, do_task

    class Flag:
        def is_set(self) -> bool:
            return stop["set"]

    conn = Connection(fd)
    try:
        settings = conn.recv()
    except EOFError:
        return
    last = [0.0]

    def progress(done: int, lines: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2:
            last[0] = now
            conn.send(("progress", done, lines))

    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            result = do_task(settings, task, Env(stop=Flag(), progress=progress))
            conn.send(("ok", result))
        except BaseException as exc:  # everything goes back to the parent, which decides
            text = traceback.format_exc()
            try:
                conn.send(("error", exc, text))
            except Exception:  # the exception itself would not pickle
                conn.send(("error", RuntimeError(str(exc)), text))


if __name__ == "__main__":
    main()
