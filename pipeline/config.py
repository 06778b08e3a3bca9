"""Load and check a YAML pipeline before anything runs.

    pipeline:
      - file-input: {path: input.jsonl}
      - json-decode: {schema: site-event}
      - site-state-reducer: {}
      - sorted-stdout-output: {}
    workers: 2
    checkpoint: {every_records: 1000000, every_seconds: 60}

Every error names the file and line (`yaml.compose` keeps a mark on every node) and,
for a misspelt name, the closest valid one.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeline.contracts import (check_destinations, check_fields, check_kinds, feeds_columns,
                                fields_needed, given_kinds)
from pipeline.errors import ConfigError
from pipeline.registry import Registry
from pipeline.stage import ANY, Option, Problem, Role, Stage
from pipeline.yamlsafe import YamlDoc

TOP_LEVEL = {
    "pipeline": "the stages, first an input, last an output",
    "workers": "worker processes for the partitioned part of the chain",
    "checkpoint": "{every_records: N, every_seconds: S, enabled: true, strict: false}",
    "executor": "{type: local | dask | package.module:Class, and the executor's options}",
    "memory_mb": "memory budget of the whole run, all processes together (default 512)",
    "emit": "{every_seconds: S}: how often a followed run shows its current result",
    "metrics": "{port: N, host: 127.0.0.1}: serve Prometheus metrics while the run lasts",
}  # and keys starting with `x-`, ignored: a place for YAML anchors used below
CHECKPOINT_KEYS = {"every_records": int, "every_seconds": (int, float), "enabled": bool,
                   "strict": bool}


_INSTANCES: dict[int, tuple["StageSpec", Stage]] = {}  # StageSpec.instance()'s, this process


@dataclass
class StageSpec:
    name: str
    cls: type[Stage]
    options: dict[str, Any]
    line: int
    option_lines: dict[str, int] = field(default_factory=dict)
    branch: str | None = None  # the fork branch it is in, if any
    given: str = ANY  # the kind of records it is given, as the loader worked it out
    feeds_columns: bool = False  # it passes on columns (contracts.feeds_columns)
    needed: tuple[str, ...] | None = None  # fields read after it (contracts.fields_needed)

    def build(self) -> Stage:
        """A new instance, for work that keeps state (a map task's stages, an output)."""
        stage = self.cls(**self.options)
        stage.given = self.given
        stage.feeds_columns = self.feeds_columns
        stage.needed = self.needed
        return stage

    def instance(self) -> Stage:
        """One instance per process, built on first use, for what needs none of its
        state: describing the input and splitting it, reducing buckets (a keyed
        reducer's reduce() works from its options alone)."""
        cached = _INSTANCES.get(id(self))
        if cached is None or cached[0] is not self:
            cached = _INSTANCES[id(self)] = (self, self.build())
        return cached[1]

    @property
    def label(self) -> str:
        """The stage's name, with its branch: `statuses/where`."""
        return self.name if self.branch is None else f"{self.branch}/{self.name}"


@dataclass
class PipelineConfig:
    """A checked pipeline. `stages` lists every stage: the trunk (input first), then each
    fork branch's stages in order; `trunk` and `branches` hold their indices in it."""

    path: str
    stages: list[StageSpec]
    workers: int | None = None
    memory_mb: int | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)  # checked by pipeline.executors
    executor_lines: dict[str, int] = field(default_factory=dict)
    emit: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # {port, host}: the endpoint
    text: str = ""
    trunk: list[int] = field(default_factory=list)
    branches: dict[str, list[int]] = field(default_factory=dict)
    fork_line: int | None = None
    split: str = "fork"  # `fork`, or `route` (a fork whose branches take some records)

    def identity(self) -> str:
        """Hash of everything that changes results: the stages, options and branches."""
        body = repr([(s.name, s.branch, sorted(s.options.items())) for s in self.stages])
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def build(self) -> list[Stage]:
        return [s.build() for s in self.stages]



def suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__


def _type_ok(value: Any, t: type | tuple[type, ...]) -> bool:
    types = t if isinstance(t, tuple) else (t,)
    if isinstance(value, bool) and bool not in types:
        return False  # YAML `yes` must not pass as an int
    if float in types and isinstance(value, int):
        return True
    return isinstance(value, types)


