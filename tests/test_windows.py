"""Event-time windows on aggregate and count: batch runs checked against a plain-Python
reference on generated data (tumbling and hopping, 1 and 2 workers), the boundaries,
records without a time, and followed runs (the watermark, late records, SIGTERM and
kill -9 mid-stream: every window emitted once, none lost)."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, cli
from test_follow import wait_for
from pipeline import Batch
from pipeline.testing import check_resume
from stages.windows import Window, assign, parse_window

MAIN = str(ROOT / "main.py")
T0 = 1_700_000_000


def events(n, seed, spread=900, jitter=40, statuses=("200", "404", "500", "301")):
    """Access-log-like records, roughly in time order with some out of order."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = T0 + i * spread / n + rng.uniform(-jitter, jitter)
        t = round(t) if rng.random() < 0.5 else round(t, 3)
        out.append({"ts": t, "status": rng.choice(statuses), "bytes": rng.randint(0, 5000),
                    "ip": f"10.0.{rng.randint(0, 3)}.{rng.randint(0, 40)}"})
    return out


def windows_of(t, size, slide):
    """The starts of the windows holding t, the plain way."""
    k = math.floor(t / slide)
    out = []
    while k * slide + size > t:
        if k * slide <= t:
            out.append(k * slide)
        k -= 1
    return out


def reference_aggregate(records, size, slide):
    groups = {}
    for r in records:
        for s in windows_of(r["ts"], size, slide):
            g = groups.setdefault((s, r["status"]), {"n": 0, "bytes": 0, "ips": set()})
            g["n"] += 1
            g["bytes"] += r["bytes"]
            g["ips"].add(r["ip"])
    return [{"window_start": s, "window_end": s + size, "status": st, "requests": g["n"],
             "bytes": g["bytes"], "clients": len(g["ips"])}
            for (s, st), g in sorted(groups.items())]


def write_log(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def config(tmp_path, stage, out="-", output="jsonl-output", extra=""):
    path = tmp_path / "windows.yaml"
    path.write_text(f"""pipeline:
  - file-input: {{path: in.jsonl}}
  - json-decode: {{schema: object}}
{stage}
  - {output}: {{path: "{out}"{extra}}}
""")
    return path


AGGREGATE = """  - aggregate:
      by: [status]
      window: {{field: ts, size: {size}, slide: {slide}{lateness}}}
      metrics:
        requests: count
        bytes: sum(bytes)
        clients: count_distinct(ip)"""


def aggregate_stage(size, slide, lateness=""):
    return AGGREGATE.format(size=size, slide=slide,
                            lateness=f", allowed_lateness: {lateness}" if lateness else "")


def run(cfg, log, *extra, tmp_path, env=None):
    done = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / "s"), *extra,
               env=env)
    assert done.returncode == 0, done.stderr
    return done


# -- assigning times to windows -----------------------------------------------------------
def test_a_record_exactly_at_a_window_end_belongs_to_the_next_window():
    win = Window("ts", *map(__import__("fractions").Fraction, (60, 60, 0)))
    rows, starts = assign(np.array([59.999, 60.0, 119.999999, 120.0, -0.5, 0.0, -0.0]), win)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert starts.tolist() == [0, 60, 60, 120, -60, 0, 0]
    assert not any(math.copysign(1, s) < 0 for s in starts if s == 0)  # no -0.0 window


def test_hopping_windows_give_each_record_every_window_that_holds_it():
    win = parse_window({"field": "ts", "size": "3m", "slide": "1m"})
    rng = np.random.default_rng(3)
    times = np.concatenate([rng.uniform(-1000, 1000, 500), [0.0, 60.0, 179.999, 180.0]])
    rows, starts = assign(times, win)
    got = {}
    for r, s in zip(rows.tolist(), starts.tolist()):
        got.setdefault(r, []).append(s)
    for r, t in enumerate(times.tolist()):
        assert sorted(got[r]) == sorted(windows_of(t, 180, 60)), t
    assert sorted(got[len(times) - 1]) == [60, 120, 180]  # 180.0: not in [0, 180)


