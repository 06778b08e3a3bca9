"""Faults of the machine, not the data: a full disk, I/O errors, paths that cannot be
used, a reader that goes away, state another user could have written.

Every run here asserts the exact message and exit code, and that the eventual output is
exact: after a failed checkpoint it equals an uninterrupted run's; after a stop, the
rerun resumes and finishes it. Nothing needs root: faults are injected (in this
process, or through a `sitecustomize` in the subprocesses), files are kept small with
RLIMIT_FSIZE, and when the tests do run as root the subprocesses that need permission
checks drop the capabilities that bypass them (or those tests are skipped).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import main
from conftest import ROOT
from pipeline.stage import AppendOnly
from pipeline.state.checkpoint import CheckpointStore, read_checked_json
from pipeline.errors import CheckpointFailed, UntrustedState
from pipeline.state.spill import SpillReader, SpillWriter

LINE = 128          # every input line is exactly this long (newline included) ...
BLOCK = 100 * LINE  # ... so a block is 100 lines, and checkpoint k is at_(k)
RESUME = ("nothing is lost: once that is fixed, rerun the same command to resume from "
          "the last good checkpoint")
RETRY = "carrying on, and trying again at the next checkpoint"
ENOSPC, EIO = os.strerror(errno.ENOSPC), os.strerror(errno.EIO)


def at_(k: int) -> str:
    """Where the input is after k blocks, as Sluice says it."""
    return f"line {100 * k + 1:,} (byte {100 * k * LINE:,})"


def fixed(obj: dict) -> bytes:
    """One compact JSON line padded to exactly LINE bytes."""
    obj = {**obj, "pad": ""}
    text = json.dumps(obj, separators=(",", ":"))
    obj["pad"] = "x" * (LINE - 1 - len(text))
    text = json.dumps(obj, separators=(",", ":"))
    assert len(text) == LINE - 1
    return text.encode() + b"\n"


def events(n: int, bad: set[int] = frozenset()) -> bytes:
    """n summary events (messages and statuses over 5 sites); lines in `bad` (1-based)
    are not JSON."""
    out = []
    for i in range(1, n + 1):
        if i in bad:
            out.append(b"not json " + b"#" * (LINE - 10) + b"\n")
        elif i % 10 == 0:
            out.append(fixed({"id": f"s{i}", "from": f"op{i % 3}", "type": "status",
                              "site_id": str(i % 5), "timestamp": i,
                              "data": {"status": "online" if i % 20 else "offline"}}))
        else:
            out.append(fixed({"id": f"m{i}", "from": f"v{i % 7}", "type": "message",
                              "site_id": str(i % 5), "timestamp": i, "data": {"message": "hi"}}))
    return b"".join(out)


def copy_config(tmp: Path, data: bytes, *, out: str, every: int = 100, schema: str = "object",
                middle: str = "") -> tuple[Path, Path]:
    """input -> json-decode -> [middle] -> output, checkpointing every `every` records."""
    src = tmp / "in.jsonl"
    src.write_bytes(data)
    output = (f"  - jsonl-output: {{path: {out!r}}}\n" if out.endswith(".jsonl") or out == "-"
              else f"  - {out}\n")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(f"pipeline:\n  - file-input: {{path: {str(src)!r}, block_size: {BLOCK}}}\n"
                   f"  - json-decode: {{schema: {schema}}}\n{middle}{output}"
                   f"checkpoint: {{every_records: {every}}}\n")
    return cfg, src


def slot_of(state: Path) -> Path:
    return next(p for p in state.iterdir() if p.is_dir())


@pytest.fixture
def run(capsys):
    """main.main in this process: (exit code, stdout, stderr)."""
    def _run(*argv: str) -> tuple[int, str, str]:
        rc = main.main([str(a) for a in argv])
        cap = capsys.readouterr()
        return rc, cap.out, cap.err
    return _run


def warnings(err: str) -> list[str]:
    return [x for x in err.splitlines() if x.startswith("sluice: warning:")]


# -- subprocesses ------------------------------------------------------------------------
def _as_a_user() -> None:
    """preexec_fn: as root, drop the capabilities that bypass file permissions (from the
    bounding set, so they stay dropped across exec and in workers)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def permissions_bind() -> None:
    """Skip the test unless file permissions bind the subprocesses it starts."""
    if os.geteuid() == 0:
        try:
            subprocess.run([sys.executable, "-c", ""], preexec_fn=_as_a_user, check=True)
        except (subprocess.SubprocessError, OSError):
            pytest.skip("root, and cannot drop the capabilities that bypass permissions")


