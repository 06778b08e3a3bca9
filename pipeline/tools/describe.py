"""Text for people: the stage catalogue (`main.py stages`) and chain graphs (`graph`)."""
from __future__ import annotations

import inspect
from typing import Any

from pipeline.config import PipelineConfig, _type_name
from pipeline.contracts import edge_kinds
from pipeline.registry import Registry
from pipeline.stage import SAME, Stage


def first_line(cls: type[Stage]) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.splitlines()[0] if doc else ""


def list_stages(registry: Registry) -> str:
    """One line per stage: name, kind, where it comes from, what it does."""
    rows = [(n, registry.get(n).role.value, registry.origin(n), first_line(registry.get(n)))
            for n in registry.names()]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{n:<{w}}  {k:<9}  {d}  [{o}]" for n, k, o, d in rows)


def show_stage(registry: Registry, name: str) -> str:
    """A stage's kind, docs, options table and YAML snippet."""
    cls = registry.get(name)
    doc = inspect.getdoc(cls) or ""
    lines = [f"{name} ({cls.role.value}, from {registry.origin(name)})", "", doc, ""]
    if cls.accepts:
        lines.append(f"accepts:  {', '.join(cls.accepts)} records")
    if cls.produces:
        made = ("the records it is given" if cls.produces == SAME else
                f"{cls.produces} records")
        lines.append(f"produces: {getattr(cls, 'produces_doc', None) or made}")
    lines.append("")
    if cls.options:
        lines.append("options:")
        rows = [(o.name, _type_name(o.type), "required" if o.required else
                 f"default {o.default!r}", o.doc) for o in cls.options]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            lines.append("  " + "  ".join(f"{r[i]:<{widths[i]}}" for i in range(3)) + f"  {r[3]}")
    else:
        lines.append("options: none")
    return "\n".join(lines).rstrip() + "\n"


def _line(spec: Any) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
    return f"{spec.name} [{spec.cls.role.value}]" + (f" ({opts})" if opts else "")


def graph_text(cfg: PipelineConfig) -> str:
    """The pipeline, one stage a line, each arrow labelled with the kind of records it
    carries; a fork as a tree."""
    kinds = edge_kinds(cfg)
    out = []
    for n, i in enumerate(cfg.trunk):
        arrow = "" if n == 0 else f"-({kinds[cfg.trunk[n - 1]]})-> "
        out.append(arrow + _line(cfg.stages[i]))
    names = list(cfg.branches)
    for b, name in enumerate(names):
        last = b == len(names) - 1
        out.append(f"{'`' if last else '|'}-({kinds[cfg.trunk[-1]]})-> {cfg.split} branch {name!r}")
        pad = "    " if last else "|   "
        idx = cfg.branches[name]
        for n, i in enumerate(idx):
            arrow = "" if n == 0 else f"-({kinds[idx[n - 1]]})-> "
            out.append(pad + arrow + _line(cfg.stages[i]))
    return "\n".join(out) + "\n"


def graph_mermaid(cfg: PipelineConfig) -> str:
    """The pipeline as a Mermaid flowchart: a chain, or a tree for a fork."""
    out = ["flowchart LR"]
    for i, spec in enumerate(cfg.stages):
        label = f"{spec.name}<br/>{spec.cls.role.value}".replace('"', "'")
        out.append(f'    s{i}["{label}"]')
    kinds = edge_kinds(cfg)
    out += [f"    s{a} -->|{kinds[a]}| s{b}" for a, b in zip(cfg.trunk, cfg.trunk[1:])]
    for name, idx in cfg.branches.items():
        label = name.replace('"', "'").replace("|", "/")
        out.append(f"    s{cfg.trunk[-1]} -->|{label}: {kinds[cfg.trunk[-1]]}| s{idx[0]}")
        out += [f"    s{a} -->|{kinds[a]}| s{b}" for a, b in zip(idx, idx[1:])]
    return "\n".join(out) + "\n"


def chain_text(cfg: PipelineConfig) -> str:
    """One line: `a -> b -> fork(x: c -> d; y: e -> f)`."""
    trunk = " -> ".join(cfg.stages[i].name for i in cfg.trunk)
    if not cfg.branches:
        return trunk
    return trunk + f" -> {cfg.split}(" + "; ".join(
        f"{name}: " + " -> ".join(cfg.stages[i].name for i in idx)
        for name, idx in cfg.branches.items()) + ")"
