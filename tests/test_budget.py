"""The memory budget: tiny buckets force every spill path on small inputs, exactly."""
from __future__ import annotations

import json
import os

import pytest

from conftest import ROOT, cli, generate
from pipeline.state.checkpoint import read_checked_json
from reference import summarize

SUMMARY = str(ROOT / "configs" / "summary.yaml")


def squeezed(kb):
    return {"SLUICE_TEST_BUCKET_KB": str(kb)}


@pytest.mark.parametrize("seed,sites,extra", [
    (31, 40, ["--mixed-site-ids"]),
    (32, 1, []),                        # one site: its bucket can only be streamed
    (33, 3, ["--operators", "200"]),    # a few huge sites with many operators
])
@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("kb", [8, 64])
def test_tiny_buckets_give_the_exact_summary(tmp_path, seed, sites, extra, workers, kb):
    """Many buckets, split and streamed buckets: the same bytes as the reference."""
    log = generate(tmp_path / "log.jsonl", 12_000, seed, "--sites", str(sites),
                   "--conflicting-dups", "--bad-rate", "0.005", "--dup-rate", "0.1", *extra)
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "s"), "-w", workers,
            env=squeezed(kb))
    assert p.returncode == 0, p.stderr
    assert p.stdout == summarize(log.read_bytes())
    plan = read_checked_json(next((tmp_path / "s").glob("*/plan.json")))
    assert plan["segments"]["0"]["nbuckets"][0] > 10


def test_dedupe_and_count_with_tiny_buckets_match_a_plain_count(tmp_path):
    """count_by_type.yaml (dedupe by id, then count) with 3 workers and tiny buckets."""
    log = generate(tmp_path / "log.jsonl", 15_000, 41, "--mixed-site-ids", "--dup-rate",
                   "0.2", "--conflicting-dups")
    cfg = tmp_path / "c.yaml"
    cfg.write_text((ROOT / "configs" / "count_by_type.yaml").read_text())
    seen, counts = set(), {}
    for line in log.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec["id"] in seen:
            continue
        seen.add(rec["id"])
        counts[rec["type"]] = counts.get(rec["type"], 0) + 1
    want = "type,count\n" + "".join(f"{k},{v}\n" for k, v in sorted(counts.items()))
    for workers in ("1", "3"):
        p = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / workers), "-w",
                workers, env=squeezed(16))
        assert p.returncode == 0, p.stderr
        assert p.stdout == want
        dup = len([1 for x in log.read_bytes().split(b"\n") if x.strip()]) - len(seen)
        assert f"{dup:,} duplicates skipped" in p.stderr
        # count does not depend on the order of its records: with 3 workers, 3 map
        # tasks read ranges of dedupe's buckets (no merge); with 1, one task reads all
        plan = read_checked_json(next((tmp_path / workers).glob("*/plan.json")))
        read = plan["segments"]["1"].get("results")
        assert (read["tasks"], len(read["dirs"]) > 0) == (3, True) if workers == "3" \
            else read is None


AGGREGATE = """pipeline:
  - file-input: {path: x}
  - json-decode: {schema: object}
  - dedupe: {field: id}
  - mutate: {convert: {site_id: str}}
  - where: {field: type, in: [message, status]}
  - aggregate:
      by: [site_id, type]
      metrics: {n: count, senders: count_distinct(from), first: min(timestamp),
                last: max(timestamp), total: sum(timestamp)}
  - jsonl-output: {path: "-"}
"""


@pytest.mark.parametrize("second,parallel,rejected", [
    ("", True, 42), ("  - dedupe: {field: from}\n", False, 39)])