@pytest.mark.parametrize("value, problem", [
    ({"field": "ts"}, "`size` is required, as in size: 1m"),
    ({"field": "ts", "size": "1m", "slide": "2m"},
     "`slide` ('2m') must be at most `size` ('1m'): records between windows would be lost"),
    ({"field": "ts", "size": "1 minute"},
     "`size` must be a duration: seconds, or a number with ms, s, m, h or d (30s, 5m, 1h); "
     "got '1 minute'"),
    ({"field": "ts", "size": "0.5ms"},
     "`size` must be a whole number of milliseconds, 0 or more; got '0.5ms'"),
    ({"field": "ts", "size": 0}, "`size` and `slide` must be more than 0"),
    ({"field": "ts", "gap": "5m"},
     "session windows (`gap`) are not supported; use `size` (and `slide` for hopping "
     "windows)"),
    ({"field": "ts", "size": "1m", "lateness": "5s"},
     "unknown key 'lateness'; the keys are field, size, slide, allowed_lateness"),
    ({"size": "1m"}, "`field` must name the event-time field (epoch seconds); got None"),
    ({"field": "ts", "size": "1d", "slide": "1s"},
     "`size` / `slide` must be at most 1000 windows per record"),
])
def test_a_wrong_window_is_a_config_error_that_says_what(tmp_path, value, problem):
    stage = "  - count:\n      field: status\n      window: " + json.dumps(value)
    cfg = config(tmp_path, stage, output="csv-output",
                 extra=", columns: [a, b, c, d]")
    done = cli("-c", str(cfg), "-f", str(write_log(tmp_path / "in.jsonl", [])))
    assert done.returncode == 2
    assert done.stderr.strip() == (f"sluice: error: {cfg}:6: stage 'count': option "
                                   f"'window' {problem}")


def test_window_fields_may_not_collide_with_the_groups(tmp_path):
    stage = ("  - aggregate:\n      by: [window_start]\n      window: {field: ts, size: 60}\n"
             "      metrics: {n: count}")
    done = cli("-c", str(config(tmp_path, stage)), "-f",
               str(write_log(tmp_path / "in.jsonl", [])))
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "stage 'aggregate': 'window_start' is also a window field's name (window_start, "
        "window_end); output fields must differ")


# -- batch runs ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed, size, slide", [(1, 60, 60), (2, 180, 60), (3, 90, 30)])
def test_batch_windows_match_the_reference_with_one_and_two_workers(tmp_path, seed, size,
                                                                     slide):
    records = events(3000, seed)
    log = write_log(tmp_path / "in.jsonl", records)
    want = reference_aggregate(records, size, slide)
    cfg = config(tmp_path, aggregate_stage(size, slide), out=str(tmp_path / "out.jsonl"))
    for workers, squeeze in (("1", ""), ("2", ""), ("2", "16")):  # 16: KiB a bucket
        run(cfg, log, "-w", workers, "--fresh", "--memory-mb", "1024", tmp_path=tmp_path,
            env={"SLUICE_TEST_BUCKET_KB": squeeze})
        got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert got == want, (workers, squeeze)
        tasks = len(list((tmp_path / "s").glob("*/s0/m*")))
        assert workers == "1" or tasks >= 2  # split into map tasks
    assert len(want) > 3 * 900 / slide  # every window, every status


def test_count_windows_emit_window_then_value_rows(tmp_path):
    records = events(2000, 7) + [{"ts": T0 + 1, "status": 404}, {"ts": T0 + 2}]
    log = write_log(tmp_path / "in.jsonl", records)
    stage = "  - count:\n      field: status\n      window: {field: ts, size: 2m, slide: 1m}"
    cfg = config(tmp_path, stage, output="csv-output", extra=", columns: [ws, we, status, n]")
    out = run(cfg, log, tmp_path=tmp_path).stdout.splitlines()
    counts = {}
    for r in records:
        for s in windows_of(r["ts"], 120, 60):
            key = (s, str(r["status"]) if "status" in r else "(missing)")
            counts[key] = counts.get(key, 0) + 1
    assert out[0] == "ws,we,status,n"
    assert out[1:] == [f"{s},{s + 120},{v},{n}" for (s, v), n in sorted(counts.items())]


