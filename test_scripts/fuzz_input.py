#!/usr/bin/env python3
"""Run every shipped pipeline on hostile inputs: no traceback, no hang, no count changed.

    python test_scripts/fuzz_input.py            # every kind, every pipeline
    python test_scripts/fuzz_input.py --small    # smaller sizes (pytest uses this)

Each *kind* of hostile input is a few such lines put between good lines of the shipped
sample (or a whole file, for compressed and empty inputs): JSON nested 100,000 deep, a
40 MB line, an object of a million keys, NUL bytes, invalid UTF-8 in keys and values,
lone surrogates, `1e999` and 30-digit numbers, CR-only line ends, comma-joined and
split records, corrupt and truncated gzip and bz2, random bytes, and more (KINDS).

Every pipeline in configs/ runs on every kind, in a subprocess with a timeout. A run
passes when it exits 0 (or 1 or 2 with one `sluice: error:` line) without a traceback
and within the timeout; and, for a kind whose lines no schema accepts, when its stdout
equals the pipeline's stdout on the good lines alone: a rejected line never changes a
count. Exit 1 if any run fails.
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import os
import random
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import run_bounded  # noqa: E402
MAIN = os.path.join(ROOT, "main.py")
SAMPLE = os.path.join(ROOT, "tests", "data", "sample", "input.jsonl")
GOOD = [ln for ln in open(SAMPLE, "rb").read().split(b"\n")[:400] if ln.startswith(b'{"id"')
        and ln.endswith(b"}")][:300]
REC = b'{"id":"k%d","from":"v","type":"message","site_id":"S","timestamp":%d}'


def mixed(bad: list[bytes]) -> bytes:
    """Good lines with the bad ones spread among them (and one as the last line)."""
    lines = list(GOOD)
    step = max(len(lines) // (len(bad) + 1), 1)
    for i, b in enumerate(bad):
        lines.insert(min((i + 1) * step + i, len(lines)), b)
    return b"\n".join(lines + [bad[-1]]) + b"\n"


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# kind -> (file suffix, data maker given a size scale, whether every hostile line is
# one no schema accepts: then the output must equal the good lines' output)
KindSpec = tuple[str, Callable[[int], bytes], bool]
KINDS: dict[str, KindSpec] = {
    "deep object": (".jsonl", lambda s: mixed([b'{"a":' * (100_000 // s) + b"1"
                                               + b"}" * (100_000 // s)]), False),
    "deep array": (".jsonl", lambda s: mixed([b"[" * (100_000 // s) + b"]" * (100_000 // s)]),
                   True),
    "deep and cut": (".jsonl", lambda s: mixed([b'{"a":[' * (50_000 // s)]), True),
    "huge line": (".jsonl", lambda s: mixed([b'{"id":"h","x":"' + b"x" * (40_000_000 // s)
                                             + b'"}']), False),
    "huge bad line": (".jsonl", lambda s: mixed([b'{"id":"h","x":"' + b"x" * (40_000_000 // s)]),
                      True),
    "million keys": (".jsonl", lambda s: mixed([b"{" + b",".join(
        b'"k%d":%d' % (i, i) for i in range(1_000_000 // s)) + b"}"]), False),
    "NUL bytes": (".jsonl", lambda s: mixed([b"\x00" * 10, b'{"id":"\x00"}', b"{\x00}"]), True),
    "invalid UTF-8 in keys": (".jsonl", lambda s: mixed([b'{"\xff\xfe":1,"id":"a"}']), True),
    "invalid UTF-8 in values": (".jsonl", lambda s: mixed([b'{"id":"\xc3\x28","x":1}',
                                                           b'{"id":"\xed\xa0\x80"}']), True),
    "lone surrogates": (".jsonl", lambda s: mixed([b'{"id":"\\ud800"}', b'{"\\udc80":1}']),
                        True),
    "huge numbers": (".jsonl", lambda s: mixed([
        b'{"id":"n1","from":"v","type":"message","site_id":"S","timestamp":1e999}',
        b'{"id":"n2","from":"v","type":"message","site_id":"S","timestamp":'
        + b"9" * 30 + b"}",
        b'{"id":"n3","from":"v","type":"message","site_id":"S","timestamp":' + b"9" * 400
        + b"}", b'{"x":' + b"1" * 5000 + b"}", b'{"x":-0.0,"y":1e-999}']), False),
    "NaN and Infinity": (".jsonl", lambda s: mixed([b'{"timestamp":NaN}', b'{"x":Infinity}',
                                                    b'{"x":-Infinity}']), True),
    "CR-only line ends": (".jsonl", lambda s: b"\r".join(GOOD[:50]) + b"\r", False),
    "CRLF": (".jsonl", lambda s: b"\r\n".join(GOOD) + b"\r\n", False),
    "empty file": (".jsonl", lambda s: b"", False),
    "whitespace only": (".jsonl", lambda s: b" \n\t\n\r\n   \n" * 100, False),
    "comma-joined": (".jsonl", lambda s: mixed([REC % (1, 1) + b"," + REC % (2, 2),
                                                REC % (3, 3) + b" , " + REC % (4, 4),
                                                b"," + REC % (5, 5), REC % (6, 6) + b",",
                                                b"[" + REC % (7, 7), REC % (8, 8) + b"]"]), True),
    "split records": (".jsonl", lambda s: mixed([b'{"id":"s1","from":"v","type":"message"',
                                                 b'"site_id":"EVIL","timestamp":3}',
                                                 b'{"id":"s2",', b'"from":"v",',
                                                 b'"type":"message","site_id":"E","timestamp":1}']),
                      True),
    "random bytes": (".jsonl", lambda s: mixed([bytes(random.Random(n).randrange(256)
                                                      for _ in range(300)).replace(b"\n", b" ")
                                                for n in range(20)]), True),
    "BOMs in the middle": (".jsonl", lambda s: mixed([b"\xef\xbb\xbf" + REC % (9, 9),
                                                      b"\xef\xbb\xbf"]), True),
    "no final newline": (".jsonl", lambda s: b"\n".join(GOOD), False),
    "duplicate keys": (".jsonl", lambda s: mixed([b'{"id":"d","id":"e","from":"v","type":'
                                                  b'"message","site_id":"S","timestamp":1}']),
                       False),
    "odd sites": (".jsonl", lambda s: mixed([
        b'{"id":"o1","from":"v","type":"message","site_id":"a,b\\nc","timestamp":1}',
        b'{"id":"o2","from":"v","type":"message","site_id":"\\u2028","timestamp":1}']), False),
    "truncated gzip": (".gz", lambda s: _gz(b"\n".join(GOOD) + b"\n")[:-40], False),
    "gzip with garbage tail": (".gz", lambda s: _gz(b"\n".join(GOOD) + b"\n") + b"junk" * 50,
                               False),
    "corrupt gzip": (".gz", lambda s: (lambda z: z[:len(z) // 2] + bytes([z[len(z) // 2] ^ 255])
                                       + z[len(z) // 2 + 1:])(_gz(b"\n".join(GOOD) + b"\n")),
                     False),
    "not gzip at all": (".gz", lambda s: b"\n".join(GOOD) + b"\n", False),
    "truncated bz2": (".bz2", lambda s: bz2.compress(b"\n".join(GOOD) + b"\n")[:-30], False),
}


def configs() -> list[str]:
    folder = os.path.join(ROOT, "configs")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.endswith(".yaml") and not f.endswith("_test.yaml"))


def run(config: str, path: str, work: str, timeout: float) -> tuple[int | None, bytes, str]:
    state = tempfile.mkdtemp(prefix="state-", dir=work)
    return run_bounded([sys.executable, MAIN, "-c", config, "-f", path, "--state-dir", state,
                        "-q"], timeout, state)


def problem(rc: int | None, err: str) -> str | None:
    if rc is None:
        return "hang"
    if "Traceback (most recent call last)" in err:
        return "traceback: " + err.strip().splitlines()[-1]
    if rc == 0:
        return None
    lines = err.rstrip("\n").split("\n")
    if rc in (1, 2) and lines[-1].startswith("sluice: error: ") and \
            all(ln.startswith("sluice: ") for ln in lines):
        return None
    return f"exit {rc}: {err.strip()[-300:]}"


def fuzz(kinds: list[str], scale: int, timeout: float, jobs: int, say=print,
         pipelines: list[str] | None = None) -> int:
    """Run each kind through each pipeline (default: every one in configs/); return
    the number of failures (each said)."""
    pipelines = pipelines or configs()
    work = tempfile.mkdtemp(prefix="sluice-fuzz-input-")
    good = os.path.join(work, "good.jsonl")
    with open(good, "wb") as fh:
        fh.write(b"\n".join(GOOD) + b"\n")
    baseline = {c: run(c, good, work, timeout) for c in pipelines}
    cases = []
    for kind in kinds:
        suffix, make, all_bad = KINDS[kind]
        path = os.path.join(work, kind.replace(" ", "-") + suffix)
        with open(path, "wb") as fh:
            fh.write(make(scale))
        cases += [(kind, c, path, all_bad) for c in pipelines]

    def one(case: tuple[str, str, str, bool]) -> str | None:
        kind, config, path, all_bad = case
        rc, out, err = run(config, path, work, timeout)
        why = problem(rc, err)
        if why is None and all_bad and rc == 0 and out != baseline[config][1]:
            why = "the output differs from the good lines' output: a bad line counted"
        return None if why is None else f"{kind} / {os.path.basename(config)}: {why}"
    failures = 0
    with ThreadPoolExecutor(jobs) as pool:
        for found in pool.map(one, cases):
            if found:
                failures += 1
                say(f"FAIL {found}")
    say(f"{len(cases)} runs ({len(kinds)} kinds x {len(pipelines)} pipelines), "
        f"{failures} failures")
    shutil.rmtree(work, ignore_errors=True)
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="sizes divided by 20")
    p.add_argument("--kinds", nargs="*", choices=sorted(KINDS), help="default: all")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    return 1 if fuzz(args.kinds or list(KINDS), 20 if args.small else 1, args.timeout,
                     args.jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
