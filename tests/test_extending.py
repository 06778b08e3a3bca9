"""The README's "Adding an input" and "Adding an executor" examples work as written, and
the engine's layout holds: no import circle, nothing importing upward."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from conftest import ROOT, SUMMARY, cli, generate
from pipeline.testing import check_resume

README = (ROOT / "README.md").read_text()
sys.path.insert(0, str(ROOT / "test_scripts"))
import import_graph  # noqa: E402


def example(heading: str) -> str:
    section = README.split(f"### {heading}\n")[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def module(tmp_path, name: str, heading: str) -> str:
    (tmp_path / f"{name}.py").write_text(example(heading))
    return name


def test_the_import_graph_has_no_circle_and_no_upward_import():
    """test_scripts/import_graph.py finds no problem in pipeline/."""
    graph, problems = import_graph.problems()
    assert problems == [] and len(graph) > 30


def test_the_generator_input_example(tmp_path):
    """The README's Ticks input: it passes check_resume, runs in a pipeline, and a run
    killed midway resumes to the same output."""
    sys.path.insert(0, str(tmp_path))
    try:
        mod = __import__(module(tmp_path, "ticks_example", "Adding an input"))
        out = check_resume(lambda: mod.Ticks(count=1000, batch=70))
        assert len(out.records) == 1000 and out.counters == {"lines": 1000}
    finally:
        sys.path.remove(str(tmp_path))
    cfg = tmp_path / "t.yaml"
    cfg.write_text("pipeline:\n  - ticks_example:Ticks: {count: 300000, batch: 1000}\n"
                   "  - json-decode: {schema: object}\n"
                   "  - jsonl-output: {path: out.jsonl}\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    args = ["-c", str(cfg), "--state-dir", str(tmp_path / "s"), "--checkpoint-every", "5000"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=tmp_path,
                            env={**__import__("os").environ, **env},
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((tmp_path / "s").glob("*/checkpoint-*")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    p = cli(*args, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert lines == [f'{{"n":{i}}}' for i in range(1, 300001)]
    assert p.stderr.splitlines()[-1].startswith("sluice: 300,000 lines read")


def test_the_thread_executor_example(tmp_path):
    """The README's Threads executor, named by import path in the config, gives the
    summary the built-in executors give, with 2 workers."""
    module(tmp_path, "threads_example", "Adding an executor")
    log = generate(tmp_path / "log.jsonl", 60000, 4)
    base = SUMMARY
    cfg = tmp_path / "threads.yaml"
    cfg.write_text(open(base).read() + "executor: {type: threads_example:Threads}\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    want = cli("-c", base, "-f", str(log), "--state-dir", str(tmp_path / "a"), "-w", "2")
    got = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / "b"), "-w", "2",
              env=env)
    assert got.returncode == 0, got.stderr
    assert got.stdout == want.stdout and got.stdout.count("\n") > 100
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(base).read() + "executor: {type: threads_example:Threads, x: 1}\n")
    p = cli("-c", str(bad), "-f", str(log), "--state-dir", str(tmp_path / "c"), env=env)
    assert (p.returncode, p.stderr) == (2, f"sluice: error: {bad}:10: executor: 'x' is not an "
                                           f"option of executor 'threads'; it takes none\n")


def test_old_state_is_refused_with_one_line(tmp_path):
    """State written by an older Sluice (a plan.json without checksums, a checkpoint of
    another format) is refused with one line saying to rerun with --fresh."""
    log = generate(tmp_path / "log.jsonl", 2000, 1)
    s = tmp_path / "s"
    assert cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(s)).returncode == 0
    slot = next(p for p in s.iterdir() if p.is_dir())
    (slot / "plan.json").write_text('{"version": 2, "config": "x", "ranges": []}')
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(s))
    assert (p.returncode, p.stderr) == (2, f"sluice: error: saved state {slot} was written by "
                                           f"another version of Sluice; rerun with --fresh "
                                           f"to discard it and start over\n")
    assert cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(s), "--fresh").returncode == 0
    jsonl = tmp_path / "j.yaml"  # a run without reducers: its checkpoint manifest
    jsonl.write_text("pipeline:\n  - file-input: {path: x}\n  - json-decode: {}\n"
                     "  - jsonl-output: {path: out.jsonl}\n")
    assert cli("-c", str(jsonl), "-f", str(log), "--state-dir", str(s), cwd=tmp_path
               ).returncode == 0
    slot = next(p for p in s.iterdir() if p.is_dir() and list(p.glob("checkpoint-*")))
    for manifest in slot.glob("checkpoint-*"):
        data = manifest.read_bytes()
        manifest.write_bytes(data.replace(b"SLUICE-CHECKPOINT-2\n", b"SLUICE-CHECKPOINT-1\n"))
    p = cli("-c", str(jsonl), "-f", str(log), "--state-dir", str(s), cwd=tmp_path)
    assert (p.returncode, p.stderr) == (2, f"sluice: error: saved state {slot} was written by "
                                           f"another version of Sluice; rerun with --fresh "
                                           f"to discard it and start over\n")
