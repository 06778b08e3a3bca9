"""What a run is asked to do: the command line's options, and their defaults."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.config import PipelineConfig

DEFAULT_STATE_DIR = ".pipeline-state"
DEFAULT_EVERY_RECORDS = 1_000_000
DEFAULT_EVERY_SECONDS = 30.0
DEFAULT_MEMORY_MB = 512
DEFAULT_EMIT_SECONDS = 10.0     # --follow: how often the current result is shown


@dataclass
class JobOptions:
    state_dir: str = DEFAULT_STATE_DIR
    dead_letter: str | None = None   # default: STATE_DIR/dead_letter.jsonl
    strict: bool = False
    checkpoint: bool | None = None   # None: the config decides (default on)
    every_records: int | None = None
    every_seconds: float | None = None
    fresh: bool = False
    discard: bool = False            # start over without --fresh's notice (the engine's)
    workers: int | None = None       # None: the config's `workers`, else one per CPU
    memory_mb: int | None = None     # None: the config's `memory_mb`, else 512
    emit_every: float | None = None  # --follow: seconds between emissions; None: config / 10
    progress: bool = False           # draw a progress bar on stderr
    executor: str | None = None      # an executor's name; None: the config's, else local
    executor_options: dict[str, Any] = field(default_factory=dict)  # its command-line flags
    notify: Callable[[str], None] = lambda text: print(f"sluice: {text}", file=sys.stderr)

    @property
    def dead_letter_path(self) -> str:
        return self.dead_letter or os.path.join(self.state_dir, "dead_letter.jsonl")


def checkpoint_enabled(cfg: PipelineConfig, opts: JobOptions) -> bool:
    return opts.checkpoint if opts.checkpoint is not None else cfg.checkpoint.get("enabled", True)


def every(cfg: PipelineConfig, opts: JobOptions) -> tuple[int, float]:
    return (opts.every_records or cfg.checkpoint.get("every_records", DEFAULT_EVERY_RECORDS),
            opts.every_seconds or cfg.checkpoint.get("every_seconds", DEFAULT_EVERY_SECONDS))
