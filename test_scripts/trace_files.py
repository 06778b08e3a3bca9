#!/usr/bin/env python3
"""How one run moves between the project's files: a call trace of the sample run.

    python test_scripts/trace_files.py [-c CONFIG] [-f INPUT]

It runs the pipeline in this process (one worker) and, from the moment the run
starts (the engine's run_job; loading the config is not counted), records under a
profiler hook, for every call and return between two of the project's files
(pipeline/, stages/, main.py), which file it goes to. It prints the files
entered, the crossings between files, how many of them return into a file the run had
already left, the files returned to most often, and how many stage objects were built.
A crossing from a file into the same file is not counted, and neither are the calls of
a function called more than 100 times (a function per record or per line, such as
msgspec calling a struct's __post_init__, would drown the structure of the run).
"Weaving" counts the returns into a file already left from a call that itself went
into other files: the run bouncing between the files that direct it, rather than a
caller using a helper (a leaf call) and going on.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def ours(path: str) -> str | None:
    path = os.path.abspath(path)
    rel = os.path.relpath(path, ROOT)
    if rel == "main.py" or rel.startswith(("pipeline" + os.sep, "stages" + os.sep)):
        return rel
    return None


def trace(argv: list[str]) -> dict:
    import main
    from pipeline import Stage

    built = collections.Counter()
    real_init = Stage.__init__

    def counting_init(self, **options):
        built[type(self).__name__] += 1
        real_init(self, **options)
    Stage.__init__ = counting_init  # type: ignore[method-assign]
    events: list[tuple[str, str | None, bool, bool]] = []  # (function, to, returning, leaf)
    stack: list[list] = []  # [function, its file, whether it called into another file]

    def hook(frame, event, arg):  # noqa: ANN001
        if event == "call":
            f = ours(frame.f_code.co_filename)
            key = f"{frame.f_code.co_filename}:{frame.f_code.co_firstlineno}"
            if stack and f is not None and f != stack[-1][1]:
                for entry in stack:
                    if entry[1] is not None and entry[1] != f:
                        entry[2] = True
            stack.append([key, f, False])
            events.append((key, f, False, False))
        elif event == "return" and stack:
            key, _, wove = stack.pop()
            events.append((key, stack[-1][1] if stack else None, True, not wove))
    import importlib
    job = importlib.import_module("pipeline.engine.job" if os.path.isdir(
        os.path.join(ROOT, "pipeline", "engine")) else "pipeline.job")
    real_run = job.run_job

    def traced(*args, **kw):  # noqa: ANN002, ANN003
        sys.setprofile(hook)
        try:
            return real_run(*args, **kw)
        finally:
            sys.setprofile(None)
    main.run_job = traced
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main.main(argv)
    finally:
        main.run_job = real_run
        Stage.__init__ = real_init  # type: ignore[method-assign]
    calls = collections.Counter(k for k, _, ret, _ in events if not ret)
    current: str | None = None
    visited: set[str] = set()
    crossings = returns = weaving = 0
    back: collections.Counter = collections.Counter()
    for key, to, returning, leaf in events:
        if calls[key] > 100 or to is None or to == current:
            continue
        crossings += 1
        if returning and to in visited:
            returns += 1
            if not leaf:
                weaving += 1
                back[to] += 1
        if current is not None:
            visited.add(current)
        current = to
    return {"files": len(visited | {current} - {None}), "crossings": crossings,
            "returns": returns, "weaving": weaving, "back": back.most_common(6),
            "built": built}


def main_() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-c", "--config", default=os.path.join(ROOT, "configs", "summary.yaml"))
    p.add_argument("-f", "--file", default=os.path.join(ROOT, "tests", "data", "sample",
                                                         "input.jsonl"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as state:
        r = trace(["-c", args.config, "-f", args.file, "--state-dir", state, "-w", "1"])
    print(f"files entered: {r['files']}")
    print(f"crossings between files: {r['crossings']}")
    print(f"returns into a file already left: {r['returns']}, of them weaving (from a "
          f"call that went into other files): {r['weaving']}")
    print("woven back into most: " + ", ".join(f"{f} {n}" for f, n in r["back"]))
    print(f"stage objects built: {sum(r['built'].values())} ("
          + ", ".join(f"{k} {v}" for k, v in sorted(r["built"].items())) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