def test_a_later_segment_reads_the_buckets_in_parallel_only_when_order_does_not_matter(
        tmp_path, second, parallel, rejected):
    """dedupe -> mutate -> where -> aggregate: every stage after dedupe is order_free, so
    with 2 workers two map tasks read ranges of dedupe's buckets, and the output is the
    one-task output, byte for byte. A second dedupe (which keeps the first record in
    file order) is read by one task, merged in order (the segment after it, order_free
    again, in parallel)."""
    log = generate(tmp_path / "log.jsonl", 12_000, 43, "--mixed-site-ids", "--dup-rate",
                   "0.2", "--conflicting-dups", "--bad-rate", "0.002")
    with open(log, "a") as fh:  # records that aggregate's sum rejects, after dedupe
        for i in range(40):
            fh.write(json.dumps({"id": f"odd-{i}", "from": f"v{i}", "type": "message",
                                 "site_id": i % 7, "timestamp": f"t{i}"}) + "\n")
    cfg = tmp_path / "a.yaml"
    cfg.write_text(AGGREGATE.replace("  - mutate:", second + "  - mutate:"))
    outs = {}
    for workers in ("1", "2"):
        p = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / workers), "-w",
                workers, env=squeezed(16))
        assert p.returncode == 0, p.stderr
        plan = read_checked_json(next((tmp_path / workers).glob("*/plan.json")))
        tasks = plan["segments"]["1"].get("results", {}).get("tasks", 1)
        assert tasks == (2 if parallel and workers == "2" else 1)
        entries = [json.loads(x) for x in (tmp_path / workers / "dead_letter.jsonl").open()]
        lined = [e for e in entries if e["line"] is not None]  # input lines: in file order
        after = sorted(json.dumps(e) for e in entries if e["line"] is None)
        outs[workers] = (p.stdout, p.stderr.splitlines()[-1].replace(str(tmp_path / workers), "S"),
                         lined, after)
    assert outs["1"] == outs["2"]
    assert outs["1"][0].count("\n") > 100
    # what sum(timestamp) rejects after dedupe (the 40 records added, 2 of the
    # generator's; fewer after a dedupe by sender): the same entries; in parallel they
    # come bucket by bucket, not in file order (they have no line number)
    assert len(outs["1"][3]) == rejected
    assert all('"stage": "aggregate"' in e for e in outs["1"][3])


