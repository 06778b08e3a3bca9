"""Damaged saved state never gives a wrong answer: everything a resume trusts is
checksummed, damage is said in one line naming the file, and the task or the run starts
over (or the run refuses, for symlinks)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from conftest import ROOT, SUMMARY, cli, generate
from pipeline.state.checkpoint import read_checked_json, write_checked_json
from pipeline.errors import DamagedState
from pipeline.state.spill import SpillReader, SpillWriter

sys.path.insert(0, str(ROOT / "test_scripts"))
import tamper_state  # noqa: E402

SETS = {"rows": np.dtype([("a", "<u8")]), "objs": None}


def spill(tmp_path):
    w = SpillWriter(str(tmp_path / "w"), SETS, 2, buffer_bytes=1 << 20)
    w.add("rows", np.array([0, 1, 0]), np.array([(1,), (2,), (3,)], SETS["rows"]))
    w.add_objects("objs", 1, ["x", "y"])
    w.mark(durable=False)
    w.close()
    return tmp_path / "w"


def flip(path, at, bit=1):
    data = bytearray(path.read_bytes())
    data[at] ^= bit
    path.write_bytes(bytes(data))


def test_spill_frames_are_read_back_verified(tmp_path):
    """A flipped bit in a frame fails its CRC before it is used (or unpickled)."""
    d = spill(tmp_path)
    assert SpillReader([str(d)], SETS).read("rows", 0)["a"].tolist() == [1, 3]
    flip(d / "spill.dat", 3)
    with pytest.raises(DamagedState) as exc:
        SpillReader([str(d)], SETS).read("rows", 0)
    assert str(exc.value) == f"saved state {d}/spill.dat is damaged (the frame at byte 0 fails its CRC)"


@pytest.mark.parametrize("damage,message", [
    ("flip index", "{d}/spill.idx is damaged (its bytes fail the CRC in its seal)"),
    ("cut index", "{d}/spill.idx is damaged (33 bytes; its seal says 99)"),
    ("cut data", "{d}/spill.dat is damaged (10 bytes; its seal says 48)"),
    ("no seal", "{d}/spill.seal is damaged (missing: the spill files beside it are not sealed)"),
    ("flip seal", "{d}/spill.seal is damaged (it fails its checksum)"),
])
def test_spill_index_and_seal_are_checked(tmp_path, damage, message):
    """A damaged index, data file or seal is refused, naming the file and what is wrong."""
    d = spill(tmp_path)
    if damage == "flip index":
        flip(d / "spill.idx", 5)
    elif damage == "cut index":
        os.truncate(d / "spill.idx", 33)
    elif damage == "cut data":
        os.truncate(d / "spill.dat", 10)
    elif damage == "no seal":
        (d / "spill.seal").unlink()
    else:
        doc = json.loads((d / "spill.seal").read_text())
        doc["data"]["dat"] += 1
        (d / "spill.seal").write_text(json.dumps(doc))
    with pytest.raises(DamagedState) as exc:
        SpillReader([str(d)], SETS)
    assert str(exc.value) == "saved state " + message.format(d=d)


def test_checked_json_refuses_any_change(tmp_path):
    """plan.json, result.json and seals carry a sha256: an edit or a flip is refused,
    and a missing file is None."""
    path = tmp_path / "x.json"
    assert read_checked_json(str(path)) is None
    write_checked_json(str(path), {"nbuckets": [1]})
    assert read_checked_json(str(path)) == {"nbuckets": [1]}
    path.write_text(path.read_text().replace("[1]", "[3]"))
    with pytest.raises(DamagedState) as exc:
        read_checked_json(str(path))
    assert str(exc.value) == f"saved state {path} is damaged (it fails its checksum)"
    path.write_text("{")
    with pytest.raises(DamagedState, match="it is not the JSON Sluice wrote"):
        read_checked_json(str(path))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A log and the state of a finished run of it with 2 workers (several map tasks)."""
    tmp = tmp_path_factory.mktemp("finished")
    log = generate(tmp / "log.jsonl", 20000, 5, "--bad-rate", "0.002")
    state = tmp / "state"
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(state), "-w", "2")
    assert p.returncode == 0, p.stderr
    return log, state, p.stdout


def rerun(log, state, tmp_path):
    import shutil
    copy = tmp_path / "state"
    shutil.copytree(state, copy, symlinks=True)
    return copy, lambda: cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(copy), "-w", "2")


def test_a_damaged_plan_starts_over_and_says_so(finished, tmp_path):
    """An edited plan.json (a bucket count, by hand) is one notice, and the run starts
    over: the output is the right one, never a site printed twice."""
    log, state, expected = finished
    import shutil
    shutil.copytree(state, tmp_path / "s")
    plan = next((tmp_path / "s").glob("*/plan.json"))
    doc = json.loads(plan.read_text())
    doc["data"]["segments"]["0"]["nbuckets"] = [3]
    plan.write_text(json.dumps(doc))
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "s"), "-w", "2")
    assert p.returncode == 0 and p.stdout == expected
    assert f"sluice: saved state {plan} is damaged (it fails its checksum); starting over\n" \
        in p.stderr


def test_a_damaged_reduce_result_restarts_the_run(finished, tmp_path):
    """A flipped bit in a finished reduce task's rows is found when they are read: one
    notice naming the file, then the whole run again, exact."""
    log, state, expected = finished
    import shutil
    shutil.copytree(state, tmp_path / "s")
    dat = sorted((tmp_path / "s").glob("*/s0/r0-1-*/spill.dat"))[0]
    flip(dat, dat.stat().st_size // 2)
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "s"), "-w", "2")
    assert p.returncode == 0 and p.stdout == expected
    line = [x for x in p.stderr.splitlines() if " is damaged " in x]
    assert len(line) == 1 and line[0].startswith(f"sluice: saved state {dat} is damaged (the "
                                                 f"frame at byte ")
    assert line[0].endswith(" fails its CRC); starting the run over")


def test_symlinks_in_a_slot_are_refused(finished, tmp_path):
    """A task directory that is a symlink is refused with one line naming it."""
    log, state, _ = finished
    import shutil
    shutil.copytree(state, tmp_path / "s")
    task = next((tmp_path / "s").glob("*/s0/m00001"))
    shutil.move(task, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", task)
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "s"), "-w", "2")
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: refusing to use saved state {task}: expected a file or "
                        f"directory Sluice made, got a symbolic link; remove it (or use another "
                        f"--state-dir)\n")


def test_tamper_script_sample(tmp_path, capsys):
    """test_scripts/tamper_state.py on a 30,000-line log: a seeded sample of its cases
    (killed and finished states; flips, cuts, deletions, edits, foreign state, symlinks)
    is exact or refused in one line, never wrong."""
    code = tamper_state.main(["--lines", "30000", "--seed", "3", "--cases", "6",
                              "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and "tamper: " in out
