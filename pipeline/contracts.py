"""Stage contracts, checked at load: which kinds of records flow along each connection
and whether every stage accepts what the stage before it produces (see
pipeline.stage.KINDS); which fields those records have, where the config tells, and
whether a stage asks for one they lack; and where the outputs write, so that two
never write one file (or both standard output), and none writes onto the input."""
from __future__ import annotations

import difflib
import os
from typing import Any, Protocol

from pipeline.errors import ConfigError
from pipeline.stage import ANY, SAME, Fields, Role



class StageSpec(Protocol):
    """What these checks read of a configured stage (pipeline.config.StageSpec)."""

    name: str
    cls: type[Any]
    options: dict[str, Any]
    line: int
    branch: str | None


class PipelineConfig(Protocol):
    """What these checks read of a config (pipeline.config.PipelineConfig): the config
    module uses them, so they name only what they need."""

    path: str
    stages: list[Any]
    trunk: list[int]
    branches: dict[str, list[int]]


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
    return _walk(cfg, lambda spec, given: spec.cls.output_kind(spec.options, given), ANY)


def given_kinds(cfg: PipelineConfig) -> dict[int, str]:
    """The kind of records each stage but the input is given (by index)."""
    produced = edge_kinds(cfg)
    return {i: produced[before] for before, i in _pairs(cfg)}


def feeds_columns(cfg: PipelineConfig) -> dict[int, bool]:
    """Whether a stage (by index) that can pass on records as columns or as a list
    should pass columns: when every stage after it, to the outputs, takes them
    (`columnar`: no conversion back to records on the way), and one of them gains
    more from them than their making costs (`prefers_columns`)."""
    after: dict[int, list[int]] = {}
    for before, i in _pairs(cfg):
        after.setdefault(before, []).append(i)
    to_end: dict[int, bool] = {}  # it and every stage after it take columns
    gains: dict[int, bool] = {}  # it or a stage after it prefers columns
    out: dict[int, bool] = {}
    for i in range(len(cfg.stages) - 1, -1, -1):  # a stage's consumers come after it
        cls, nexts = cfg.stages[i].cls, after.get(i, [])
        out[i] = bool(nexts) and all(to_end[j] for j in nexts) and any(gains[j] for j in nexts)
        to_end[i] = getattr(cls, "columnar", False) and all(to_end[j] for j in nexts)
        gains[i] = getattr(cls, "prefers_columns", False) or any(gains[j] for j in nexts)
    return out


def fields_needed(cfg: PipelineConfig) -> dict[int, tuple[str, ...] | None]:
    """For each stage (by index): the top-level fields of the records it emits that a
    stage after it reads (Stage.reads), sorted; None where one may read any. A stage
    that passes records on (`SAME`) adds what the stages after it read; one that makes
    records of its own (count, aggregate) ends what its input's fields matter to."""
    after: dict[int, list[int]] = {}
    for before, i in _pairs(cfg):
        after.setdefault(before, []).append(i)
    out: dict[int, tuple[str, ...] | None] = {}
    for i in range(len(cfg.stages) - 1, -1, -1):  # a stage's consumers come after it
        need: set[str] | None = set()
        for j in after.get(i, []):
            spec = cfg.stages[j]
            own = spec.cls.reads(spec.options)
            more = out[j] if spec.cls.produces == SAME else ()
            if own is None or more is None or need is None:
                need = None
                break
            need.update(name.split(".")[0] for name in own)
            need.update(more)
        out[i] = None if need is None else tuple(sorted(need))
    return out


def check_kinds(cfg: PipelineConfig) -> None:
    """Each stage accepts what the stage before it produces, or the config is refused."""
    produced = edge_kinds(cfg)
    for before, i in _pairs(cfg):
        spec, prev = cfg.stages[i], cfg.stages[before]
        kind, accepts = produced[before], spec.cls.accepts
        where = f"{cfg.split} branch {spec.branch!r}: " if spec.branch else ""
        if kind == ANY or ANY in accepts or kind in accepts:
            problem = spec.cls.check_kind(spec.options, kind)
            if problem:
                raise ConfigError(f"{where}stage {spec.name!r}: {problem} (from "
                                  f"{_producer(prev)})", cfg.path, spec.line)
            continue
        raise ConfigError(f"{where}stage {spec.name!r} accepts {_kinds_text(accepts)} "
                          f"records, but {_producer(prev)} produces {kind} records",
                          cfg.path, spec.line)