def test_fractional_windows_have_float_bounds(tmp_path):
    log = write_log(tmp_path / "in.jsonl", [{"ts": 0.2, "status": "a"},
                                            {"ts": 0.5, "status": "a"},
                                            {"ts": 1.25, "status": "a"}])
    stage = "  - count:\n      field: status\n      window: {field: ts, size: 500ms}"
    cfg = config(tmp_path, stage, output="csv-output", extra=", columns: [ws, we, status, n]")
    assert run(cfg, log, tmp_path=tmp_path).stdout.splitlines()[1:] == [
        "0.0,0.5,a,1", "0.5,1.0,a,1", "1.0,1.5,a,1"]


def test_records_without_an_event_time_go_to_the_dead_letters_or_are_dropped(tmp_path):
    records = [{"ts": T0, "status": "200", "bytes": 1, "ip": "a"},
               {"status": "200", "bytes": 1, "ip": "a"},
               {"ts": "2024-01-01T00:00:00Z", "status": "200", "bytes": 1, "ip": "a"},
               {"ts": True, "status": "200", "bytes": 1, "ip": "a"},
               {"ts": None, "status": "200", "bytes": 1, "ip": "a"},
               {"ts": T0 + 30, "status": "200", "bytes": "x", "ip": "a"}]
    log = write_log(tmp_path / "in.jsonl", records)
    cfg = config(tmp_path, aggregate_stage("1m", "1m"))
    done = run(cfg, log, tmp_path=tmp_path)
    assert done.stdout == ('{"window_start":1699999980,"window_end":1700000040,"status":"200",'
                           '"requests":1,"bytes":1,"clients":1}\n')
    dead = [json.loads(line) for line in (tmp_path / "s" / "dead_letter.jsonl").read_text()
            .splitlines()]
    assert [(d["line"], d["reason"]) for d in dead] == [
        (2, "field 'ts' is missing: a window needs the record's event time"),
        (3, "field 'ts': a window needs the event time in epoch seconds (a number), got "
            "'2024-01-01T00:00:00Z'; a `date` stage before it makes one"),
        (4, "field 'ts': a window needs the event time in epoch seconds (a number), got "
            "true; a `date` stage before it makes one"),
        (5, "field 'ts' is missing: a window needs the record's event time"),
        (6, "field 'bytes': sum(bytes) needs a number, got 'x'")]
    text = cfg.read_text().replace("window:", "on_failure: drop\n      window:")
    cfg.write_text(text)
    done = run(cfg, log, "--fresh", tmp_path=tmp_path)
    assert "5 dropped on failure" in done.stderr


@pytest.mark.parametrize("following", [False, True])
def test_windowed_stages_resume_after_any_batch(tmp_path, following):
    """Restored after any batch (with the work of the next two lost), count and
    aggregate give what a straight run gives; followed, only the closed windows."""
    from stages.aggregate import Aggregate
    from stages.count import Count
    rows = [(5, "a"), (65, "b"), (70, "a"), (1, "a"), (130, "b"), (61, "a"), (200, "a"),
            (10, "b"), (260, "a"), (330, "b"), (125, "a")]
    batches = [Batch([{"ts": t, "status": s, "n": i} for i, (t, s) in
                      enumerate(rows[k:k + 2], start=k)], first_line=k + 1)
               for k in range(0, len(rows), 2)]
    window = {"field": "ts", "size": 120, "slide": 60, "allowed_lateness": 10}
    counted = check_resume(lambda: Count(field="status", window=window), batches,
                           tmp_path / "c", following=following)
    aggregated = check_resume(lambda: Aggregate(
        by=["status"], metrics={"n": "count", "first": "first(n)", "top": "top(n, 1)"},
        window=window), batches, tmp_path / "a", following=following)
    counted.records = [r for batch in counted.records for r in batch]
    aggregated.records = [r for batch in aggregated.records for r in batch]
    if not following:
        assert counted.records[:4] == [(-60, 60, "a", 2), (-60, 60, "b", 1), (0, 120, "a", 4),
                                       (0, 120, "b", 2)]
        assert len(counted.records) == 12 and counted.rejected == []
    else:  # watermark 320: windows ending by 300 are emitted; (10, b) and (125, a) late
        assert counted.records[-1] == (180, 300, "a", 2)
        assert len(counted.records) == 8 and counted.records[0] == (-60, 60, "a", 1)
        assert [r[1] for r in counted.rejected] == [
            "late: event time 10 is more than 10s (allowed_lateness) before the latest one "
            "seen, 200: its window was already emitted",
            "late: event time 125 is more than 10s (allowed_lateness) before the latest one "
            "seen, 330: its window was already emitted"]
    assert [(r["window_start"], r["status"], r["n"]) for r in aggregated.records] == [
        (r[0], r[2], r[3]) for r in counted.records]
    assert aggregated.records[0] == {"window_start": -60, "window_end": 60, "status": "a",
                                     "n": counted.records[0][3], "first": 0,
                                     "top": [{"value": 0, "count": 1}]}


