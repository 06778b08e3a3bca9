#!/usr/bin/env python3
"""Mutate every shipped config and run each mutant: no traceback, hang or long error.

    python test_scripts/fuzz_config.py --mutants 2000 --seed 1

Each mutant is one to three edits of a config under configs/ (not the *_test.yaml
files): a deleted, repeated, swapped or re-indented line; a value replaced by a wrong
type, a huge or negative number, NaN, a YAML tag with bad contents (`!!binary`,
`!!int 0xZZ`, `!!timestamp`, ...), an anchor, an alias, a merge key, NUL or a lone
surrogate; a key replaced by a misspelt, unknown or complex one; a stage name replaced
by another or by a malformed import path; deep nesting, an alias bomb, a raw control
character, a byte that is not UTF-8, or a file cut short. For each mutant it runs
`main.py validate -c MUTANT` and a run on the shipped sample, each with a timeout.

A mutant passes when each command exits 0, or exits 1 or 2 with exactly one line
`sluice: error: ...` at the end of stderr and no traceback. Anything else (a
traceback, a hang, an exit code outside 0/1/2, an error of more than one line) is a
finding, printed with the mutant's text; exit 1 if there is any.

`--in-process` runs main.main() in this process instead of a subprocess per command
(about 20 times faster; pytest uses it with a few hundred mutants).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import signal
import sys
import tempfile
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import run_bounded  # noqa: E402
MAIN = os.path.join(ROOT, "main.py")
SAMPLE = os.path.join(ROOT, "tests", "data", "sample", "input.jsonl")

VALUES = [
    "0", "-1", "1", "2", "1000000000", "99999999999999999999999999999", "1e308", "-1e308",
    ".inf", "-.inf", ".nan", "~", "null", "true", "no", "''", '""', "[]", "{}",
    "[1, [2]]", "[[1], 2]", "{a: {b: c}}", "{? [a]: 1}", '"\\0"', '"a\\0b"', '"\\udc80"',
    '"x\\ud800"', "!!binary '***'", "!!int 0xZZ", "!!float abc", "!!timestamp 2020-13-45",
    "!!omap [1]", "!!omap [{a: 1}, {a: 2}]", "!!bool maybe", "!!set {a}", "!!pairs [1]",
    "!!python/object:os.system ls", "!!python/name:os.system", "&anchor [1, 2]",
    "*nowhere", "!!str", "!!null x", "!<tag:yaml.org,2002:int> z",
    "'" + "x" * 20000 + "'", "[" * 70 + "1" + "]" * 70, "[" * 5000 + "1" + "]" * 5000,
    "{a: 1, a: 2}", "[a, b, c]", "a\tb", '"\\t\\x01"', "-", "--", "':'", "'#'",
    "'.relative:X'", "'os:system'", "'a..b:C'", "'pipeline:Stage'", "'stages.where:Where'",
    "'pipeline.stage:Output'", "'json:loads'", "'nope.nope:Nope'", "'a:b:c'", "'file-input'",
    "'-'", "'/dev/null'", "'/'", "'/proc/self/mem'", "'/nonexistent/dir/x.jsonl'",
    "'*.nothing'", "'[unclosed'", "2.5", "-0.0", "0x10", "0o17", "1_000", "+5",
    "'percentile(x, 101)'", "'top(x, 0)'", "'top(x, 99999999999999999999)'",
    "'approx_count_distinct()'", "'avg(a, b)'", "'%{NOPE:x}'", "'%{INT:x:long}'",
    "'(?<=a)%{INT:x}'", "'%{a}%{b}'", "'%{+a} %{a}'", "'%{'", "keep", "drop", "dead-letter",
    "'%d/%b/%Y'", "ISO8601", "epoch_ms", "Mars/Olympus", "iso",
    "{field: ts, size: 1m}", "{field: ts, size: 1m, slide: 2m}", "{field: ts, size: 0}",
    "{field: ts, size: 1d, slide: 1ms}", "{field: ts, gap: 5m}", "'1.5ms'", "'5 m'", "90s",
    "{pattern: '('}", "{pattern: '^\\s', what: next}", "{pattern: x, max_lines: 0}",
    "previous", "next",
]
KEYS = ["pipeline", "workers", "memory_mb", "checkpoint", "executor", "emit", "path",
        "schema", "field", "equals", "in", "drop", "columns", "by", "metrics", "rename",
        "remove", "set", "copy", "convert", "missing", "block_size", "every_records",
        "every_seconds", "enabled", "strict", "type", "scheduler", "partition_mb", "fork",
        "pth", "Pipeline", "? [a]", "? {b: 1}", "<<", "''", "'a.b'", "'x/y'", "'\\0'",
        "'\\udc80'", "1", "null", "true", "[x]", "on_failure", "match", "pattern", "patterns",
        "formats", "timezone", "target", "as", "field_split", "value_split", "prefix", "mode",
        "if", "compute", "window", "size", "slide", "allowed_lateness", "gap", "multiline",
        "negate", "what", "max_lines"]
STAGES = ["file-input", "json-decode", "where", "mutate", "dedupe", "count", "aggregate",
          "site-state-reducer", "sorted-stdout-output", "summary-json-output",
          "jsonl-output", "csv-output", "fork", "route", "grok", "dissect", "date", "kv",
          "routed", "nope", ".relative:X", "os:system",
          "pipeline:Stage", "stages.where:Where", "a..b:C", "json:loads", "nope.nope:Nope",
          "stages.nope:X", "pipeline.config:PipelineConfig"]
TOP = ["workers: 1000000000", "workers: -3", "workers: 2", "workers: 1.5",
       "memory_mb: 1", "memory_mb: 100000000000000000000", "memory_mb: 64",
       "checkpoint: {every_records: 1}", "checkpoint: {every_seconds: .inf}",
       "checkpoint: {every_seconds: 0.0001}", "checkpoint: {enabled: false}",
       "checkpoint: {strict: true}", "checkpoint: [1]",
       "executor: {type: dask, scheduler: 'tcp://127.0.0.1:1'}",
       "executor: {partition_mb: 0}", "executor: {type: ray}", "emit: {every_seconds: -1}",
       "emit: {every_seconds: .nan}", "emit: 5", "extra: 1",
       "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c]\n"
       "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]",
       "defaults: &d {every_records: 5}\ncheckpoint:\n  <<: *d",
       "checkpoint:\n  <<: 5", "<<: {workers: 1}", "? [a]\n: 1"]
RAW = ["\t", "\x00", "\x07", "\x1b", "\ufeff", "\x85", "\u2028", ":", "-", "[", "{", "&",
       "*", "!", "%", "@", "`", "|", ">", "'", '"', "#", "\\"]
BOMB = ("      set:\n        a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "        c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "        d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "        e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "        f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n")


def shipped_configs() -> list[str]:
    folder = os.path.join(ROOT, "configs")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.endswith(".yaml") and not f.endswith("_test.yaml"))


def _value_line(lines: list[str], rng: random.Random) -> int | None:
    picks = [i for i, ln in enumerate(lines) if ":" in ln and not ln.strip().startswith("#")]
    return rng.choice(picks) if picks else None


def mutate(text: str, rng: random.Random) -> bytes:
    """One to three random edits of a config's text (see the module docstring)."""
    lines = text.splitlines()
    raw_tail = b""
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(14)
        i = rng.randrange(len(lines)) if lines else 0
        if not lines:
            lines = [""]
        if op == 0:  # a value
            j = _value_line(lines, rng)
            if j is not None:
                head = lines[j].split(":", 1)[0]
                lines[j] = f"{head}: {rng.choice(VALUES)}"
        elif op == 1:
            del lines[i]
        elif op == 2:
            lines.insert(i, lines[i])
        elif op == 3:  # indentation
            d = rng.choice((-2, -1, 1, 2, 4))
            lines[i] = (" " * d + lines[i]) if d > 0 else lines[i][-d:]
        elif op == 4:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 5:  # a raw character
            pos = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:pos] + rng.choice(RAW) + lines[i][pos:]
        elif op == 6:  # a key
            j = _value_line(lines, rng)
            if j is not None:
                indent = lines[j][:len(lines[j]) - len(lines[j].lstrip(" -"))]
                rest = lines[j].split(":", 1)[1]
                lines[j] = f"{indent}{rng.choice(KEYS)}:{rest}"
        elif op == 7:  # a stage name
            stage_lines = [k for k, ln in enumerate(lines) if ln.lstrip().startswith("- ")]
            if stage_lines:
                j = rng.choice(stage_lines)
                indent = lines[j][:lines[j].index("-")]
                rest = lines[j].split(":", 1)[1] if ":" in lines[j] else ""
                name = rng.choice(STAGES)
                lines[j] = f"{indent}- {name}:{rest}" if rest else f"{indent}- {name}"
        elif op == 8:
            lines += rng.choice(TOP).splitlines()
        elif op == 9:  # an alias bomb in a mutate stage
            at = next((k for k, ln in enumerate(lines) if "json-decode" in ln), None)
            if at is not None:
                lines[at + 1:at + 1] = ["  - mutate:"] + BOMB.splitlines()
        elif op == 10:  # the file cut short
            cut = rng.randrange(len(text) + 1)
            lines = text[:cut].splitlines()
        elif op == 11:  # a byte that is not UTF-8
            raw_tail = rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc"))
        elif op == 12:  # anchors and merge keys
            j = _value_line(lines, rng)
            if j is not None:
                lines[j] = lines[j] + rng.choice((" &x", " *x", " !!map", " !!seq"))
        else:  # deep nesting under a value
            j = _value_line(lines, rng)
            if j is not None:
                head = lines[j].split(":", 1)[0]
                depth = rng.choice((40, 80, 3000))
                lines[j] = f"{head}: " + "{a: " * depth + "1" + "}" * depth
    out = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    if raw_tail:
        at = rng.randrange(len(out) + 1)
        out = out[:at] + raw_tail + out[at:]
    return out


