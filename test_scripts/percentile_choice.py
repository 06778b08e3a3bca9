#!/usr/bin/env python3
"""The measurement behind aggregate's percentile: exact values against sketches.

    python test_scripts/percentile_choice.py                 # 10M lognormal latencies
    python test_scripts/percentile_choice.py --values 1000000 --pieces 16

For one group of N values (latencies, lognormal), split into --pieces partial states
as map tasks and checkpoints split them, it prints for p50, p95 and p99:

- exact: the nearest-rank value (numpy, all N values held: 8 bytes each, sorted);
- sluice: aggregate's state (stages/aggregate_sketches.py) made whole, and merged from
  the pieces in two orders: the answers, their error against exact, the state's bytes;
- kll: Apache DataSketches' KLL sketch (k=200), if the `datasketches` package is
  installed, made twice from the same pieces: whether its answers repeat.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from stages import aggregate_sketches as sk  # noqa: E402

PERCENTILES = (50, 95, 99)


def state_bytes(state: list) -> int:
    if state[4] is not None:
        return len(state[4])
    return state[5].nbytes + state[6].nbytes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=10_000_000)
    ap.add_argument("--pieces", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    values = np.round(rng.lognormal(4, 1.1, args.values), 3)  # milliseconds
    pieces = np.array_split(values, args.pieces)

    start = time.perf_counter()
    ranked = np.sort(values)
    exact = {p: ranked[sk.rank_of(Fraction(p), len(values)) - 1] for p in PERCENTILES}
    print(f"exact : {time.perf_counter() - start:.2f} s, {values.nbytes / 2**20:.0f} MB held: "
          + ", ".join(f"p{p} {exact[p]:g}" for p in PERCENTILES))

    start = time.perf_counter()
    whole = sk.quantile_state(values, False)
    took = time.perf_counter() - start
    merged = []
    for order in (pieces, pieces[::-1]):
        state = sk.quantile_state(order[0], False)
        for piece in order[1:]:
            sk.merge_quantiles(state, sk.quantile_state(piece, False))
        merged.append(state)
    answers = [[sk.quantile(s, Fraction(p)) for p in PERCENTILES] for s in [whole, *merged]]
    print(f"sluice: {took:.2f} s, {state_bytes(whole):,} bytes of state; the same from "
          f"{args.pieces} pieces in two orders: {answers[0] == answers[1] == answers[2]}")
    for p, got in zip(PERCENTILES, answers[0]):
        print(f"        p{p} {got:g} (error {got / exact[p] - 1:+.4%}; bound "
              f"{sk.ALPHA:.0%})")

    try:
        import datasketches
    except ImportError:
        print("kll   : not measured (pip install datasketches)")
        return 0
    runs = []
    for _ in range(2):
        sketch = datasketches.kll_doubles_sketch(200)
        for piece in pieces:
            part = datasketches.kll_doubles_sketch(200)
            part.update(piece)
            sketch.merge(part)
        runs.append([sketch.get_quantile(p / 100) for p in PERCENTILES])
    print(f"kll   : {len(sketch.serialize()):,} bytes; two runs of the same pieces: "
          + "; ".join(" ".join(f"p{p} {v:g}" for p, v in zip(PERCENTILES, run)) for run in runs)
          + f"; the same: {runs[0] == runs[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