def sluice(*argv, fsize: int | None = None, env: dict | None = None, as_user: bool = False,
           timeout: float = 60) -> subprocess.CompletedProcess:
    """`python main.py ARGV` as a user would run it (bytes out); `as_user`: with file
    permissions binding even when the tests run as root."""
    def preexec() -> None:
        if as_user:
            _as_a_user()
        if fsize is not None:  # every file this run (and its workers) writes stays small
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, argv)],
                          capture_output=True, timeout=timeout, preexec_fn=preexec,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


SITECUSTOMIZE = '''
import errno, os
if os.environ.get("SLUICE_TEST_FAULT") == "manifest":
    from pipeline.state.checkpoint import CheckpointStore
    real = CheckpointStore._write_durably
    def _write_durably(self, path, pieces):
        if path.endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, path, pieces)
    CheckpointStore._write_durably = _write_durably
'''


# -- a failed checkpoint never fails the run ---------------------------------------------
def inject(monkeypatch, point: str, fail: set[int], err: int) -> None:
    """Make the checkpoint store's `point` write raise OSError(err) on the calls in `fail`
    (1-based): the segment, the manifest's temp file, its rename, the directory fsync."""
    import pipeline.state.checkpoint as ck
    calls = [0]

    def hit() -> None:
        calls[0] += 1
        if calls[0] in fail:
            raise OSError(err, os.strerror(err))
    real_write, real_replace = ck.CheckpointStore._write_durably, os.replace
    real_sync = ck.fsync_path

    def write(self, path, pieces):
        if ((point == "segment" and "/seg-" in path)
                or (point == "manifest" and path.endswith(".tmp"))):
            hit()
        return real_write(self, path, pieces)

    def replace(a, b):
        if point == "rename" and os.path.basename(b).startswith("checkpoint-"):
            hit()
        return real_replace(a, b)

    def sync(path):
        if point == "dirsync":
            hit()
        return real_sync(path)
    monkeypatch.setattr(ck.CheckpointStore, "_write_durably", write)
    monkeypatch.setattr(ck.os, "replace", replace)
    monkeypatch.setattr(ck, "fsync_path", sync)


@pytest.mark.parametrize("point, err, what", [
    ("manifest", errno.ENOSPC, "cannot write checkpoint file {slot}/checkpoint-00000002.tmp"),
    ("rename", errno.EIO, "cannot rename checkpoint file {slot}/checkpoint-00000002.tmp"),
    ("dirsync", errno.EIO, "cannot sync checkpoint directory {slot}"),
])
def test_failed_checkpoint_warns_once_and_the_run_goes_on(tmp_path, run, monkeypatch,
                                                          point, err, what):
    """A checkpoint write that fails (ENOSPC, EIO; at any step) is one warning naming the
    last good checkpoint; the half-written files go, the run finishes with exit 0 and the
    exact output, and the next checkpoint is written."""
    data = events(1000)
    out = tmp_path / "out.jsonl"
    cfg, _ = copy_config(tmp_path, data, out=str(out))
    state = tmp_path / "state"
    with monkeypatch.context() as m:
        inject(m, point, {2, 3}, err)
        rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    slot = slot_of(state)
    why = what.format(slot=slot) + f": {os.strerror(err)}"
    assert rc == 0 and out.read_bytes() == data
    assert warnings(stderr) == [
        f"sluice: warning: checkpoint at {at_(2)} not written ({why}); the "
        f"last good checkpoint is at {at_(1)}; {RETRY}"]
    # 11 saves, 2 failed: the newest two of 9, and nothing half-written
    assert sorted(p.name for p in slot.iterdir()) == ["checkpoint-00000008", "checkpoint-00000009"]
    rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    assert rc == 0 and out.read_bytes() == data
    assert f"sluice: resumed at {at_(10)} (already complete: nothing new to read)" in stderr


