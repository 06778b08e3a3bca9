#!/usr/bin/env python3
"""Generate an nginx/Apache combined access log (for grok's benchmark and tests).

    python test_scripts/generate_access.py --lines 1000000 -o access.log

Lines are in time order, one to a few a second, from --clients distinct clients (IPv4,
some IPv6), with realistic methods, paths (some non-ASCII, some with query strings),
statuses, sizes (`-` for a 304), referrers and user agents (some with escaped quotes);
--bad-every N makes every N-th line one no access-log pattern matches.
"""
from __future__ import annotations

import argparse
import random
import sys
import time

AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15",
    "curl/8.4.0", "python-requests/2.31.0", "Wget/1.21.4",
    'Mozilla/5.0 (compatible; \\"Bot\\"; +https://example.com/bot)', "-",
]
PATHS = ["/", "/index.html", "/api/orders", "/api/orders/{n}", "/static/app.{n}.js",
         "/search?q=caf%C3%A9&page={n}", "/café/menü", "/images/logo.png", "/login",
         "/api/users/{n}/profile"]
METHODS = ["GET"] * 8 + ["POST", "PUT", "DELETE", "HEAD"]
STATUSES = [200] * 20 + [201, 204, 301, 302, 304, 304, 400, 401, 403, 404, 404, 500, 502, 503]
REFERRERS = ["-", "-", "https://example.com/", "https://www.google.com/search?q=shop",
             "https://example.com/index.html"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bad-every", type=int, default=0)
    ap.add_argument("-o", "--output", default="-")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")
    t = 1791640800  # 2026-10-10 14:00:00 UTC
    chunk: list[str] = []
    for i in range(args.lines):
        t += rng.choice((0, 0, 1, 1, 2))
        if args.bad_every and i % args.bad_every == args.bad_every - 1:
            chunk.append(f"upstream timed out (110: Connection timed out) while reading {i}")
            continue
        c = rng.randrange(args.clients)
        client = (f"2001:db8:{c % 65536:x}::{c // 65536 + 1:x}" if c % 10 == 0 else
                  f"{10 + c % 200}.{c // 200 % 256}.{c // 51200 % 256}.{c % 251 + 1}")
        status = rng.choice(STATUSES)
        size = "-" if status == 304 else str(rng.randint(0, 90000))
        path = rng.choice(PATHS).format(n=rng.randint(1, 9999))
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t))
        user = "-" if rng.random() < 0.97 else f"user{rng.randint(1, 99)}"
        chunk.append(f'{client} - {user} [{stamp}] "{rng.choice(METHODS)} {path} HTTP/1.1" '
                     f'{status} {size} "{rng.choice(REFERRERS)}" "{rng.choice(AGENTS)}"')
        if len(chunk) >= 10000:
            out.write(("\n".join(chunk) + "\n").encode())
            chunk = []
    if chunk:
        out.write(("\n".join(chunk) + "\n").encode())
    if out is not sys.stdout.buffer:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
