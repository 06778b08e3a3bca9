"""`main.py replay`: feed a dead-letter file's raw lines back through a (fixed) pipeline.

    python main.py replay -c CONFIG [--dead-letter PATH] [--since LINE] [--state-dir DIR]

The lines not replayed before (and, with --since, from that input line on) are written,
in order, to a replay input under STATE_DIR/replay/, which the pipeline then reads in
place of its input, with its own outputs and their exactly-once rules. Lines that fail
again go to a new dead-letter file beside the old one (`dead_letter.replay-N.jsonl`),
named by their original file, line and offset. Once the replay has finished, its lines
are added to the ledger STATE_DIR/replayed.jsonl, so a second replay feeds none of them
again; a replay that is killed is resumed by the same command (its input is kept until
it finishes, so its outputs see the same job).

A replay adds records to what a run wrote, so every output of the pipeline must add rows
(sqlite-output, postgres-output in insert mode) or write to standard output, and no stage
may hold state across records (a reducer's result over the replayed lines alone would
replace the run's): both are refused before anything is read.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import PipelineConfig, override_option
from pipeline.engine.options import JobOptions
from pipeline.errors import SluiceError
from pipeline.stage import Role
from pipeline.state.trust import fsync_path, make_private_dirs, open_private

LEDGER = "replayed.jsonl"
PENDING = "replay"


@dataclass
class Replayed:
    """What a replay did, for its report."""
    lines: int = 0            # lines fed back
    skipped: int = 0          # dead letters replayed before (the ledger), or before --since
    failed: int = 0           # lines that failed again
    dead_letter: str | None = None  # where those went
    origins: list[tuple[Any, int]] = field(default_factory=list)  # (file, line) fed back
    resumed: bool = False

    def summary_line(self) -> str:
        files = sorted({str(f) for f, _ in self.origins if f is not None})
        lines = [n for _, n in self.origins if n is not None]
        span = f" (input lines {min(lines):,} to {max(lines):,}" + (
            f" of {', '.join(files)}" if files else "") + ")" if lines else ""
        text = f"replayed {self.lines:,} lines{span}"
        if self.skipped:
            text += f", {self.skipped:,} skipped (replayed before, or before --since)"
        text += f"; {self.failed:,} failed again"
        if self.failed:
            text += f" (reasons in {self.dead_letter})"
        return text


def check_replayable(cfg: PipelineConfig) -> None:
    """SluiceError if the pipeline cannot take a replay (see the module docstring)."""
    for spec in cfg.stages:
        if spec.cls.role is Role.REDUCER:
            raise SluiceError(
                f"replay: {spec.name} (line {spec.line}) keeps state across records: its "
                f"result over the replayed lines alone would replace the run's; replay "
                f"through a pipeline without reducers that ends in a database output")
        if spec.cls.role is Role.OUTPUT and not getattr(spec.cls, "appends", False):
            dests = spec.cls.destinations(spec.options)
            if dests and any(d != "-" for d in dests):
                raise SluiceError(
                    f"replay: {spec.name} (line {spec.line}) writes {dests[0]}, which a "
                    f"replay would replace with the replayed records alone; replay into "
                    f"sqlite-output or postgres-output (mode: insert), or standard output")


def _key(dead_path: str, entry: dict[str, Any]) -> str:
    body = json.dumps([os.path.abspath(dead_path), entry.get("file"), entry.get("line"),
                       entry.get("offset"), entry.get("raw")], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def _read_entries(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise SluiceError(f"replay: no dead-letter file at {path}; give --dead-letter "
                          f"PATH") from None
    except OSError as exc:
        raise SluiceError(f"replay: cannot read {path}: {exc.strerror}") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("raw"), str):
            raise SluiceError(f"replay: {path} line {n} is not a dead-letter entry (a JSON "
                              f"object with a \"raw\" text)")
        out.append(entry)
    return out


def _ledger(state_dir: str) -> set[str]:
    path = os.path.join(state_dir, LEDGER)
    if not os.path.exists(path):
        return set()
    with open(path, encoding="utf-8") as fh:
        return {json.loads(line)["key"] for line in fh if line.strip()}


def _write_private(path: str, data: bytes) -> None:
    with open(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def replay(cfg: PipelineConfig, opts: JobOptions, since: int | None,
           run: Any) -> Replayed:
    """Replay the dead letters of `opts.dead_letter_path` through `cfg`; `run(cfg, opts)`
    runs the pipeline (run_job)."""
    check_replayable(cfg)
    dead_path = opts.dead_letter_path
    assert dead_path is not None
    state_dir = opts.state_dir
    pending = os.path.join(state_dir, PENDING)
    manifest = os.path.join(pending, "manifest.json")
    done = Replayed()
    if os.path.exists(manifest):  # a replay that did not finish: the same one again
        with open(manifest, encoding="utf-8") as fh:
            chosen = json.load(fh)
        done.resumed = True
    else:
        entries = _read_entries(dead_path)
        seen = _ledger(state_dir)
        chosen = []
        for entry in entries:
            key = _key(dead_path, entry)
            line = entry.get("line")
            if key in seen or (since is not None and (line is None or line < since)):
                done.skipped += 1
                continue
            chosen.append({"key": key, "file": entry.get("file"), "line": line,
                           "offset": entry.get("offset"), "raw": entry["raw"]})
        if not chosen:
            return done
        shutil.rmtree(pending, ignore_errors=True)
        make_private_dirs(pending)
        _write_private(os.path.join(pending, "input.log"),
                       b"".join(c["raw"].encode("utf-8", "surrogateescape") + b"\n"
                                for c in chosen))
        _write_private(manifest + ".tmp", json.dumps(chosen).encode())
        os.replace(manifest + ".tmp", manifest)
        fsync_path(pending)
    override_option(cfg, 0, "path", os.path.join(pending, "input.log"), "replay")
    again = os.path.join(pending, "dead_letter.jsonl")
    run(cfg, JobOptions(**{**opts.__dict__, "dead_letter": again,
                           "state_dir": os.path.join(pending, "state"), "fresh": False}))
    done.lines = len(chosen)
    done.origins = [(c["file"], c["line"]) for c in chosen]
    if os.path.exists(again):  # named by their original place, beside the old file
        n = 1
        while os.path.exists(_numbered(dead_path, n)):
            n += 1
        done.dead_letter = _numbered(dead_path, n)
        out = []
        with open(again, encoding="utf-8") as fh:
            for line in fh:
                entry = json.loads(line)
                origin = chosen[entry["line"] - 1] if entry.get("line") else {}
                out.append(json.dumps({"file": origin.get("file"), "line": origin.get("line"),
                                       "offset": origin.get("offset"),
                                       "stage": entry.get("stage"),
                                       "reason": entry.get("reason"), "raw": entry.get("raw"),
                                       "replayed_from": dead_path}))
        done.failed = len(out)
        _write_private(done.dead_letter, "".join(x + "\n" for x in out).encode())
    path = os.path.join(state_dir, LEDGER)
    with open(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as fh:
        fh.write(b"".join(json.dumps({"key": c["key"], "file": c["file"], "line": c["line"],
                                      "dead_letter": dead_path}).encode() + b"\n"
                          for c in chosen))
        fh.flush()
        os.fsync(fh.fileno())
    shutil.rmtree(pending, ignore_errors=True)
    return done


def _numbered(dead_path: str, n: int) -> str:
    root, ext = os.path.splitext(dead_path)
    return f"{root}.replay-{n}{ext or '.jsonl'}"