def test_disk_that_stays_full(tmp_path, run, monkeypatch):
    """Every checkpoint fails: still one warning, exit 0, exact output; under
    --strict-checkpoints the run still finishes, and exits 2 with one line."""
    data = events(1000)
    out = tmp_path / "out.jsonl"
    cfg, _ = copy_config(tmp_path, data, out=str(out))
    state = tmp_path / "state"
    for strict in (False, True):
        with monkeypatch.context() as m:
            inject(m, "manifest", set(range(1, 100)), errno.ENOSPC)
            rc, stdout, stderr = run("-c", cfg, "--state-dir", state, "--fresh",
                                     *(["--strict-checkpoints"] if strict else []))
        slot = slot_of(state)
        assert out.read_bytes() == data and list(slot.iterdir()) == []
        assert warnings(stderr) == [
            f"sluice: warning: checkpoint at {at_(1)} not written (cannot "
            f"write checkpoint file {slot}/checkpoint-00000001.tmp: {ENOSPC}); there is no "
            f"good checkpoint yet (a rerun would start over); {RETRY}"]
        last = stderr.splitlines()[-1]
        if strict:
            assert rc == 2 and last == (
                "sluice: error: 11 checkpoints could not be written (see the warning above); "
                "the output is complete, but a killed run would have resumed from further "
                "back (--strict-checkpoints)")
        else:
            assert rc == 0 and last.startswith("sluice: 1,000 lines read, 1,000 records")


@pytest.mark.parametrize("point", ["segment", "manifest", "rename", "dirsync"])
def test_store_removes_what_a_failed_save_wrote(tmp_path, monkeypatch, point):
    """At each write of a save (segment, temp manifest, rename, directory fsync), a
    failure leaves exactly the previous checkpoint, and the next save catches up."""
    store = CheckpointStore(str(tmp_path / "slot"))
    rows = [1, 2]
    store.save({"rows": AppendOnly(rows)})
    before = sorted(os.listdir(store.dir))
    rows += [3, 4]
    with monkeypatch.context() as m:
        inject(m, point, {1}, errno.EIO if point == "dirsync" else errno.ENOSPC)
        with pytest.raises(CheckpointFailed):
            store.save({"rows": AppendOnly(rows)})
    assert sorted(os.listdir(store.dir)) == before
    assert CheckpointStore(store.dir).load(print) == {"rows": [1, 2]}
    rows += [5]
    store.save({"rows": AppendOnly(rows)})
    assert CheckpointStore(store.dir).load(print) == {"rows": [1, 2, 3, 4, 5]}


def test_spill_fsync_failure_is_a_failed_checkpoint(tmp_path, run, monkeypatch):
    """The fsync of a reducer's spill file at a checkpoint fails: a warning, and the
    summary is exact."""
    data = events(1000)
    cfg, _ = copy_config(tmp_path, data, out="sorted-stdout-output", schema="site-event",
                         middle="  - site-state-reducer\n")
    rc, expected, _ = run("-c", cfg, "--state-dir", tmp_path / "ref", "-w", "1")
    real, calls = os.fsync, [0]

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/m00000/spill.dat"):
            calls[0] += 1
            if calls[0] == 2:
                raise OSError(errno.EIO, EIO)
        return real(fd)
    state = tmp_path / "state"
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        rc, out, err = run("-c", cfg, "--state-dir", state, "-w", "1")
    task = slot_of(state) / "s0" / "m00000"
    assert rc == 0 and out == expected
    assert warnings(err) == [
        f"sluice: warning: map task 0: checkpoint at {at_(2)} not written (cannot sync "
        f"spill file {task}/spill.dat: {EIO}); the last good checkpoint is at {at_(1)}; "
        f"{RETRY}"]


