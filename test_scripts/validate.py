#!/usr/bin/env python3
"""Compare two site summaries field by field.

    python test_scripts/validate.py expected.txt actual.txt

Prints every site that is missing on one side or differs in any field, and exits 1
on any difference (2 if a file cannot be read or parsed), 0 when they are identical.
"""
from __future__ import annotations

import sys

FIELDS = ("messages", "emails", "operators", "visitors")


def parse_summary(path: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """{site: {field: value}} and a list of format problems."""
    sites: dict[str, dict[str, str]] = {}
    problems = []
    order = []
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):
        problems.append(f"{path}: last line does not end in \\n")
    for n, line in enumerate(text.splitlines(), 1):
        site, *pairs = line.rsplit(",", 4)
        try:
            values = dict(p.split("=", 1) for p in pairs)
        except ValueError:
            values = {}
        if list(values) != list(FIELDS):
            problems.append(f"{path}:{n}: not a summary line: {line!r}")
            continue
        if site in sites:
            problems.append(f"{path}:{n}: site {site!r} appears twice")
        sites[site] = values
        order.append(site)
    if order != sorted(order):
        problems.append(f"{path}: lines are not sorted by site_id")
    return sites, problems


def compare(a_path: str, b_path: str) -> list[str]:
    a, pa = parse_summary(a_path)
    b, pb = parse_summary(b_path)
    diffs = pa + pb
    for site in sorted(a.keys() | b.keys()):
        if site not in b:
            diffs.append(f"site {site!r}: only in {a_path}")
        elif site not in a:
            diffs.append(f"site {site!r}: only in {b_path}")
        else:
            for f in FIELDS:
                if a[site][f] != b[site][f]:
                    diffs.append(f"site {site!r}: {f} {a[site][f]} != {b[site][f]}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: validate.py EXPECTED ACTUAL", file=sys.stderr)
        return 2
    try:
        diffs = compare(*args)
    except OSError as exc:
        print(f"validate: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    for d in diffs:
        print(d)
    if diffs:
        print(f"{len(diffs)} difference(s)", file=sys.stderr)
        return 1
    print("identical", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
