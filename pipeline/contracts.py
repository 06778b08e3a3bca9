"""Stage contracts: which kinds of records flow along each connection, and whether
every stage accepts what the stage before it produces (see pipeline.stage.KINDS)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError
from .stage import ANY

if TYPE_CHECKING:  # config.py imports this module
    from .config import PipelineConfig, StageSpec


def _kinds_text(kinds: tuple[str, ...]) -> str:
    words = list(kinds)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _producer(spec: StageSpec) -> str:
    """`'json-decode' (schema: object)`: a stage, with the options that set its output."""
    shown = [f"{k}: {spec.options[k]}" for k in getattr(spec.cls, "kind_options", ())
             if k in spec.options]
    return f"{spec.name!r}" + (f" ({', '.join(shown)})" if shown else "")


def edge_kinds(cfg: PipelineConfig) -> dict[int, str]:
    """The kind of records each stage emits (by index), following options and forks."""
    out: dict[int, str] = {}

    def walk(idx: list[int], given: str) -> str:
        for i in idx:
            spec = cfg.stages[i]
            given = out[i] = spec.cls.output_kind(spec.options, given)
        return given
    at_fork = walk(cfg.trunk, ANY)
    for idx in cfg.branches.values():
        walk(idx, at_fork)
    return out


def check_kinds(cfg: PipelineConfig) -> None:
    """Each stage accepts what the stage before it produces, or the config is refused."""
    produced = edge_kinds(cfg)
    pairs = list(zip(cfg.trunk, cfg.trunk[1:]))
    for idx in cfg.branches.values():
        pairs += [(cfg.trunk[-1], idx[0])] + list(zip(idx, idx[1:]))
    for before, i in pairs:
        spec, prev = cfg.stages[i], cfg.stages[before]
        kind, accepts = produced[before], spec.cls.accepts
        if kind == ANY or ANY in accepts or kind in accepts:
            continue
        where = f"fork branch {spec.branch!r}: " if spec.branch else ""
        raise ConfigError(f"{where}stage {spec.name!r} accepts {_kinds_text(accepts)} "
                          f"records, but {_producer(prev)} produces {kind} records",
                          cfg.path, spec.line)