def _walk(cfg: PipelineConfig, step: Any, start: Any) -> dict[int, Any]:
    """`step(spec, given) -> emitted` along the trunk, then along each fork branch."""
    out: dict[int, Any] = {}

    def walk(idx: list[int], given: Any) -> Any:
        for i in idx:
            given = out[i] = step(cfg.stages[i], given)
        return given
    at_fork = walk(cfg.trunk, start)
    for idx in cfg.branches.values():
        walk(idx, at_fork)
    return out


def edge_fields(cfg: PipelineConfig) -> dict[int, Fields]:
    """The fields of the records each stage emits (by index), None where unknown."""
    return _walk(cfg, lambda spec, given: spec.cls.output_fields(spec.options, given), None)


def check_fields(cfg: PipelineConfig) -> None:
    """Each stage that reads fields finds them, where the fields are known."""
    fields, kinds = edge_fields(cfg), edge_kinds(cfg)
    for before, i in _pairs(cfg):
        spec, given = cfg.stages[i], fields[before]
        if given is None:
            continue
        problem = spec.cls.check_fields(spec.options, given, kinds[before])
        if problem:
            where = f"{cfg.split} branch {spec.branch!r}: " if spec.branch else ""
            raise ConfigError(f"{where}stage {spec.name!r}: {problem}, the fields of the "
                              f"records {_producer(cfg.stages[before])} produces",
                              cfg.path, spec.line)


def missing_fields(wanted: list[str], given: tuple[str, ...]) -> str | None:
    """'column x is not ...' for the first name that none of `given` can provide (a
    dotted name may reach into a known field, or be the object above one), or None."""
    for name in wanted:
        if name in given or any(name.startswith(f + ".") or f.startswith(name + ".")
                                for f in given):
            continue
        close = difflib.get_close_matches(name, given, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{name!r}{hint} is not among {', '.join(given)}"
    return None


def _pairs(cfg: PipelineConfig) -> list[tuple[int, int]]:
    pairs = list(zip(cfg.trunk, cfg.trunk[1:]))
    for idx in cfg.branches.values():
        pairs += [(cfg.trunk[-1], idx[0])] + list(zip(idx, idx[1:]))
    return pairs


def check_destinations(cfg: PipelineConfig) -> None:
    """No two outputs write one file, or both standard output, and none writes onto
    the input: they would interleave, or destroy what the other (or the input) holds."""
    seen: dict[str, StageSpec] = {}
    source = cfg.stages[cfg.trunk[0]]
    inputs = source.options.get("path")
    for path in inputs if isinstance(inputs, list) else [inputs]:
        if isinstance(path, str) and path != "-":
            seen[_key(path)] = source
    for spec in cfg.stages:
        if spec.cls.role is not Role.OUTPUT:
            continue
        for dest in spec.cls.destinations(spec.options):
            key = _key(dest)
            other = seen.setdefault(key, spec)
            if other is spec:
                continue
            where = f"{cfg.split} branch {spec.branch!r}: " if spec.branch else ""
            them = f"stage {other.name!r}" + (f" in {cfg.split} branch {other.branch!r}"
                                               if other.branch else "")
            if other.cls.role is Role.INPUT:
                why = f"{dest} is the input of {them} (line {other.line}): writing it " \
                      f"would destroy what is being read"
            elif dest == "-":
                why = f"it writes standard output, and so does {them} (line {other.line}): " \
                      f"their lines would be interleaved; write one of them to a file"
            else:
                why = f"it writes {dest}, and so does {them} (line {other.line}): one " \
                      f"would overwrite the other; give each output its own path"
            raise ConfigError(f"{where}stage {spec.name!r}: {why}", cfg.path, spec.line)


def _key(path: str) -> str:
    return "-" if path == "-" else os.path.normcase(os.path.realpath(path))
