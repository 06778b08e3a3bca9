#!/usr/bin/env python3
"""Sluice command line: `python main.py -c configs/summary.yaml -f input.jsonl`.

Exit codes: 0 ok, 1 rejected line under --strict, 2 usage/config/input error,
130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys

from pipeline import EXIT_INTERRUPTED, EXIT_OK, Registry, SluiceError, load_config
from pipeline import progress
from pipeline.config import override_option
from pipeline.job import (DEFAULT_EVERY_RECORDS, DEFAULT_EVERY_SECONDS, DEFAULT_STATE_DIR,
                          JobOptions, run_job)
from stages import builtin_stages


def build_registry() -> Registry:
    registry = Registry()
    registry.register_all(builtin_stages(), origin="sluice (built-in)")
    return registry


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py", description="Run a Sluice YAML pipeline.",
        epilog="exit codes: 0 ok, 1 rejected line under --strict, "
               "2 usage/config/input error, 130 interrupted")
    p.add_argument("-c", "--config", required=True, help="pipeline YAML file")
    p.add_argument("-f", "--file", help="input path (overrides the input stage's `path`)")
    p.add_argument("--dead-letter", metavar="PATH",
                   help="where rejected lines go (default STATE_DIR/dead_letter.jsonl)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"checkpoints and dead letters (default {DEFAULT_STATE_DIR}/)")
    p.add_argument("-w", "--workers", type=positive_int, metavar="N",
                   help="worker processes (default: the config's `workers`, else one per "
                        "CPU for inputs over 32 MiB each)")
    p.add_argument("--strict", action="store_true",
                   help="stop with exit 1 at the first rejected line")
    p.add_argument("--stats", action="store_true",
                   help="print per-stage records in/out, rejects and seconds at the end")
    p.add_argument("--stats-json", metavar="PATH", help="write the per-stage metrics as JSON")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (it is only drawn when stderr is a terminal)")
    ck = p.add_argument_group("checkpoints (on by default)")
    ck.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                    help=f"checkpoint every N records (default {DEFAULT_EVERY_RECORDS:,}, "
                         f"or every {DEFAULT_EVERY_SECONDS:g} s, whichever comes first)")
    ck.add_argument("--no-checkpoint", action="store_true",
                    help="neither resume from nor write checkpoints")
    ck.add_argument("--fresh", action="store_true",
                    help="discard the saved state for this config and input first")
    return p


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = load_config(args.config, build_registry())
        if args.file is not None:
            override_option(cfg, 0, "path", args.file, "-f")
        opts = JobOptions(state_dir=args.state_dir, dead_letter=args.dead_letter,
                          strict=args.strict, fresh=args.fresh,
                          checkpoint=False if args.no_checkpoint else None,
                          every_records=args.checkpoint_every, workers=args.workers,
                          progress=progress.wanted(args.quiet))
        report = run_job(cfg, opts)
    except SluiceError as exc:
        print(f"sluice: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sluice: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.stats:
        print(report.stats_table(), file=sys.stderr)
    if args.stats_json:
        with open(args.stats_json, "w", encoding="utf-8") as fh:
            json.dump({"stages": report.stages, "counters": report.counters,
                       "rejected": report.rejected}, fh, indent=2)
            fh.write("\n")
    print(f"sluice: {report.summary_line()}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
