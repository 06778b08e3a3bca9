"""Checkpoints: atomic, incremental, verified; resume reads only what is new."""
from __future__ import annotations

import os
import subprocess
import sys
from array import array

import pytest

import main
from conftest import ROOT, generate
from pipeline.stage import AppendOnly
from pipeline.state.checkpoint import CheckpointStore
from reference import summarize

CONFIG = """\
pipeline:
  - file-input: {path: x, block_size: 2048}
  - json-decode
  - site-state-reducer
  - sorted-stdout-output
checkpoint: {every_records: 200}
"""


@pytest.fixture
def job(tmp_path, capsys):
    """Run the summary in-process with small blocks and frequent checkpoints."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    log = generate(tmp_path / "log.jsonl", 3000, 21, "--mixed-site-ids", "--bad-rate", "0.01",
                   "--conflicting-dups", "--sites", "15")

    def run(*extra: str):
        rc = main.main(["-c", str(cfg), "-f", str(log), "--state-dir",
                        str(tmp_path / "state"), *extra])
        cap = capsys.readouterr()
        return rc, cap.out, cap.err

    run.log, run.cfg, run.state = log, cfg, tmp_path / "state"
    run.dead = tmp_path / "state" / "dead_letter.jsonl"
    # the checkpoints of the run's one map task (the input is smaller than one range)
    run.slot = lambda: next(p for p in (tmp_path / "state").iterdir() if p.is_dir()) / "s0" / "m00000"
    return run


def crash_after(monkeypatch, batches: int) -> None:
    """Make the input die (like a kill) after yielding `batches` batches."""
    from stages.file_input import FileInput
    real = FileInput.read

    def read(self):
        for i, batch in enumerate(real(self)):
            if i == batches:
                raise KeyboardInterrupt
            yield batch
    monkeypatch.setattr(FileInput, "read", read)


def test_resume_after_crash_is_exact_and_reads_only_the_rest(job, monkeypatch):
    """A crashed run resumes after its last checkpoint; output and dead letters exact."""
    rc, out, err = job("--no-checkpoint")
    expected, expected_dead = out, job.dead.read_bytes()
    assert out == summarize(job.log.read_bytes())
    with monkeypatch.context() as m:
        crash_after(m, 30)
        rc, out, err = job()
        assert rc == 130 and out == ""
    rc, out, err = job()
    assert rc == 0 and out == expected
    assert job.dead.read_bytes() == expected_dead
    notice = [x for x in err.splitlines() if "resumed at line" in x][0]
    resumed_line = int(notice.split("resumed at line ")[1].split(" ")[0].replace(",", ""))
    assert 1 < resumed_line < 3000
    assert f"3,000 lines read ({3001 - resumed_line:,} this run)" in err


def test_rerun_after_finish_reads_nothing(job):
    """A finished run, rerun unchanged, prints the same summary without reading."""
    _, first, _ = job()
    rc, again, err = job()
    assert again == first
    assert "(already complete: nothing new to read)" in err
    assert "3,000 lines read (0 this run)" in err


def test_appended_input_reads_only_new_lines(job):
    """If the input grew, only the appended lines are processed."""
    job()
    extra = generate(job.log.parent / "more.jsonl", 500, 99, "--sites", "3").read_bytes()
    with open(job.log, "ab") as fh:
        fh.write(extra)
    rc, out, err = job()
    assert out == summarize(job.log.read_bytes())
    assert "3,500 lines read (500 this run)" in err
    _, fresh_out, _ = job("--no-checkpoint")
    assert out == fresh_out


def test_replaced_input_starts_over(job):
    """A replaced input (new file, other content) starts over with a notice."""
    job()
    new = generate(job.log.parent / "new.jsonl", 1000, 5)
    os.replace(new, job.log)
    rc, out, err = job()
    assert "sluice: the input file was replaced since the last checkpoint; starting over" in err
    assert out == summarize(job.log.read_bytes())
    assert "1,000 lines read," in err


def test_truncated_input_starts_over(job):
    """Input truncated in place starts over with a notice."""
    job()
    data = job.log.read_bytes()
    with open(job.log, "r+b") as fh:
        fh.truncate(data.index(b"\n", len(data) // 2) + 1)
    rc, out, err = job()
    assert "sluice: the input file was truncated since the last checkpoint; starting over" in err
    assert out == summarize(job.log.read_bytes())


def test_last_line_without_newline_that_grows_starts_over(tmp_path, capsys):
    """A final line read without its \\n that is then extended is a changed input."""
    log = tmp_path / "l.jsonl"
    log.write_bytes(b'{"id":"a","from":"v","type":"message","site_id":"1","timestamp":1}')
    argv = ["-c", str(ROOT / "configs" / "summary.yaml"), "-f", str(log), "--state-dir",
            str(tmp_path / "s")]
    main.main(argv)
    with open(log, "ab") as fh:
        fh.write(b'\n{"id":"b","from":"v","type":"message","site_id":"1","timestamp":2}\n')
    capsys.readouterr()
    main.main(argv)
    cap = capsys.readouterr()
    assert "the input's last line, read without its newline, has grown" in cap.err
    assert cap.out == "1,messages=0,emails=2,operators=0,visitors=1\n"


def test_config_change_starts_over(job):
    """A changed config starts over with a notice."""
    job()
    job.cfg.write_text(CONFIG.replace("block_size: 2048", "block_size: 4096"))
    rc, out, err = job()
    assert "sluice: the config changed since the last checkpoint; starting over" in err
    assert "(0 this run)" not in err


def test_fresh_discards_state(job):
    """--fresh discards the saved state and reads everything again."""
    job()
    rc, out, err = job("--fresh")
    assert "sluice: --fresh: discarded the saved state" in err
    assert "resumed" not in err
    assert "3,000 lines read;" not in err and "3,000 lines read," in err


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "empty"])
def test_damaged_newest_checkpoint_falls_back_to_previous(job, monkeypatch, damage):
    """A corrupt, truncated or empty newest checkpoint falls back to the one before."""
    rc, expected, _ = job("--no-checkpoint")
    expected_dead = job.dead.read_bytes()
    with monkeypatch.context() as m:
        crash_after(m, 40)
        job()
    newest = sorted(job.slot().glob("checkpoint-*"))[-1]
    data = newest.read_bytes()
    if damage == "corrupt":
        data = data[:-10] + bytes(b ^ 0xFF for b in data[-10:])
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data = b""
    newest.write_bytes(data)
    rc, out, err = job()
    assert rc == 0 and out == expected
    assert job.dead.read_bytes() == expected_dead
    assert f"checkpoint {newest} is unusable" in err
    assert "resumed at line" in err


def test_all_checkpoints_damaged_starts_fresh(job, monkeypatch):
    """With no usable checkpoint the run starts over; it never crashes."""
    rc, expected, _ = job("--no-checkpoint")
    with monkeypatch.context() as m:
        crash_after(m, 40)
        job()
    for f in job.slot().glob("checkpoint-*"):
        f.write_bytes(b"garbage")
    rc, out, err = job()
    assert rc == 0 and out == expected
    assert "resumed" not in err and err.count("is unusable (bad header)") == 2


def test_missing_spill_file_starts_over(job, monkeypatch):
    """A checkpoint whose spilled rows are gone is unusable: start over, never a crash."""
    rc, expected, _ = job("--no-checkpoint")
    with monkeypatch.context() as m:
        crash_after(m, 40)
        job()
    (job.slot() / "spill.dat").unlink()
    rc, out, err = job()
    assert rc == 0 and out == expected
    assert f"the checkpoint in {job.slot()} is unusable ({job.slot()}/spill.dat has 0 bytes; " in err
    assert "starting over" in err and "resumed" not in err


def test_truncated_spill_file_starts_over(job, monkeypatch):
    """Spilled rows cut short of what the checkpoint recorded are never read as valid."""
    rc, expected, _ = job("--no-checkpoint")
    with monkeypatch.context() as m:
        crash_after(m, 40)
        job()
    spill = job.slot() / "spill.dat"
    with open(spill, "r+b") as fh:
        fh.truncate(spill.stat().st_size // 2)
    rc, out, err = job()
    assert rc == 0 and out == expected
    assert "spill.dat has" in err and "starting over" in err


def test_crash_between_temp_write_and_rename(job, monkeypatch):
    """A kill after the temp manifest is written but before the rename loses nothing."""
    rc, expected, _ = job("--no-checkpoint")
    expected_dead = job.dead.read_bytes()
    import pipeline.state.checkpoint as ckmod
    calls = []
    real = os.replace

    def replace(a, b):
        calls.append(a)
        if len(calls) == 5:
            raise KeyboardInterrupt  # as if killed right here
        return real(a, b)
    with monkeypatch.context() as m:
        m.setattr(ckmod.os, "replace", replace)
        rc, out, err = job()
    assert rc == 130
    assert list(job.slot().glob("*.tmp"))
    rc, out, err = job()
    assert out == expected and job.dead.read_bytes() == expected_dead
    assert "resumed at line" in err
    assert not list(job.slot().glob("*.tmp"))


def test_store_writes_only_new_tails_and_compacts(tmp_path):
    """AppendOnly values are saved as deltas; compaction bounds the segment count."""
    store = CheckpointStore(str(tmp_path), compact_every=4)
    col, names = array("q"), []
    for i in range(10):
        col.extend(range(i * 1000, (i + 1) * 1000))
        names.append(f"n{i}")
        before = store.bytes_written
        store.save({"col": AppendOnly(col), "names": AppendOnly(names), "small": i})
        written = store.bytes_written - before
        assert written < 8000 + 2000 or i % 4 == 0  # a delta, except at compaction
    segs = sorted(p.name for p in tmp_path.glob("seg-*"))
    assert len(segs) <= 8
    loaded = CheckpointStore(str(tmp_path)).load(print)
    assert loaded == {"col": col, "names": names, "small": 9}


def test_store_refuses_shrinking_append_only(tmp_path):
    """An AppendOnly that shrinks is a stage bug, reported as such."""
    store = CheckpointStore(str(tmp_path))
    store.save({"a": AppendOnly([1, 2, 3])})
    with pytest.raises(ValueError, match="AppendOnly '/a' shrank from 3 to 1"):
        store.save({"a": AppendOnly([1])})


def test_stress_kill_small():
    """stress_kill.py: ~10 SIGKILLs at random moments, every output exact."""
    p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "stress_kill.py"),
                        "--lines", "20000", "--kills", "10", "--seed", "4",
                        "--max-seconds", "240"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 failures" in p.stdout
    assert "10 kills" in p.stdout