def check_option(stage: str, opt: Option, value: Any, owner: str = "stage") -> str | None:
    """Why `value` is not acceptable for `opt` of the stage (or other `owner`) named
    `stage`, or None."""
    if not _type_ok(value, opt.type):
        return (f"{owner} {stage!r}: option {opt.name!r} must be {_type_name(opt.type)}; "
                f"got {type(value).__name__} {value!r}")
    if opt.choices is not None and value not in opt.choices:
        return (f"{owner} {stage!r}: option {opt.name!r} must be one of "
                f"{', '.join(map(repr, opt.choices))}; got {value!r}"
                f"{suggest(str(value), opt.choices)}")
    if opt.check is not None:
        problem = opt.check(value)
        if problem:
            text = f"{owner} {stage!r}: option {opt.name!r} {problem}"
            if isinstance(problem, Problem):
                return Problem.at(text, problem.offset, problem.key)
            return text
    return None


Bound = tuple[float, float]
LIMITS: dict[str, Bound] = {  # value ranges of the top-level numbers; see max_workers()
    "memory_mb": (1, 1 << 24),            # up to 16 TiB
    "every_records": (1, 1 << 62),
    "every_seconds": (1e-3, 1_000_000_000),
}
WORKERS_PER_CPU = 4


def max_workers() -> int:
    """The most worker processes a run may ask for: 4 per CPU of this machine."""
    return WORKERS_PER_CPU * (os.cpu_count() or 1)


def number_problem(name: str, value: Any, kind: type | tuple[type, ...],
                   bounds: Bound) -> str | None:
    """Why `value` is not a number of `kind` within `bounds`, or None."""
    lo, hi = (f"{b:,}" if isinstance(b, int) else f"{b:g}" for b in bounds)
    what = "a whole number" if kind is int else "a number"
    if not _type_ok(value, kind) or (isinstance(value, float) and not math.isfinite(value)) \
            or not bounds[0] <= value <= bounds[1]:
        return f"`{name}` must be {what} from {lo} to {hi}; got {value!r}"
    return None


def workers_problem(value: Any, where: str = "`workers`") -> str | None:
    """Why a worker count cannot be used here, or None."""
    most = max_workers()
    if not _type_ok(value, int) or not 1 <= value <= most:
        return (f"{where} must be a whole number from 1 to {most} ({WORKERS_PER_CPU} per "
                f"CPU, {os.cpu_count() or 1} here); got {value!r}")
    return None


def load_config(path: str, registry: Registry) -> PipelineConfig:
    return _parse(YamlDoc.read(path), registry)


def parse_config(text: str, path: str, registry: Registry) -> PipelineConfig:
    return _parse(YamlDoc(text, path), registry)


def _parse(ld: YamlDoc, registry: Registry) -> PipelineConfig:
    root = ld.root()
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError("a config must be a mapping with a `pipeline:` list", ld.path, 1)
    cfg = PipelineConfig(path=ld.path, stages=[], text=ld.text)
    pipeline_node = None
    for key_node, value_node in root.value:
        key = ld.key(key_node, "a top-level key")
        if key == "pipeline":
            pipeline_node = value_node
        elif key == "workers":
            problem = workers_problem(ld.value(value_node))
            if problem:
                raise ld.fail(problem, value_node)
            cfg.workers = ld.value(value_node)
        elif key == "memory_mb":
            memory = ld.value(value_node)
            problem = number_problem("memory_mb", memory, int, LIMITS["memory_mb"])
            if problem:
                raise ld.fail(problem, value_node)
            cfg.memory_mb = memory
        elif key == "checkpoint":
            cfg.checkpoint = _checkpoint(ld, value_node)
        elif key == "executor":
            _executor(ld, cfg, value_node)
        elif key.startswith("x-"):
            pass  # a place for YAML anchors (`x-defaults: &d {...}`), as in docker compose
        elif key == "metrics":
            cfg.metrics = _section(ld, value_node, "metrics", {"port": int, "host": str},
                                   _metrics_problem)
        elif key == "emit":
            cfg.emit = _section(ld, value_node, "emit", {"every_seconds": (int, float)},
                                lambda k, v: number_problem(k, v, (int, float),
                                                            LIMITS["every_seconds"]))
        else:
            raise ld.fail(f"unknown top-level key {key!r}{suggest(str(key), TOP_LEVEL)}; "
                          f"expected {', '.join(TOP_LEVEL)}", key_node)
    if pipeline_node is None:
        raise ld.fail("missing `pipeline:` (a list of stages)", root)
    if not isinstance(pipeline_node, yaml.SequenceNode) or not pipeline_node.value:
        raise ld.fail("`pipeline` must be a non-empty list of stages", pipeline_node)
    for n, item in enumerate(pipeline_node.value):
        split = item.value[0][0].value if isinstance(item, yaml.MappingNode) and \
            len(item.value) == 1 and isinstance(item.value[0][0], yaml.ScalarNode) else None
        if split in ("fork", "route"):
            if n != len(pipeline_node.value) - 1:
                raise ld.fail(f"`{split}` must be the last element of `pipeline`", item)
            (_fork if split == "fork" else _route)(ld, cfg, item.value[0][0],
                                                    item.value[0][1], registry)
        else:
            cfg.trunk.append(len(cfg.stages))
            cfg.stages.append(_stage(ld, item, registry))
    check_wiring(cfg)
    check_kinds(cfg)
    for i, kind in given_kinds(cfg).items():
        cfg.stages[i].given = kind
    for i, columns in feeds_columns(cfg).items():
        cfg.stages[i].feeds_columns = columns
    for i, needed in fields_needed(cfg).items():
        cfg.stages[i].needed = needed
    check_fields(cfg)
    check_destinations(cfg)
    return cfg


