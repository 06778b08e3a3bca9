"""Text for people: the stage catalogue (`main.py stages`) and chain graphs (`graph`)."""
from __future__ import annotations

import inspect

from .config import PipelineConfig, _type_name
from .registry import Registry
from .stage import Stage


def first_line(cls: type[Stage]) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.splitlines()[0] if doc else ""


def list_stages(registry: Registry) -> str:
    """One line per stage: name, kind, where it comes from, what it does."""
    rows = [(n, registry.get(n).kind.value, registry.origin(n), first_line(registry.get(n)))
            for n in registry.names()]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{n:<{w}}  {k:<9}  {d}  [{o}]" for n, k, o, d in rows)


def show_stage(registry: Registry, name: str) -> str:
    """A stage's kind, docs, options table and YAML snippet."""
    cls = registry.get(name)
    doc = inspect.getdoc(cls) or ""
    lines = [f"{name} ({cls.kind.value}, from {registry.origin(name)})", "", doc, ""]
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


def graph_text(cfg: PipelineConfig) -> str:
    """The chain, one stage a line, with kinds and options."""
    out = []
    for i, spec in enumerate(cfg.stages):
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
        arrow = "   " if i == 0 else "-> "
        out.append(f"{arrow}{spec.name} [{spec.cls.kind.value}]" + (f" ({opts})" if opts else ""))
    return "\n".join(out) + "\n"


def graph_mermaid(cfg: PipelineConfig) -> str:
    """The chain as a Mermaid flowchart."""
    out = ["flowchart LR"]
    for i, spec in enumerate(cfg.stages):
        label = f"{spec.name}<br/>{spec.cls.kind.value}".replace('"', "'")
        out.append(f'    s{i}["{label}"]')
    for i in range(1, len(cfg.stages)):
        out.append(f"    s{i - 1} --> s{i}")
    return "\n".join(out) + "\n"
