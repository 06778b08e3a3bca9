#!/usr/bin/env python3
"""Write a seeded synthetic chat log in the format of configs/summary.md.

    python test_scripts/generate.py --lines 1000000 --seed 7 -o /tmp/chat.jsonl

The log is built in chunks so memory stays flat at any size (20M+ lines is fine).
What it contains, on purpose:

- records out of order: each chunk is shuffled, and some records are moved far away;
- exact duplicates, some next to the original and some many chunks later;
- `--conflicting-dups`: a few re-used ids with different content (first one wins);
- sites that only ever see status records;
- operators that go offline while already offline, and repeat `online`;
- timestamp ties between statuses and messages;
- `--mixed-site-ids`: alphanumeric site ids of mixed length, some integer site ids;
- `--bad-rate`: a fraction of broken lines of every rejected class.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import uuid

CHUNK = 50_000
BASE_TS = 1_429_000_000
TEXTS = [
    "Hi, how's it going",
    "Is anyone there?",
    "I need help with my order #4411",
    "Can I change my delivery address?",
    "Thanks!",
    "What are your opening hours on weekends?",
    "héllo — ünïcode ✓",
]
BAD_LINES = [
    b'{"id": "broken json',
    b'[1, 2, 3]',
    b'"just a string"',
    b'{"id":"","from":"v1","type":"message","site_id":"1","data":{},"timestamp":1}',
    b'{"id":"x-missing-from","type":"message","site_id":"1","data":{},"timestamp":1}',
    b'{"id":"x-bad-ts","from":"v1","type":"message","site_id":"1","data":{},"timestamp":"1"}',
    b'{"id":"x-bool-ts","from":"v1","type":"message","site_id":"1","data":{},"timestamp":true}',
    b'{"id":"x-nan","from":"v1","type":"message","site_id":"1","data":{},"timestamp":NaN}',
    b'{"id":"x-type","from":"v1","type":"chat","site_id":"1","data":{},"timestamp":1}',
    b'{"id":"x-status","from":"o1","type":"status","site_id":"1","data":{"status":"away"},"timestamp":1}',
    b'{"id":"x-site","from":"v1","type":"message","site_id":1.5,"data":{},"timestamp":1}',
    b'{"id":"x-utf8","from":"v1","type":"message","site_id":"1","data":{"message":"\xff\xfe"},"timestamp":1}',
]


def site_names(rng: random.Random, n: int, mixed: bool) -> list[str | int]:
    if not mixed:
        return [str(100 + i) for i in range(n)]
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    out: list[str | int] = []
    seen = set()
    while len(out) < n:
        roll = rng.random()
        if roll < 0.2:
            name: str | int = rng.randint(0, 10 ** rng.randint(1, 7))  # integer site_id
        else:
            name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        if str(name) not in seen:
            seen.add(str(name))
            out.append(name)
    return out


class Generator:
    def __init__(self, args: argparse.Namespace):
        self.rng = random.Random(args.seed)
        self.args = args
        self.sites = site_names(self.rng, args.sites, args.mixed_site_ids)
        n_status_only = max(1, len(self.sites) // 20)
        self.status_only = set(range(len(self.sites) - n_status_only, len(self.sites)))
        self.online: dict[tuple[int, int], bool] = {}
        self.reservoir: list[bytes] = []  # old lines to duplicate much later
        self.clock = float(BASE_TS)

    def record(self) -> dict:
        rng = self.rng
        self.clock += rng.random() * self.args.seconds_per_line
        ts: float = int(self.clock) if rng.random() < 0.97 else round(self.clock, 3)
        site = rng.randrange(len(self.sites))
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        if rng.random() < 0.01:
            rid = rid.upper() if rng.random() < 0.5 else f"evt-{rng.getrandbits(40):x}"
        if site in self.status_only or rng.random() < self.args.status_rate:
            op = rng.randrange(self.args.operators)
            if rng.random() < 0.1:
                status = "offline" if rng.random() < 0.5 else "online"  # repeats and strays
            else:
                status = "offline" if self.online.get((site, op)) else "online"
            self.online[(site, op)] = status == "online"
            return {"id": rid, "from": f"operator{op}", "type": "status",
                    "site_id": self.sites[site], "data": {"status": status},
                    "timestamp": ts}
        visitor = rng.randrange(self.args.visitors)
        return {"id": rid, "from": f"visitor{visitor}", "type": "message",
                "site_id": self.sites[site], "data": {"message": rng.choice(TEXTS)},
                "timestamp": ts}

    def chunk(self, n: int) -> list[bytes]:
        rng, args = self.rng, self.args
        out: list[bytes] = []
        while len(out) < n:
            rec = self.record()
            line = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()
            out.append(line)
            roll = rng.random()
            if roll < args.dup_rate:
                out.append(line)  # near duplicate
            elif roll < args.dup_rate * 2 and self.reservoir:
                out.append(self.reservoir[rng.randrange(len(self.reservoir))])  # far dup
            if args.conflicting_dups and rng.random() < 0.002:
                other = dict(rec, timestamp=rec["timestamp"] + rng.randint(-500, 500),
                             site_id=self.sites[rng.randrange(len(self.sites))])
                out.append(json.dumps(other, separators=(",", ":")).encode())
            if rng.random() < 0.01:
                if len(self.reservoir) < 5000:
                    self.reservoir.append(line)
                else:
                    self.reservoir[rng.randrange(5000)] = line
            if args.bad_rate and rng.random() < args.bad_rate:
                out.append(rng.choice(BAD_LINES))
            if rng.random() < 0.0005:
                out.append(rng.choice([b"", b"   ", b"\t"]))
        rng.shuffle(out)
        return out[:n]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=100_000, help="lines to write")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--output", default="-", help="file to write, - for stdout")
    p.add_argument("--sites", type=int, default=200)
    p.add_argument("--operators", type=int, default=8, help="operators per site")
    p.add_argument("--visitors", type=int, default=50_000, help="visitor pool size")
    p.add_argument("--status-rate", type=float, default=0.15)
    p.add_argument("--dup-rate", type=float, default=0.03)
    p.add_argument("--seconds-per-line", type=float, default=0.5)
    p.add_argument("--mixed-site-ids", action="store_true")
    p.add_argument("--conflicting-dups", action="store_true")
    p.add_argument("--bad-rate", type=float, default=0.0)
    p.add_argument("--crlf", action="store_true", help="end lines with \\r\\n")
    p.add_argument("--bom", action="store_true", help="start with a UTF-8 BOM")
    p.add_argument("--no-final-newline", action="store_true")
    args = p.parse_args(argv)
    gen = Generator(args)
    out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")
    eol = b"\r\n" if args.crlf else b"\n"
    try:
        if args.bom:
            out.write(b"\xef\xbb\xbf")
        left = args.lines
        carry: list[bytes] = []  # lines moved into a later chunk: out of order far apart
        while left > 0:
            lines = gen.chunk(min(CHUNK, left))
            moved = carry
            carry = [lines.pop() for _ in range(min(len(lines) // 100, len(lines) - 1))]
            lines.extend(moved)
            gen.rng.shuffle(lines)
            lines = lines[:left] if left < len(lines) else lines
            left -= len(lines)
            if left <= 0 and args.no_final_newline:
                out.write(eol.join(lines))
            else:
                out.write(eol.join(lines) + eol)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