def _fork(ld: YamlDoc, cfg: PipelineConfig, key: yaml.Node, node: yaml.Node,
          registry: Registry) -> None:
    """`- fork: {branch: [stages], ...}`: every branch gets every batch."""
    cfg.fork_line = key.start_mark.line + 1
    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise ld.fail("`fork` must map branch names to lists of stages", node)
    for name_node, stages_node in node.value:
        name = _branch_name(ld, name_node, "fork")
        if not isinstance(stages_node, yaml.SequenceNode) or not stages_node.value:
            raise ld.fail(f"fork branch {name!r} must be a non-empty list of stages",
                          stages_node)
        _branch(ld, cfg, name, stages_node, registry, [])


def _branch_name(ld: YamlDoc, node: yaml.Node, split: str) -> str:
    name = ld.key(node, f"a {split} branch name")
    if "/" in name or not name.isprintable():
        raise ld.fail(f"{split}: a branch name must be printable text without '/'; "
                      f"got {name!r}", node)
    return name


def _branch(ld: YamlDoc, cfg: PipelineConfig, name: str, stages_node: yaml.Node,
            registry: Registry, first: list[StageSpec]) -> None:
    """A branch of a fork (or route): `first` (the route's filter), then its stages."""
    cfg.branches[name] = []
    specs = list(first)
    for item in stages_node.value:
        try:
            specs.append(_stage(ld, item, registry))
        except ConfigError as exc:
            where, _, what = str(exc).partition(": ")
            raise ConfigError(f"{where}: {cfg.split} branch {name!r}: {what}") from None
    for spec in specs:
        spec.branch = name
        cfg.branches[name].append(len(cfg.stages))
        cfg.stages.append(spec)


ROUTE_KEYS = ("if", "stages")


