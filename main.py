#!/usr/bin/env python3
"""Sluice command line.

    python main.py -c configs/summary.yaml -f input.jsonl     # run (the default verb)
    python main.py stages [NAME]                              # the stage catalogue
    python main.py validate -c CONFIG                         # check without running
    python main.py graph -c CONFIG [--mermaid]                # show the chain
    python main.py test PATH...                               # run *_test.yaml cases

Exit codes: 0 ok, 1 rejected line under --strict (or a failed `test` case),
2 usage/config/input/path error, a file that cannot be written (a rerun resumes), or a
checkpoint that could not be written under --strict-checkpoints, 130 interrupted,
141 standard output closed by its reader (as with `| head`: a shell reports 141 for a
tool killed by SIGPIPE; nothing is printed, and a checkpoint is written first).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pipeline import SluiceError
from pipeline.config import load_config, max_workers, override_option
from pipeline.engine import progress
from pipeline.engine.job import run_job
from pipeline.engine.metrics import Endpoint
from pipeline.engine.options import (DEFAULT_EVERY_RECORDS, DEFAULT_EVERY_SECONDS,
                                     DEFAULT_MEMORY_MB, DEFAULT_STATE_DIR, JobOptions)
from pipeline.errors import (EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Interrupted, OutputClosed,
                             PathError, reason, writable_problem)
from pipeline.executors import builtin_executors, resolve
from pipeline.registry import Registry
from pipeline.tools.describe import chain_text, graph_mermaid, graph_text, list_stages, show_stage
from pipeline.tools.testcases import check_paths
from stages import builtin_stages

EPILOG = ("exit codes: 0 ok, 1 rejected line under --strict (or a failed test case, or a "
          "worker process that died), 2 usage/config/input/path error, a file that cannot "
          "be written (rerun to resume), or a failed checkpoint under --strict-checkpoints, "
          "130 interrupted (SIGINT), 141 standard output closed by its reader (e.g. `| "
          "head`; quiet, checkpointed), 143 stopped by SIGTERM")
VERBS = ("run", "stages", "validate", "graph", "test", "replay")


def build_registry(warn: bool = False) -> Registry:
    """Built-ins first, then plugins from the `sluice.stages` entry points."""
    registry = Registry()
    registry.register_all(builtin_stages(), origin="sluice (built-in)")
    for problem in registry.discover():
        if warn:
            print(f"sluice: warning: {problem}", file=sys.stderr)
    return registry


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake as one line (exit 2) instead of the usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SluiceError(f"{self.prog}: {message} (see `python {self.prog} -h`)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def worker_count(text: str) -> int:
    value = positive_int(text)
    if value > max_workers():
        raise argparse.ArgumentTypeError(f"must be at most {max_workers()} (4 per CPU, "
                                         f"{os.cpu_count() or 1} here), got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 1 to 65535, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="main.py", description="Run a Sluice YAML pipeline. Other verbs: "
        "stages, validate, graph, test, replay (see `main.py VERB -h`).", epilog=EPILOG)
    p.add_argument("-c", "--config", required=True, help="pipeline YAML file")
    p.add_argument("-f", "--file", help="input path (overrides the input stage's `path`)")
    p.add_argument("-w", "--workers", type=worker_count, metavar="N",
                   help="worker processes (default: the config's `workers`, else one per "
                        "CPU for inputs over 32 MiB each)")
    p.add_argument("--dead-letter", metavar="PATH",
                   help="where rejected lines go (default STATE_DIR/dead_letter.jsonl)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"checkpoints and dead letters (default {DEFAULT_STATE_DIR}/)")
    p.add_argument("--strict", action="store_true",
                   help="stop with exit 1 at the first rejected line")
    p.add_argument("--stats", action="store_true",
                   help="print per-stage records in/out, rejects and seconds at the end")
    p.add_argument("--stats-json", metavar="PATH", help="write the per-stage metrics as JSON")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (it is only drawn when stderr is a terminal)")
    p.add_argument("--memory-mb", type=positive_int, metavar="N",
                   help=f"memory budget of the whole run, all processes together "
                        f"(default: the config's `memory_mb`, else {DEFAULT_MEMORY_MB})")
    p.add_argument("--metrics-port", type=port_number, metavar="N",
                   help="serve Prometheus metrics on http://HOST:N/metrics while the run "
                        "lasts (HOST: the config's `metrics.host`, else 127.0.0.1)")
    fo = p.add_argument_group("following a growing log")
    fo.add_argument("--follow", action="store_true",
                    help="after the end of the input, keep reading lines appended to it, "
                         "until SIGINT or SIGTERM (same as `follow: true` on file-input)")
    fo.add_argument("--emit-every", type=positive_float, metavar="SECONDS",
                    help="with --follow, show the current result every SECONDS while new "
                         "lines arrive (default: the config's `emit`, else 10)")
    ex = p.add_argument_group("executors")
    builtin = builtin_executors()
    ex.add_argument("--executor", choices=[e.name for e in builtin],
                    help="local processes (default) or a Dask cluster")
    for flag, opt in executor_flags(builtin).items():  # each executor's own options
        ex.add_argument(flag, dest=f"x_{opt.name}", type=positive_int if opt.type is int
                        else str, metavar="N" if opt.type is int else "VALUE",
                        help=opt.doc + ("" if opt.default in (None, ...)
                                        else f" (default {opt.default})"))
    ck = p.add_argument_group("checkpoints (on by default)")
    ck.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                    help=f"checkpoint every N records (default {DEFAULT_EVERY_RECORDS:,}, "
                         f"or every {DEFAULT_EVERY_SECONDS:g} s, whichever comes first)")
    ck.add_argument("--no-checkpoint", action="store_true",
                    help="neither resume from nor write checkpoints")
    ck.add_argument("--fresh", action="store_true",
                    help="discard the saved state for this config and input first")
    ck.add_argument("--strict-checkpoints", action="store_true",
                    help="exit 2 if any checkpoint could not be written (the run still "
                         "finishes; default: a warning, exit 0)")
    return p


def executor_flags(executors: list[Any]) -> dict[str, Any]:
    """`--scheduler`, `--partition-mb`: a flag for each option of the built-in executors."""
    return {f"--{o.name.replace('_', '-')}": o for e in executors for o in e.options}


def cmd_run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    cfg = load_config(args.config, build_registry(warn=True))
    if args.file is not None:
        override_option(cfg, 0, "path", args.file, "-f")
    if args.follow:
        override_option(cfg, 0, "follow", True, "--follow")
    problem = args.stats_json and writable_problem(args.stats_json)
    if problem:  # before the run, not after it
        raise PathError(f"--stats-json {args.stats_json}: {problem}")
    opts = JobOptions(state_dir=args.state_dir, dead_letter=args.dead_letter,
                      strict=args.strict, fresh=args.fresh,
                      checkpoint=False if args.no_checkpoint else None,
                      every_records=args.checkpoint_every, workers=args.workers,
                      memory_mb=args.memory_mb, emit_every=args.emit_every,
                      progress=progress.wanted(args.quiet), executor=args.executor,
                      executor_options={k[2:]: v for k, v in vars(args).items()
                                        if k.startswith("x_") and v is not None})
    resolve(cfg, opts.executor, opts.executor_options)  # its options checked before work
    with Endpoint(args.metrics_port or cfg.metrics.get("port"),
                  cfg.metrics.get("host", "127.0.0.1")):
        report = run_job(cfg, opts)
    if args.stats:
        print(report.stats_table(), file=sys.stderr)
    if args.stats_json:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.stats_json)), exist_ok=True)
            with open(args.stats_json, "w", encoding="utf-8") as fh:
                json.dump({"stages": report.stages, "counters": report.counters,
                           "rejected": report.rejected}, fh, indent=2)
                fh.write("\n")
        except OSError as exc:
            raise SluiceError(f"cannot write --stats-json {args.stats_json!r}: "
                              f"{exc.strerror}") from None
    print(f"sluice: {report.summary_line()}", file=sys.stderr)
    failed = report.checkpoint_failures
    if failed and (args.strict_checkpoints or cfg.checkpoint.get("strict", False)):
        print(f"sluice: error: {failed:,} checkpoint{'s' if failed > 1 else ''} could not "
              f"be written (see the warning above); the output is complete, but a killed "
              f"run would have resumed from further back (--strict-checkpoints)",
              file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def cmd_stages(argv: list[str]) -> int:
    p = Parser(prog="main.py stages", epilog=EPILOG,
                                description="List every stage, or show one in detail.")
    p.add_argument("name", nargs="?", help="a stage to describe")
    args = p.parse_args(argv)
    registry = build_registry(warn=True)
    print(show_stage(registry, args.name) if args.name else list_stages(registry),
          end="" if args.name else "\n")
    return EXIT_OK


def cmd_validate(argv: list[str]) -> int:
    p = Parser(prog="main.py validate", epilog=EPILOG,
               description="Check a config (options, types, wiring) without running it.")
    config = _config_argument(p, argv)
    cfg = load_config(config, build_registry(warn=True))
    resolve(cfg)
    print(f"{config}: ok ({chain_text(cfg)})")
    return EXIT_OK


def _config_argument(p: Parser, argv: list[str], **more: Any) -> Any:
    """`-c CONFIG` or a positional CONFIG, as `main.py test PATH` takes it: the config
    path (and the parsed arguments, when more options were added to `p`)."""
    p.add_argument("config", nargs="?", metavar="CONFIG", help="pipeline YAML file")
    p.add_argument("-c", "--config", dest="config_opt", metavar="CONFIG",
                   help="pipeline YAML file (the same as CONFIG)")
    args = p.parse_args(argv)
    if (args.config is None) == (args.config_opt is None):
        p.error("give the config once: CONFIG or -c CONFIG")
    config = args.config or args.config_opt
    return (config, args) if more.get("with_args") else config


def cmd_graph(argv: list[str]) -> int:
    p = Parser(prog="main.py graph", epilog=EPILOG, description="Print the chain of a config.")
    p.add_argument("--mermaid", action="store_true", help="as a Mermaid flowchart")
    config, args = _config_argument(p, argv, with_args=True)
    cfg = load_config(config, build_registry(warn=True))
    print(graph_mermaid(cfg) if args.mermaid else graph_text(cfg), end="")
    return EXIT_OK


def cmd_test(argv: list[str]) -> int:
    p = Parser(prog="main.py test", epilog=EPILOG,
                                description="Run pipeline unit tests: *_test.yaml files "
                                            "(or directories holding them).")
    p.add_argument("paths", nargs="+", metavar="PATH")
    args = p.parse_args(argv)
    return check_paths(args.paths, build_registry(warn=True))


def cmd_replay(argv: list[str]) -> int:
    from pipeline.engine.replay import replay
    p = Parser(prog="main.py replay", epilog=EPILOG,
               description="Feed a dead-letter file's raw lines back through a (fixed) "
                           "pipeline, into its database outputs, each line once.")
    p.add_argument("-c", "--config", required=True, help="pipeline YAML file")
    p.add_argument("--dead-letter", metavar="PATH",
                   help="the dead-letter file to replay (default STATE_DIR/dead_letter.jsonl)")
    p.add_argument("--since", type=positive_int, metavar="LINE",
                   help="only lines rejected at this input line or later")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"where the replay keeps its state and ledger (default "
                        f"{DEFAULT_STATE_DIR}/)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    cfg = load_config(args.config, build_registry(warn=True))
    opts = JobOptions(state_dir=args.state_dir, dead_letter=args.dead_letter,
                      progress=progress.wanted(args.quiet))
    done = replay(cfg, opts, args.since, run_job)
    if done.resumed:
        print("sluice: resumed the replay that did not finish", file=sys.stderr)
    if not done.lines:
        print(f"sluice: nothing to replay in {opts.dead_letter_path}"
              + (f" ({done.skipped:,} lines replayed before, or before --since)"
                 if done.skipped else ""), file=sys.stderr)
        return EXIT_OK
    print(f"sluice: {done.summary_line()}", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = "run"
    if argv and argv[0] in VERBS:
        verb = argv.pop(0)
    command = {"run": cmd_run, "stages": cmd_stages, "validate": cmd_validate,
               "graph": cmd_graph, "test": cmd_test, "replay": cmd_replay}[verb]
    try:
        code = command(argv)
        sys.stdout.flush()  # a reader gone away shows here, not as a warning at exit
        return code
    except Interrupted as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OutputClosed, BrokenPipeError):
        return _stdout_gone()
    except SluiceError as exc:
        print(f"sluice: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sluice: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a failure of the machine, not a bug: one line, no traceback
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"sluice: error: cannot use{where}: {reason(exc)}; once that is fixed, rerun "
              f"the same command to resume from the last good checkpoint", file=sys.stderr)
        return EXIT_USAGE


def _stdout_gone() -> int:
    """Standard output's reader went away (`| head`): end quietly, like a tool killed by
    SIGPIPE. Whatever is still buffered for stdout goes to /dev/null, so Python's flush
    at exit does not print "Exception ignored ... BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (a test's capture): nothing to flush
    return OutputClosed.exit_code


if __name__ == "__main__":
    sys.exit(main())