def test_worker_checkpoint_warning_reaches_the_user_once(tmp_path):
    """Map tasks in worker processes whose checkpoints all fail: one warning line, from
    the parent, and the exact summary."""
    data = events(9000)
    cfg, _ = copy_config(tmp_path, data, out="sorted-stdout-output", schema="site-event",
                         middle="  - site-state-reducer\n")
    ref = sluice("-c", cfg, "--state-dir", tmp_path / "ref", "-w", "2")
    assert ref.returncode == 0, ref.stderr
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    state = tmp_path / "state"
    p = sluice("-c", cfg, "--state-dir", state, "-w", "2",
               env={"SLUICE_TEST_FAULT": "manifest", "PYTHONPATH": f"{hook}:{ROOT}"})
    slot = slot_of(state)
    tasks = len(read_checked_json(slot / "plan.json")["ranges"])
    assert tasks >= 2
    assert p.returncode == 0 and p.stdout == ref.stdout
    assert warnings(p.stderr.decode()) == [
        f"sluice: warning: map task 0: checkpoint at {at_(1)} not written "
        f"(cannot write checkpoint file {slot}/s0/m00000/checkpoint-00000001.tmp: {ENOSPC}); "
        f"there is no good checkpoint yet (a rerun would start over); {RETRY} (and "
        f"{tasks - 1} more such warnings)"]


# -- data that cannot be written stops the run; the rerun resumes -------------------------
def test_output_file_too_large_stops_and_resumes(tmp_path):
    """The output file cannot grow (RLIMIT_FSIZE: EFBIG, as on a full disk): exit 2, one
    line naming it; the rerun resumes from the last checkpoint and the file is exact."""
    data = events(1000)
    out = tmp_path / "out.jsonl"
    cfg, _ = copy_config(tmp_path, data, out=str(out))
    state = tmp_path / "state"
    p = sluice("-c", cfg, "--state-dir", state, fsize=int(2.5 * BLOCK))
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode() == (f"sluice: error: cannot write output file {out}.partial: "
                                 f"{os.strerror(errno.EFBIG)}; {RESUME}\n")
    p = sluice("-c", cfg, "--state-dir", state)
    assert p.returncode == 0 and out.read_bytes() == data
    assert p.stderr.decode().startswith(f"sluice: resumed at {at_(2)}\n")


def test_spill_file_too_large_in_a_worker_stops_and_resumes(tmp_path):
    """A worker's spill file cannot grow: exit 2, one line naming it; the rerun resumes
    the map tasks and the summary is exact."""
    data = events(9000)
    cfg, _ = copy_config(tmp_path, data, out="sorted-stdout-output", schema="site-event",
                         middle="  - site-state-reducer\n")
    ref = sluice("-c", cfg, "--state-dir", tmp_path / "ref", "-w", "2")
    state = tmp_path / "state"
    p = sluice("-c", cfg, "--state-dir", state, "-w", "2", fsize=20000)
    task = slot_of(state) / "s0" / "m00000"
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode() == (f"sluice: error: cannot write spill file {task}/spill.dat: "
                                 f"{os.strerror(errno.EFBIG)}; {RESUME}\n")
    p = sluice("-c", cfg, "--state-dir", state, "-w", "2")
    assert p.returncode == 0 and p.stdout == ref.stdout
    assert "sluice: resumed " in p.stderr.decode()