def test_out_of_order_within_the_lateness_counts_and_beyond_it_is_late():
    """Followed, size 60 s, allowed_lateness 30 s: after 100, a record at 95 (its window
    ends at 120, past the watermark 70) counts; after 185 (watermark 155), one at 100 is
    late; one at 130 (window [120, 180)) still counts."""
    from stages.count import Count
    times = [100, 130, 95, 185, 100, 130, 250]
    batches = [Batch([{"ts": t, "status": "x"}], first_line=i + 1, first_offset=0)
               for i, t in enumerate(times)]
    out = check_resume(lambda: Count(field="status", window={
        "field": "ts", "size": 60, "allowed_lateness": 30}), batches, following=True)
    assert [r for batch in out.records for r in batch] == [(60, 120, "x", 2),
                                                           (120, 180, "x", 2)]
    assert [(r[2]["at"], r[1].split(":")[0]) for r in out.rejected] == [((5, 0), "late")]


# -- followed runs ------------------------------------------------------------------------
def follow_reference(records, size, slide, lateness):
    """The followed answer, the plain way: record by record in file order, a record
    is late when every window holding it ended at or before the watermark (the
    largest time before it, less the lateness); the emitted windows are those that
    end at or before the last watermark."""
    latest = -math.inf
    kept, late = [], []
    for i, r in enumerate(records):
        wins = windows_of(r["ts"], size, slide)
        if all(s + size <= latest - lateness for s in wins):
            late.append(i + 1)
        else:
            kept.append({**r, "_wins": [s for s in wins if s + size > latest - lateness]})
        latest = max(latest, r["ts"])
    groups = {}
    for r in kept:
        for s in r["_wins"]:
            g = groups.setdefault((s, r["status"]), {"n": 0, "bytes": 0, "ips": set()})
            g["n"] += 1
            g["bytes"] += r["bytes"]
            g["ips"].add(r["ip"])
    rows = [{"window_start": s, "window_end": s + size, "status": st, "requests": g["n"],
             "bytes": g["bytes"], "clients": len(g["ips"])}
            for (s, st), g in sorted(groups.items()) if s + size <= latest - lateness]
    return rows, late