def test_stress_kill_with_tiny_buckets():
    """SIGKILLs while many small buckets are written, split and streamed: always exact."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "stress_kill.py"),
                        "--lines", "20000", "--kills", "8", "--seed", "8", "--workers", "2",
                        "--bucket-kb", "32", "--max-seconds", "240"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 failures" in p.stdout and "8 kills" in p.stdout


def test_memory_budget_too_small_is_one_line(tmp_path):
    """A budget below what one process needs is refused before anything runs."""
    p = cli("-c", SUMMARY, "-f", str(ROOT / "tests" / "data" / "sample" / "input.jsonl"),
            "--state-dir", str(tmp_path), "--memory-mb", "20")
    assert p.returncode == 2
    assert p.stderr.startswith("sluice: error: --memory-mb 20 is too small: one process "
                               "needs about ")
    assert p.stderr.endswith(" MB here\n")
    assert not os.path.exists(tmp_path / "dead_letter.jsonl")


def test_a_run_collects_garbage_less_often_and_puts_the_thresholds_back(run):
    """While a run (and each task) works, the cyclic collector runs at GC_THRESHOLDS;
    afterwards a program that ran it in-process has its own thresholds again."""
    import gc

    from pipeline.engine import budget

    seen = []
    real = budget.Budget.fit

    def fit(*args, **kw):  # called inside the run
        seen.append(gc.get_threshold())
        return real(*args, **kw)
    before = gc.get_threshold()
    gc.set_threshold(1234, 5, 6)
    try:
        budget.Budget.fit = fit
        result = run([json.dumps({"id": "a", "type": "message", "site_id": "1", "from": "v",
                                  "timestamp": 1, "data": {"message": "m"}})])
        assert result.rc == 0, result.err
        assert seen == [budget.GC_THRESHOLDS]
        assert gc.get_threshold() == (1234, 5, 6)
    finally:
        budget.Budget.fit = real
        gc.set_threshold(*before)


def test_the_budget_counts_the_libraries_the_stages_load(tmp_path):
    """A process that runs aggregate, parquet-output or stages on columns holds pyarrow
    (about 37 MB): the budget measures each process's base with it loaded. A summary
    run loads no pyarrow at all."""
    import subprocess
    import sys

    import main
    from pipeline.config import load_config
    from pipeline.engine.budget import loading

    registry = main.build_registry()
    parquet = tmp_path / "parquet.yaml"
    parquet.write_text("pipeline:\n  - file-input: {path: x}\n  - json-decode: {schema: object}\n"
                       "  - parquet-output: {path: out.parquet, columns: [id]}\n")
    expected = {"summary.yaml": [], "count_by_type.yaml": [], "aggregate.yaml": ["pyarrow"],
                "mutate.yaml": ["pyarrow"], str(parquet): ["pyarrow", "pyarrow.parquet"],
                "web_errors.yaml": ["pyarrow", "stages.expression"]}
    for name, modules in expected.items():
        path = name if os.path.isabs(name) else os.path.join(ROOT, "configs", name)
        assert loading(load_config(path, registry)) == modules, name
    code = ("import sys, main; main.main(['-c', 'configs/summary.yaml', '-f', "
            "'tests/data/sample/input.jsonl', '--state-dir', sys.argv[1], '-q']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow'))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "st")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines()[-1] == "[]", out.stderr


def test_give_back_returns_arrows_freed_memory():
    """After a piece of work, what Arrow's pool freed goes back to the system (its
    allocator keeps it otherwise), so a process that waits does not hold its peak."""
    import numpy as np
    import pyarrow as pa

    from pipeline.engine.budget import give_back, own_rss

    n = 400_000
    table = pa.table({"g": pa.array(np.arange(n) % 977),
                      "v": pa.array([str(i).encode() * 3 for i in range(n)], pa.binary())})
    base = own_rss()
    distinct = table.group_by(["g", "v"], use_threads=False).aggregate([])
    assert distinct.num_rows == n
    del distinct
    kept = own_rss() - base  # freed, yet still held by the process (about 67 MB)
    give_back()
    assert own_rss() - base < max(kept // 4, 4 << 20), (kept, own_rss() - base)


def test_every_task_gives_back_what_it_freed_before_the_next(tmp_path, monkeypatch):
    """A worker gives back its memory after each task (map or reduce), so a later
    phase starts from the process's base, not from the peak of the one before."""
    import main
    from pipeline.engine import tasks

    order = []
    real_give_back = tasks.give_back
    monkeypatch.setattr(tasks, "_do_map", lambda *a, _f=tasks._do_map: (
        order.append("map"), _f(*a))[1])
    monkeypatch.setattr(tasks, "_do_reduce", lambda *a, _f=tasks._do_reduce: (
        order.append("reduce"), _f(*a))[1])
    monkeypatch.setattr(tasks, "give_back", lambda: (order.append("give"),
                                                     real_give_back())[1])
    code = main.main(["-c", os.path.join(ROOT, "configs", "aggregate.yaml"), "-f",
                      os.path.join(ROOT, "tests", "data", "sample", "input.jsonl"),
                      "--state-dir", str(tmp_path / "st"), "-w", "1", "-q"])
    assert code == 0
    assert order.count("map") >= 2 and order.count("reduce") >= 3, order
    assert order == [x for step in order if step != "give" for x in (step, "give")]


def test_the_budget_counts_duckdb_at_work():
    """An expression's module is warmed up when the budget measures a process: DuckDB's
    first query allocates about 30 MB more than opening it, in every process."""
    import subprocess
    import sys
    code = ("from pipeline.engine.budget import own_rss; a = own_rss(['pyarrow']); "
            "import stages.expression as e; b = own_rss(['stages.expression']); "
            "print(getattr(e._local, 'con', None) is not None, (b - a) >> 20)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    warmed, grew = out.stdout.split()
    assert warmed == "True" and int(grew) >= 20, out.stdout + out.stderr