def test_dead_letter_write_failure_stops_and_resumes(tmp_path, run, monkeypatch):
    """The dead-letter file cannot be written (ENOSPC): exit 2, one line; the rerun
    resumes, and output and rejects are exact."""
    data = events(1000, bad={250, 700})
    out = tmp_path / "out.jsonl"
    cfg, _ = copy_config(tmp_path, data, out=str(out))
    state = tmp_path / "state"
    dead = state / "dead_letter.jsonl"
    import pipeline.state.deadletter as dl
    with monkeypatch.context() as m:
        m.setattr(dl, "open_private", lambda path, flags: os.open("/dev/full", os.O_WRONLY))
        rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    assert rc == 2 and stderr == (f"sluice: error: cannot write dead-letter file {dead}: "
                                  f"{ENOSPC}; {RESUME}\n")
    rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    assert rc == 0 and stderr.startswith(f"sluice: resumed at {at_(2)}\n")
    good = [x for i, x in enumerate(data.splitlines(keepends=True), 1) if i not in (250, 700)]
    assert out.read_bytes() == b"".join(good)
    assert [json.loads(x)["line"] for x in dead.read_text().splitlines()] == [250, 700]


# -- paths the user gave ----------------------------------------------------------------
def test_state_dir_that_is_a_file(tmp_path, run):
    cfg, _ = copy_config(tmp_path, events(10), out="-")
    rc, out, err = run("-c", cfg, "--state-dir", "/etc/passwd")
    assert rc == 2 and out == ""
    assert err == ("sluice: error: state directory /etc/passwd: expected a directory, got a "
                   "file; use another --state-dir\n")


def test_state_dir_read_only_or_under_a_closed_parent(tmp_path):
    permissions_bind()
    cfg, _ = copy_config(tmp_path, events(10), out="-")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    p = sluice("-c", cfg, "--state-dir", ro, as_user=True)
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode() == (f"sluice: error: state directory {ro}: expected a directory "
                                 f"you can write, got one you cannot (mode 0500); use another "
                                 f"--state-dir\n")
    p = sluice("-c", cfg, "--state-dir", ro / "state", as_user=True)
    assert p.returncode == 2
    assert p.stderr.decode() == (f"sluice: error: state directory {ro / 'state'}: cannot "
                                 f"create it: {os.strerror(errno.EACCES)}; use another "
                                 f"--state-dir\n")


def test_bad_dead_letter_output_and_stats_paths_fail_before_work(tmp_path, run):
    """A dead-letter path, output path or --stats-json that is a directory: one line."""
    data = events(300)
    cfg, _ = copy_config(tmp_path, data, out="-")
    rc, out, err = run("-c", cfg, "--state-dir", tmp_path / "s", "--dead-letter", tmp_path)
    assert rc == 2 and out == ""
    assert err == (f"sluice: error: dead-letter file {tmp_path}: expected a file, got a "
                   f"directory; use another --dead-letter\n")
    rc, out, err = run("-c", cfg, "--state-dir", tmp_path / "s", "--stats-json", tmp_path)
    assert rc == 2 and out == ""
    assert err == f"sluice: error: --stats-json {tmp_path}: expected a file, got a directory\n"
    cfg, _ = copy_config(tmp_path, data, out=str(tmp_path / "s") + "/x.jsonl")
    (tmp_path / "s" / "x.jsonl").mkdir(parents=True)
    rc, out, err = run("-c", cfg, "--state-dir", tmp_path / "s")
    assert rc == 2
    assert err == (f"sluice: error: output file {tmp_path}/s/x.jsonl: expected a file, got a "
                   f"directory\n")


def test_unreadable_input(tmp_path):
    """An input without read permission: one line, with or without reducers."""
    permissions_bind()
    data = events(300)
    for middle, out in (("", "-"), ("  - site-state-reducer\n", "sorted-stdout-output")):
        tmp = tmp_path / out
        tmp.mkdir()
        cfg, src = copy_config(tmp, data, out=out, schema="site-event", middle=middle)
        src.chmod(0)
        p = sluice("-c", cfg, "--state-dir", tmp / "s", as_user=True)
        assert p.returncode == 2 and p.stdout == b""
        assert p.stderr.decode() == (f"sluice: error: cannot read input '{src}': "
                                     f"{os.strerror(errno.EACCES)}\n")