def follow(cfg, log, state, *extra):
    return subprocess.Popen([sys.executable, MAIN, "-c", str(cfg), "-f", str(log),
                             "--state-dir", str(state), "--follow", "--emit-every", "0.2",
                             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def read_rows(path):
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def follow_records(seed):
    """Out of order within 20 s mostly, and now and then a record minutes late."""
    records = events(2400, seed, spread=1200, jitter=20)
    rng = random.Random(seed)
    for i in rng.sample(range(600, 2400), 30):
        records[i] = {**records[i], "ts": records[i]["ts"] - rng.choice([90, 200, 600])}
    return records


def chunks(records, n):
    text = [json.dumps(r) + "\n" for r in records]
    step = math.ceil(len(text) / n)
    return ["".join(text[i:i + step]) for i in range(0, len(text), step)]


def check_emitted(out, want):
    """Each window in the file once, and every row as in the final answer."""
    rows = read_rows(out)
    keys = [(r["window_start"], r["status"]) for r in rows]
    assert len(keys) == len(set(keys)), "a window emitted twice"
    assert rows == want[:len(rows)]


@pytest.mark.parametrize("size, slide", [(60, 60), (120, 60)])
def test_a_followed_run_emits_each_window_once_when_the_watermark_passes(tmp_path, size,
                                                                          slide):
    records = follow_records(5)
    want, late = follow_reference(records, size, slide, 30)
    log, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    log.write_text("")
    cfg = config(tmp_path, aggregate_stage(size, slide, "30s"), out=str(out))
    proc = follow(cfg, log, tmp_path / "s")
    for chunk in chunks(records, 12):
        with open(log, "a") as fh:
            fh.write(chunk)
        time.sleep(0.25)
        check_emitted(out, want)
    assert wait_for(lambda: read_rows(out) == want), (len(read_rows(out)), len(want))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert read_rows(out) == want  # SIGTERM emitted nothing early
    dead = [json.loads(line) for line in (tmp_path / "s" / "dead_letter.jsonl").read_text()
            .splitlines()]
    assert [d["line"] for d in dead] == late and len(late) >= 20
    assert all(d["reason"].startswith("late: event time ") for d in dead)
    windows = os.listdir(next((tmp_path / "s").glob("*/s0/m00000")) / "windows")
    assert len(windows) <= math.ceil(size / slide) + 2  # only open windows are kept


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_killed_or_stopped_mid_stream_no_window_is_emitted_twice_or_lost(tmp_path, kill):
    records = follow_records(9)
    want, late = follow_reference(records, 120, 60, 30)
    log, out, state = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "s"
    log.write_text("")
    cfg = config(tmp_path, aggregate_stage(120, 60, "30s"), out=str(out))
    parts = chunks(records, 15)
    rng = random.Random(kill)
    proc = follow(cfg, log, state, "--checkpoint-every", "150")
    began = time.monotonic()
    said = []
    for i, chunk in enumerate(parts):
        with open(log, "a") as fh:
            fh.write(chunk)
        time.sleep(rng.uniform(0.05, 0.4))
        check_emitted(out, want)
        if i % 5 == 2:  # stop it mid-stream, and start it again
            time.sleep(max(0.0, began + 1.5 - time.monotonic()))  # its handlers are set
            proc.send_signal(kill)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == (-9 if kill == signal.SIGKILL else 0), err
            said.append(err.decode())
            check_emitted(out, want)
            proc = follow(cfg, log, state, "--checkpoint-every", "150")
            began = time.monotonic()
    assert wait_for(lambda: read_rows(out) == want), (len(read_rows(out)), len(want))
    time.sleep(max(0.0, began + 1.5 - time.monotonic()))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    said.append(err.decode())
    assert len(said) == 4 and "resumed at line" in said[-1], said
    if kill == signal.SIGTERM:  # (a killed run says nothing)
        assert all("resumed at line" in text for text in said[1:]), said
    assert read_rows(out) == want
    dead = [json.loads(line) for line in (state / "dead_letter.jsonl").read_text()
            .splitlines()]
    assert [d["line"] for d in dead] == late


# -- the shipped access-log job ------------------------------------------------------------
def access_reference(path):
    """configs/access_log.yaml's answer the plain way: a regular expression of the
    combined format, strptime, and dicts."""
    import re
    from datetime import datetime
    line_re = re.compile(r'^(\S+) \S+ \S+ \[([^\]]+)\] "[^"]*" (\d{3}) (\d+|-) "')
    groups = {}
    for line in path.read_text().splitlines():
        m = line_re.match(line)
        if m is None:
            continue
        ip, when, status, size = m.groups()
        t = datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").timestamp()
        g = groups.setdefault((int(t // 60 * 60), status), [0, None, set()])
        g[0] += 1
        if size != "-":
            g[1] = (g[1] or 0) + int(size)
        g[2].add(ip)
    return ["window_start,window_end,response,requests,bytes,clients"] + [
        f"{s},{s + 60},{st},{n},{'' if b is None else b},{len(ips)}"
        for (s, st), (n, b, ips) in sorted(groups.items())]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_access_log_job_gives_its_expected_output(tmp_path, workers):
    access = ROOT / "tests" / "data" / "access"
    expected = (access / "access_log.expected.csv").read_text()
    assert expected.splitlines() == access_reference(access / "sample.log")
    done = cli("-c", str(ROOT / "configs" / "access_log.yaml"), "-w", workers,
               "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
    assert len(expected.splitlines()) > 150
    assert done.stderr.endswith("1,200 lines read, 1,197 records; rejected 3 of 1,200 lines "
                                f"(reasons in {tmp_path / 's' / 'dead_letter.jsonl'})\n")