VERBOSE = False  # --verbose: a finding shows its whole traceback


class Hang(BaseException):
    pass


def _alarm(_signum: int, _frame: object) -> None:
    raise Hang()


def run_in_process(argv: list[str], timeout: float) -> tuple[int | None, str, str]:
    """(exit code or None on a hang, stderr, traceback text) of main.main(argv) here."""
    import main

    err, out = io.StringIO(), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main.main(argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 2
        return rc, err.getvalue(), ""
    except Hang:
        return None, err.getvalue(), ""
    except BaseException:  # noqa: B036 - everything main lets out is a finding
        return 99, err.getvalue(), traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_subprocess(argv: list[str], timeout: float, cwd: str) -> tuple[int | None, str, str]:
    rc, _, err = run_bounded([sys.executable, MAIN, *argv], timeout, cwd)
    return rc, err, err if "Traceback (most recent call last)" in err else ""


def verdict(rc: int | None, err: str, trace: str) -> str | None:
    """Why this outcome is a finding, or None."""
    if rc is None:
        return "hang"
    if trace:
        return "traceback: " + trace.strip().splitlines()[-1]
    if rc == 0:
        return None
    if rc not in (1, 2):
        return f"exit code {rc}"
    lines = err.rstrip("\n").split("\n")
    if not lines[-1].startswith("sluice: error: "):
        return f"last stderr line is not one error: {lines[-1][:200]!r}"
    if any(not ln.startswith("sluice: ") for ln in lines):
        return "the error spans more than one line"
    return None


def check(mutant: bytes, in_process: bool, timeout: float) -> list[str]:
    """Findings for one mutant: validate it, then run it on the sample."""
    found = []
    with tempfile.TemporaryDirectory(prefix="sluice-fuzz-") as tmp:
        config = os.path.join(tmp, "mutant.yaml")
        with open(config, "wb") as fh:
            fh.write(mutant)
        for argv in (["validate", "-c", config],
                     ["-c", config, "-f", SAMPLE, "--state-dir", os.path.join(tmp, "state"),
                      "-q"]):
            if in_process:
                here = os.getcwd()
                os.chdir(tmp)
                try:
                    rc, err, trace = run_in_process(argv, timeout)
                finally:
                    os.chdir(here)
            else:
                rc, err, trace = run_subprocess(argv, timeout, tmp)
            why = verdict(rc, err, trace)
            if why:
                found.append(f"{argv[0] if argv[0] == 'validate' else 'run'}: {why}"
                             + (f"\n{trace}" if trace and VERBOSE else ""))
    return found


def fuzz(mutants: int, seed: int, in_process: bool, timeout: float,
         say: Callable[[str], None] = print, jobs: int = 2) -> int:
    """Run `mutants` mutants; return the number of findings (each printed)."""
    rng = random.Random(seed)
    texts = [open(p, encoding="utf-8").read() for p in shipped_configs()]
    cases = [mutate(rng.choice(texts), rng) for _ in range(mutants)]
    findings = 0
    if in_process:
        results = (check(m, True, timeout) for m in cases)
    else:
        pool = ThreadPoolExecutor(jobs)
        results = pool.map(lambda m: check(m, False, timeout), cases)
    for n, (mutant, found) in enumerate(zip(cases, results), 1):
        for why in found:
            findings += 1
            shown = mutant.decode("utf-8", "backslashreplace")
            if len(shown) > 1500:
                shown = shown[:1500] + f"... ({len(mutant):,} bytes)"
            say(f"FINDING in mutant {n}: {why}\n--- mutant {n} ---\n{shown}\n---")
    say(f"{mutants} mutants, {findings} findings")
    return findings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mutants", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per command")
    p.add_argument("--jobs", type=int, default=2, help="mutants at once (subprocesses)")
    p.add_argument("--in-process", action="store_true")
    p.add_argument("--verbose", action="store_true", help="show whole tracebacks")
    args = p.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    if args.in_process:
        sys.path.insert(0, ROOT)
    return 1 if fuzz(args.mutants, args.seed, args.in_process, args.timeout,
                     jobs=args.jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