def _route(ld: YamlDoc, cfg: PipelineConfig, key: yaml.Node, node: yaml.Node,
           registry: Registry) -> None:
    """`- route: {mode: first|all, NAME: {if: COND, stages: [...]}, ..., default: [...]}`:
    a `route` stage at the end of the trunk marks each record's branches, and each
    branch starts with a `routed` stage that keeps its records (stages/route.py)."""
    cfg.fork_line, cfg.split = key.start_mark.line + 1, "route"
    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise ld.fail("`route` must map branch names to {if: CONDITION, stages: [...]}",
                      node)
    mode, default, branches, on_failure = "first", None, [], None
    for name_node, value_node in node.value:
        name = _branch_name(ld, name_node, "route")
        if name == "mode":
            mode = ld.value(value_node)
            if mode not in ("first", "all"):
                raise ld.fail(f"route: `mode` must be 'first' or 'all'; got {mode!r}",
                              value_node)
        elif name == "on_failure":
            on_failure = ld.value(value_node)
            if on_failure not in ("dead-letter", "keep", "drop"):
                raise ld.fail(f"route: `on_failure` must be 'dead-letter', 'keep' or 'drop'; "
                              f"got {on_failure!r}", value_node)
        elif name == "default":
            if not isinstance(value_node, yaml.SequenceNode) or not value_node.value:
                raise ld.fail("route: `default` must be a non-empty list of stages (the "
                              "records no condition took)", value_node)
            default = value_node
        else:
            if not isinstance(value_node, yaml.MappingNode):
                raise ld.fail(f"route branch {name!r} must be {{if: CONDITION, stages: "
                              f"[...]}}", value_node)
            parts = {ld.key(k, f"a key of route branch {name!r}"): (k, v)
                     for k, v in value_node.value}
            for k in parts:
                if k not in ROUTE_KEYS:
                    raise ld.fail(f"route branch {name!r}: unknown key {k!r}"
                                  f"{suggest(k, ROUTE_KEYS)}; expected if, stages",
                                  parts[k][0])
            for k in ROUTE_KEYS:
                if k not in parts:
                    raise ld.fail(f"route branch {name!r}: missing {k!r}", name_node)
            stages_node = parts["stages"][1]
            if not isinstance(stages_node, yaml.SequenceNode) or not stages_node.value:
                raise ld.fail(f"route branch {name!r}: `stages` must be a non-empty list "
                              f"of stages", stages_node)
            branches.append((name, parts["if"][1], stages_node))
    if not branches:
        raise ld.fail("route: give at least one branch with a condition", node)
    cls, filt = registry.get("route"), registry.get("routed")
    if len(branches) + (default is not None) > cls.MAX_BRANCHES:  # type: ignore[attr-defined]
        raise ld.fail(f"route: at most {cls.MAX_BRANCHES} branches", node)  # type: ignore
    conditions = {}
    for name, cond_node, _ in branches:
        text = ld.value(cond_node)
        problem = cls.check_condition(text)  # type: ignore[attr-defined]
        if problem:
            raise ld.fail(f"route branch {name!r}: `if` {problem}", cond_node,
                          getattr(problem, "offset", None))
        conditions[name] = text
    line = cfg.fork_line
    cfg.trunk.append(len(cfg.stages))
    options = {"if": conditions, "mode": mode, "default": default is not None}
    if on_failure is not None:
        options["on_failure"] = on_failure
    cfg.stages.append(StageSpec("route", cls, options, line))
    every = [(name, stages) for name, _, stages in branches]
    if default is not None:  # `default` is never a conditional branch's name (above)
        every.append(("default", default))
    for k, (name, stages_node) in enumerate(every):
        _branch(ld, cfg, name, stages_node, registry,
                [StageSpec("routed", filt, {"branch": k}, stages_node.start_mark.line + 1)])


def _section(ld: YamlDoc, node: yaml.Node, name: str, keys: dict[str, Any],
             problem: Any) -> dict[str, Any]:
    """A top-level mapping of known keys; problem(key, value) names a bad value."""
    if not isinstance(node, yaml.MappingNode):
        raise ld.fail(f"`{name}` must be a mapping", node)
    out = {}
    for k_node, v_node in node.value:
        key = ld.key(k_node, f"a key of `{name}`")
        if key not in keys:
            raise ld.fail(f"{name}: unknown key {key!r}{suggest(key, keys)}", k_node)
        value = ld.value(v_node)
        bad = problem(key, value)
        if bad:
            raise ld.fail(f"{name}: {bad}", v_node)
        out[key] = value
    return out


def _metrics_problem(key: str, value: Any) -> str | None:
    if key == "port":
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535
        return None if ok else f"'port' must be a TCP port, 1 to 65535; got {value!r}"
    return None if isinstance(value, str) and value else \
        f"'host' must be an address to listen on, as 127.0.0.1; got {value!r}"


def _checkpoint(ld: YamlDoc, node: yaml.Node) -> dict[str, Any]:
    def problem(key: str, value: Any) -> str | None:
        if key in ("enabled", "strict"):
            return None if isinstance(value, bool) else \
                f"{key!r} must be true or false; got {value!r}"
        return number_problem(key, value, CHECKPOINT_KEYS[key], LIMITS[key])
    return _section(ld, node, "checkpoint", CHECKPOINT_KEYS, problem)


def _executor(ld: YamlDoc, cfg: PipelineConfig, node: yaml.Node) -> None:
    """`executor: {type: NAME, OPTION: value, ...}`: read here, with each key's line;
    the executor (pipeline.executors) checks its own options before a run."""
    if not isinstance(node, yaml.MappingNode):
        raise ld.fail("`executor` must be a mapping", node)
    for k_node, v_node in node.value:
        key = ld.key(k_node, "a key of `executor`")
        value = ld.value(v_node)
        if key == "type" and not isinstance(value, str):
            raise ld.fail(f"executor: 'type' must be str; got {value!r}", v_node)
        cfg.executor[key] = value
        cfg.executor_lines[key] = v_node.start_mark.line + 1