def test_input_that_disappears_mid_run(tmp_path, run, monkeypatch):
    """The second input file vanishes while the first is read: exit 2, one line; put
    back, the rerun resumes and the output is exact."""
    data = events(600)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(data[:300 * LINE])
    b.write_bytes(data[300 * LINE:])
    out = tmp_path / "out.jsonl"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"pipeline:\n  - file-input: {{path: [{str(a)!r}, {str(b)!r}], "
                   f"block_size: {BLOCK}}}\n  - json-decode: {{schema: object}}\n"
                   f"  - jsonl-output: {{path: {str(out)!r}}}\n"
                   f"checkpoint: {{every_records: 100}}\n")
    from stages.file_input import FileInput
    real = FileInput._read_file

    def read_file(self):
        for i, batch in enumerate(real(self)):
            yield batch
            if self.index == 0 and i == 1:
                os.rename(b, tmp_path / "away")
    state = tmp_path / "state"
    with monkeypatch.context() as m:
        m.setattr(FileInput, "_read_file", read_file)
        rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    assert rc == 2
    assert stderr == f"sluice: error: cannot read input '{b}': No such file or directory\n"
    os.rename(tmp_path / "away", b)
    rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    assert rc == 0 and out.read_bytes() == data
    assert stderr.startswith(f"sluice: resumed at {a} {at_(3)}\n")


def test_input_read_error_mid_run(tmp_path, run, monkeypatch):
    """An I/O error while reading the input: exit 2, one line naming it."""
    data = events(500)
    out = tmp_path / "out.jsonl"
    cfg, src = copy_config(tmp_path, data, out=str(out))
    from stages.file_input import FileInput
    real = FileInput._open

    class Failing:
        def __init__(self, fh):
            self.fh, self.reads = fh, 0

        def read(self, n):
            self.reads += 1
            if self.reads == 3:
                raise OSError(errno.EIO, EIO)
            return self.fh.read(n)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()
    state = tmp_path / "state"
    with monkeypatch.context() as m:
        m.setattr(FileInput, "_open", lambda self: Failing(real(self)))
        rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    assert rc == 2
    assert stderr == f"sluice: error: cannot read input file-input({src}): {EIO}; {RESUME}\n"
    rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    assert rc == 0 and out.read_bytes() == data


def test_unreachable_scheduler_is_one_line_and_fast(tmp_path):
    pytest.importorskip("distributed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg, _ = copy_config(tmp_path, events(10), out="sorted-stdout-output",
                         schema="site-event", middle="  - site-state-reducer\n")
    p = sluice("-c", cfg, "--state-dir", tmp_path / "s", "--executor", "dask",
               "--scheduler", f"tcp://127.0.0.1:{port}", timeout=30)
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode() == (
        f"sluice: error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}: "
        f"{os.strerror(errno.ECONNREFUSED)} (expected a scheduler listening there; start one "
        f"with `dask scheduler`, or leave out --scheduler for a local cluster)\n")


# -- a reader that goes away ------------------------------------------------------------
def test_broken_pipe_ends_quietly_with_a_checkpoint(tmp_path):
    """`sluice ... | head -2`: exit 141, nothing on stderr; the checkpoint written at the
    stop is at a batch boundary, and the rerun writes exactly the rest."""
    data = events(3000)
    cfg, _ = copy_config(tmp_path, data, out="-", every=100000)
    state = tmp_path / "state"
    p = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "-c", str(cfg),
                          "--state-dir", str(state)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=ROOT)
    head = [p.stdout.readline(), p.stdout.readline()]
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141 and err == b""
    assert head == data.splitlines(keepends=True)[:2]
    again = sluice("-c", cfg, "--state-dir", state)
    first = again.stderr.decode().splitlines()[0]
    assert first.startswith("sluice: resumed at line ")
    byte = int(first.split("(byte ")[1].rstrip(")").replace(",", ""))
    assert byte % BLOCK == 0 and 0 < byte < len(data)
    assert again.returncode == 0 and again.stdout == data[byte:]


