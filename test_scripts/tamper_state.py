#!/usr/bin/env python3
"""Kill a run, damage its saved state one way at a time, rerun: exact, or one line.

    python test_scripts/tamper_state.py --lines 200000 --seed 1

It generates a log (with some bad lines), runs the job once without checkpoints for
the expected stdout and dead-letter file, then builds two saved states: one killed with
SIGKILL while its map tasks ran (some finished, some midway), and one of a finished
run. For each *case* it restores a pristine copy of one of them, damages it one way,
reruns the same command and judges the outcome:

    exact     exit 0, stdout and dead-letter file identical to the uninterrupted run
    refused   exit 1 or 2 with one `sluice: error: ...` line and no traceback
    FAIL      anything else: a wrong answer, a traceback, another exit code, a hang

The damage: one flipped bit, a cut (truncation) and a deletion in every kind of file
the state holds (spill data, index and seal, checkpoint manifests and segments,
plan.json, result.json, task dead letters); plan.json edited as valid JSON (bucket
counts, a range, the generation); a task directory, and the whole slot, copied from a
run on another input of the same length; a task directory, the slot and the lock file
replaced by symbolic links. `--cases N` runs a seeded sample of N of them.

Exit 0 when no case failed, 1 otherwise, 2 on a setup error.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import read, run_bounded as run  # noqa: E402
MAIN = os.path.join(ROOT, "main.py")
CONFIG = os.path.join(ROOT, "configs", "summary.yaml")
KINDS = {  # file kind -> glob below the slot
    "spill.dat": "**/spill.dat", "spill.idx": "**/spill.idx", "spill.seal": "**/spill.seal",
    "checkpoint": "**/checkpoint-*", "segment": "**/seg-*", "plan.json": "plan.json",
    "result.json": "**/result.json", "task dead letter": "s*/m*/dead_letter.jsonl",
}


def the_slot(state: str) -> str:
    return next(p for p in glob.glob(os.path.join(state, "*")) if os.path.isdir(p))


def files_of(slot: str, kind: str) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(slot, KINDS[kind]), recursive=True)
                  if os.path.isfile(p) and os.path.getsize(p) > 0)


class Tamper:
    def __init__(self, args: argparse.Namespace, work: str):
        self.args, self.work = args, work
        self.rng = random.Random(args.seed)
        self.log = os.path.join(work, "log.jsonl")
        self.state = os.path.join(work, "state")
        self.cwd = os.path.join(work, "cwd")
        self.extra = ["-w", str(args.workers)] + (["--checkpoint-every", "2000"])

    def job(self, log: str, state: str, *more: str) -> list[str]:
        return [sys.executable, MAIN, "-c", self.args.config, "-f", log, "--state-dir",
                state, "-q", *self.extra, *more]

    def setup(self) -> None:
        subprocess.run([sys.executable, os.path.join(ROOT, "test_scripts", "generate.py"),
                        "--lines", str(self.args.lines), "--seed", str(self.args.seed),
                        "--mixed-site-ids", "--bad-rate", "0.002", "-o", self.log], check=True)
        ref = os.path.join(self.work, "ref")
        ref_cwd = os.path.join(self.work, "ref-cwd")
        rc, self.expected, err = run(self.job(self.log, ref, "--no-checkpoint"), 600, ref_cwd)
        if rc != 0:
            raise SystemExit(f"tamper: the uninterrupted run failed: {err}")
        self.expected_dead = read(os.path.join(ref, "dead_letter.jsonl"))
        self.expected_files = {f: read(os.path.join(ref_cwd, f)) for f in os.listdir(ref_cwd)}
        self.bases = {"killed": self._killed(), "finished": self._finished()}
        self.other_slot = self._other()

    def _other(self) -> str:
        """The finished state of a run on another input of the same length at the same
        path (the same file, a digit changed in place, as an editor might), which is
        then put back as it was, modification time included."""
        original, st = read(self.log), os.stat(self.log)
        at = original.index(b'"timestamp":', len(original) // 2) + len(b'"timestamp":')
        other = os.path.join(self.work, "other-state")
        shutil.rmtree(self.state, ignore_errors=True)
        with open(self.log, "r+b") as fh:
            fh.seek(at)
            fh.write(b"1" if original[at:at + 1] != b"1" else b"2")
        try:  # in the same state directory, so that only the run differs
            rc, _, err = run(self.job(self.log, self.state), 600, self.cwd)
            shutil.rmtree(other, ignore_errors=True)
            shutil.move(self.state, other)
        finally:
            with open(self.log, "r+b") as fh:
                fh.seek(at)
                fh.write(original[at:at + 1])
            os.utime(self.log, ns=(st.st_atime_ns, st.st_mtime_ns))
        if rc != 0:
            raise SystemExit(f"tamper: the run on the other input failed: {err}")
        return the_slot(other)

    def _killed(self) -> str:
        """A state killed while map tasks ran: some finished, some midway."""
        for attempt in range(20):
            shutil.rmtree(self.state, ignore_errors=True)
            os.makedirs(self.cwd, exist_ok=True)
            proc = subprocess.Popen(self.job(self.log, self.state), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.cwd)
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                done = glob.glob(os.path.join(self.state, "*", "s0", "m*", "result.json"))
                if len(done) >= 1 + attempt % 3:
                    break
                time.sleep(0.005)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            slot = glob.glob(os.path.join(self.state, "*", "plan.json"))
            if slot and not glob.glob(os.path.join(self.state, "*", "s0", "r*")):
                return self._keep("killed")
        raise SystemExit("tamper: could not kill a run while its map tasks ran; use more "
                         "--lines")

    def _finished(self) -> str:
        shutil.rmtree(self.state, ignore_errors=True)
        rc, _, err = run(self.job(self.log, self.state), 600, self.cwd)
        if rc != 0:
            raise SystemExit(f"tamper: the run to keep failed: {err}")
        return self._keep("finished")

    def _keep(self, name: str) -> str:
        keep = os.path.join(self.work, f"base-{name}")
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(self.state, keep, symlinks=True)
        return keep

    # -- the damage ---------------------------------------------------------------------
    def cases(self) -> list[tuple[str, str, Callable[[str], str]]]:
        """(name, base, damage(slot) -> what was done)."""
        out: list[tuple[str, str, Callable[[str], str]]] = []
        for base in self.bases:
            for kind in KINDS:
                for how in ("flip", "cut", "delete"):
                    out.append((f"{how} {kind}", base,
                                lambda slot, k=kind, h=how: self._file(slot, k, h)))
            for field in ("nbuckets", "range", "generation"):
                out.append((f"edit plan {field}", base,
                            lambda slot, f=field: self._edit_plan(slot, f)))
            out.append(("task from another input", base, self._foreign_task))
            out.append(("slot from another input", base, self._foreign_slot))
            out.append(("task dir as symlink", base, self._link_task))
            out.append(("slot as symlink", base, self._link_slot))
            out.append(("lock as symlink", base, self._link_lock))
        return out

    def _file(self, slot: str, kind: str, how: str) -> str:
        found = files_of(slot, kind)
        if not found:
            return ""
        path = self.rng.choice(found)
        size = os.path.getsize(path)
        if how == "delete":
            os.unlink(path)
            return f"deleted {os.path.relpath(path, slot)}"
        if how == "cut":
            keep = self.rng.randrange(size)
            os.truncate(path, keep)
            return f"cut {os.path.relpath(path, slot)} to {keep} of {size} bytes"
        at = self.rng.randrange(size)
        bit = self.rng.randrange(8)
        with open(path, "r+b") as fh:
            fh.seek(at)
            byte = fh.read(1)[0]
            fh.seek(at)
            fh.write(bytes([byte ^ (1 << bit)]))
        return f"flipped bit {bit} of byte {at} of {os.path.relpath(path, slot)}"

    def _edit_plan(self, slot: str, field: str) -> str:
        path = os.path.join(slot, "plan.json")
        doc = json.loads(read(path))
        plan = doc["data"]
        if field == "nbuckets":
            plan["segments"]["0"]["nbuckets"] = [n + 2 for n in plan["segments"]["0"]["nbuckets"]]
        elif field == "range":
            r = plan["ranges"][len(plan["ranges"]) // 2]
            if isinstance(r, list) and isinstance(r[1], int) and r[1] > 0:
                r[1] += 1
        else:
            plan["generation"] += 1
        with open(path, "w") as fh:
            json.dump(doc, fh)  # the old checksum: as a hand edit would leave it
        return f"edited plan.json ({field})"

    def _foreign_task(self, slot: str) -> str:
        tasks = sorted(glob.glob(os.path.join(self.other_slot, "s0", "m*")))
        tasks = [t for t in tasks if os.path.isdir(t)]
        pick = tasks[len(tasks) // 2]
        dest = os.path.join(slot, "s0", os.path.basename(pick))
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(pick, dest)
        return f"replaced {os.path.relpath(dest, slot)} by the other run's"

    def _foreign_slot(self, slot: str) -> str:
        shutil.rmtree(slot)
        shutil.copytree(self.other_slot, slot)
        return "replaced the slot by the other run's"

    def _link_task(self, slot: str) -> str:
        tasks = sorted(t for t in glob.glob(os.path.join(slot, "s0", "m*")) if os.path.isdir(t))
        pick = tasks[0]
        moved = os.path.join(self.work, "linked-task")
        shutil.rmtree(moved, ignore_errors=True)
        shutil.move(pick, moved)
        os.symlink(moved, pick)
        return f"{os.path.relpath(pick, slot)} is a symlink"

    def _link_slot(self, slot: str) -> str:
        moved = os.path.join(self.work, "linked-slot")
        shutil.rmtree(moved, ignore_errors=True)
        shutil.move(slot, moved)
        os.symlink(moved, slot)
        return "the slot is a symlink"

    def _link_lock(self, slot: str) -> str:
        lock = slot + ".lock"
        target = os.path.join(self.work, "linked-lock")
        with open(target, "w"):
            pass
        if os.path.exists(lock):
            os.unlink(lock)
        os.symlink(target, lock)
        return "the lock file is a symlink"

    # -- one case -----------------------------------------------------------------------
    def judge(self, name: str, base: str, damage: Callable[[str], str]) -> tuple[str, str]:
        shutil.rmtree(self.state, ignore_errors=True)
        for extra in ("linked-task", "linked-slot"):
            shutil.rmtree(os.path.join(self.work, extra), ignore_errors=True)
        shutil.copytree(self.bases[base], self.state, symlinks=True)
        did = damage(the_slot(self.state))
        if not did:
            return "skipped", "no such file in this state"
        shutil.rmtree(self.cwd, ignore_errors=True)
        rc, out, err = run(self.job(self.log, self.state), 600, self.cwd)
        lines = err.rstrip("\n").split("\n")
        dead = read(os.path.join(self.state, "dead_letter.jsonl"))
        files = {f: read(os.path.join(self.cwd, f)) for f in self.expected_files}
        if rc == 0 and out == self.expected and dead == self.expected_dead \
                and files == self.expected_files and "Traceback" not in err:
            said = [ln for ln in lines if "damaged" in ln or "unusable" in ln
                    or "starting over" in ln or "again" in ln]
            return "exact", f"{did}" + (f"; said: {said[0]}" if said else "")
        if rc in (1, 2) and "Traceback" not in err and lines[-1].startswith("sluice: error: ") \
                and all(ln.startswith("sluice: ") for ln in lines):
            return "refused", f"{did}; {lines[-1]}"
        why = ("hang" if rc is None else "traceback" if "Traceback" in err else
               f"exit {rc}" if rc != 0 else
               "wrong stdout" if out != self.expected else
               "wrong dead-letter file" if dead != self.expected_dead else
               "a wrong output file")
        return "FAIL", f"{did}; {why}; stderr: {err.strip()[-600:]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cases", type=int, help="a seeded sample of this many cases")
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--workdir", help="where to keep files (default: a temp dir)")
    args = p.parse_args(argv)
    args.config = os.path.abspath(args.config)
    work = args.workdir or tempfile.mkdtemp(prefix="sluice-tamper-")
    os.makedirs(work, exist_ok=True)
    t = Tamper(args, work)
    t.setup()
    cases = t.cases()
    if args.cases:
        cases = random.Random(args.seed).sample(cases, min(args.cases, len(cases)))
    tally: dict[str, int] = {}
    for name, base, damage in cases:
        verdict, detail = t.judge(name, base, damage)
        tally[verdict] = tally.get(verdict, 0) + 1
        print(f"{verdict:8} {base:8} {name}: {detail}", flush=True)
    print("tamper: " + ", ".join(f"{n} {v}" for v, n in sorted(tally.items())))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if tally.get("FAIL") else 0


if __name__ == "__main__":
    sys.exit(main())