def _stage(ld: YamlDoc, item: yaml.Node, registry: Registry) -> StageSpec:
    if isinstance(item, yaml.ScalarNode):
        name_node, opts_node = item, None
    elif isinstance(item, yaml.MappingNode) and len(item.value) == 1:
        name_node, opts_node = item.value[0]
    else:
        raise ld.fail("each stage must be `- NAME: {options}` or `- NAME`", item)
    name = ld.key(name_node, "a stage name")
    try:
        cls = registry.get(name)
    except ConfigError as exc:
        raise ld.fail(str(exc), name_node) from None
    if getattr(cls, "part_of_route", False):
        raise ld.fail(f"stage {name!r} is made by `route` (the last element of "
                      f"`pipeline`, with branches) and cannot be given on its own", name_node)
    line = name_node.start_mark.line + 1
    spec = StageSpec(name=name, cls=cls, options={}, line=line)
    declared = {o.name: o for o in cls.options}
    if opts_node is not None and not (isinstance(opts_node, yaml.ScalarNode)
                                      and opts_node.tag == "tag:yaml.org,2002:null"):
        if not isinstance(opts_node, yaml.MappingNode):
            raise ld.fail(f"stage {name!r}: options must be a mapping", opts_node)
        for k_node, v_node in opts_node.value:
            key = ld.key(k_node, f"an option name of stage {name!r}")
            if key not in declared:
                raise ld.fail(f"stage {name!r}: unknown option {key!r}"
                              f"{suggest(key, declared)}", k_node)
            value = ld.value(v_node)
            problem = check_option(name, declared[key], value)
            if problem:
                raise ld.fail(problem, v_node, getattr(problem, "offset", None),
                              getattr(problem, "key", None))
            spec.options[key] = value
            spec.option_lines[key] = k_node.start_mark.line + 1
    for opt in cls.options:
        if opt.required and opt.name not in spec.options:
            raise ld.fail(f"stage {name!r}: missing required option {opt.name!r} "
                          f"({opt.doc})", name_node)
    problem = cls.check_options(spec.options)
    if problem:
        raise ld.fail(problem if problem.startswith(f"stage {name!r}") else
                      f"stage {name!r}: {problem}", name_node)
    return spec


def check_wiring(cfg: PipelineConfig) -> None:
    """An input starts the chain, an output ends it (or each fork branch), and only
    processors and reducers come in between."""
    trunk = [cfg.stages[i] for i in cfg.trunk]
    first = trunk[0] if trunk else cfg.stages[0]
    if first.cls.role is not Role.INPUT:
        raise ConfigError(f"the first stage must be an input; {first.name!r} is a "
                          f"{first.cls.role.value}", cfg.path, first.line)
    if not cfg.branches:
        last = trunk[-1]
        if len(trunk) < 2 or last.cls.role is not Role.OUTPUT:
            raise ConfigError(f"the last stage must be an output; {last.name!r} is a "
                              f"{last.cls.role.value}", cfg.path, last.line)
        middle = trunk[1:-1]
    else:
        middle = trunk[1:]
        for name, idx in cfg.branches.items():
            last = cfg.stages[idx[-1]]
            if last.cls.role is not Role.OUTPUT:
                raise ConfigError(f"{cfg.split} branch {name!r} must end with an output; "
                                  f"{last.name!r} is a {last.cls.role.value}", cfg.path,
                                  last.line)
            middle += [cfg.stages[i] for i in idx[:-1]]
    for spec in middle:
        if spec.cls.role in (Role.INPUT, Role.OUTPUT):
            where = f"{cfg.split} branch {spec.branch!r}: " if spec.branch else ""
            after = " (before a fork, every output goes at the end of a branch)" if \
                cfg.branches and not spec.branch and spec.cls.role is Role.OUTPUT else ""
            raise ConfigError(f"{where}stage {spec.name!r} is an {spec.cls.role.value}; only "
                              f"processors and reducers go between the input and the "
                              f"output{after}", cfg.path, spec.line)


def override_option(cfg: PipelineConfig, index: int, key: str, value: Any, flag: str) -> None:
    """Apply a command-line override such as `-f PATH` to stage `index`."""
    spec = cfg.stages[index]
    declared = {o.name: o for o in spec.cls.options}
    if key not in declared:
        raise ConfigError(f"{flag} needs a first stage with a {key!r} option; "
                          f"{spec.name!r} has none", cfg.path, spec.line)
    problem = check_option(spec.name, declared[key], value)
    if problem:
        raise ConfigError(f"{flag}: {problem}")
    spec.options[key] = value
    problem = spec.cls.check_options(spec.options)
    if problem:
        raise ConfigError(f"{flag}: {problem}")
    check_destinations(cfg)