def test_broken_pipe_after_reducers_is_quiet(tmp_path):
    """A reader gone before the summary is printed: exit 141, nothing on stderr; the
    rerun prints the summary from the finished state."""
    data = events(1000)
    cfg, _ = copy_config(tmp_path, data, out="sorted-stdout-output", schema="site-event",
                         middle="  - site-state-reducer\n")
    ref = sluice("-c", cfg, "--state-dir", tmp_path / "ref")
    state = tmp_path / "state"
    p = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "-c", str(cfg),
                          "--state-dir", str(state)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141 and err == b""
    again = sluice("-c", cfg, "--state-dir", state)
    assert again.returncode == 0 and again.stdout == ref.stdout


# -- state you can trust ----------------------------------------------------------------
def test_state_is_private(tmp_path, run):
    """Everything a run leaves in the state directory is 0700 / 0600, whatever the umask."""
    cfg, _ = copy_config(tmp_path, events(1000, bad={5}), out="sorted-stdout-output",
                         schema="site-event", middle="  - site-state-reducer\n")
    old = os.umask(0o002)
    try:
        rc, out, err = run("-c", cfg, "--state-dir", tmp_path / "state", "-w", "2")
    finally:
        os.umask(old)
    assert rc == 0
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "state").rglob("*")}
    modes.add((tmp_path / "state").stat().st_mode & 0o777)
    assert modes == {0o700, 0o600}


def test_group_writable_state_is_refused_before_any_work(tmp_path, run):
    data = events(300)
    out = tmp_path / "out.jsonl"
    cfg, _ = copy_config(tmp_path, data, out=str(out))
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o770)
    rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    assert rc == 2 and not out.exists()
    assert stderr == (
        f"sluice: error: refusing to use state directory {state}: expected a directory owned "
        f"by you and not writable by group or others, got mode 0770 (writable by group); "
        f"another user could have written it, and loading it could run their code as you. "
        f"Fix: chmod go-w {state} if you trust it, or use another --state-dir\n")
    state.chmod(0o700)
    assert run("-c", cfg, "--state-dir", state)[0] == 0
    manifest = sorted(slot_of(state).glob("checkpoint-*"))[-1]
    manifest.chmod(0o602)
    out.unlink()
    rc, stdout, stderr = run("-c", cfg, "--state-dir", state)
    assert rc == 2 and not out.exists()
    assert stderr == (
        f"sluice: error: refusing to use saved state {manifest}: expected a file owned by "
        f"you and not writable by group or others, got mode 0602 (writable by others); "
        f"another user could have written it, and loading it could run their code as you. "
        f"Fix: chmod go-w {manifest} if you trust it, or use another --state-dir\n")


def test_pickles_are_only_loaded_when_trusted(tmp_path):
    """The store and the spill reader themselves refuse a pickle others could write."""
    store = CheckpointStore(str(tmp_path / "slot"))
    store.save({"a": 1})
    manifest = tmp_path / "slot" / "checkpoint-00000001"
    manifest.chmod(0o660)
    with pytest.raises(UntrustedState, match=f"refusing to load checkpoint {manifest}: .* "
                                             f"got mode 0660 \\(writable by group\\)"):
        CheckpointStore(store.dir).load(print)
    manifest.chmod(0o600)
    (tmp_path / "slot").chmod(0o777)
    with pytest.raises(UntrustedState, match="refusing to load the directory of checkpoint"):
        CheckpointStore(store.dir).load(print)
    writer = SpillWriter(str(tmp_path / "spill"), {"objs": None}, 1)
    writer.add_objects("objs", 0, ["x"])
    writer.mark()
    writer.close()
    assert SpillReader([writer.dir], {"objs": None}).read("objs", 0) == ["x"]
    (tmp_path / "spill" / "spill.dat").chmod(0o620)
    with pytest.raises(UntrustedState, match="refusing to load spill file"):
        SpillReader([writer.dir], {"objs": None}).read("objs", 0)
