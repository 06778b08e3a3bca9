#!/usr/bin/env python3
"""The import graph of pipeline/: no circle, and no module importing one above it.

    python test_scripts/import_graph.py          # the layers, each module's imports
    python test_scripts/import_graph.py --check  # exit 1 on a circle or an upward import

Every import counts, at the top of a module or inside a function. The layers, from the
bottom: what everything may use; saved state; the stage API; the config; the engine's
parts; the executors; the engine's runs; the tools (see LAYERS). A module may import
modules of its own layer or below.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE_RUNS = ("pipeline.engine.streaming", "pipeline.engine.emit", "pipeline.engine.job")
LAYERS = [  # (layer, module prefixes); the first match wins
    (7, ("pipeline.tools",)),
    (6, ENGINE_RUNS),
    (5, ("pipeline.executors",)),
    (4, ("pipeline.engine",)),
    (3, ("pipeline.config", "pipeline.testing", "pipeline")),
    (2, ("pipeline.keyed", "pipeline.outputs", "pipeline.registry", "pipeline.contracts")),
    (1, ("pipeline.state",)),
    (0, ("pipeline.errors", "pipeline.keys", "pipeline.batch", "pipeline.columns",
         "pipeline.stage", "pipeline.yamlsafe")),
]
NAMES = {0: "base", 1: "state", 2: "stage API", 3: "config", 4: "engine parts",
         5: "executors", 6: "engine runs", 7: "tools"}


def layer(module: str) -> int:
    best = None
    for number, prefixes in LAYERS:
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (number, len(p))
    if best is None:
        raise SystemExit(f"import_graph: no layer for {module}")
    return best[0]


def modules() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "pipeline")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: str, known: dict[str, str]) -> set[str]:
    """The project modules `name` imports (from pipeline.x import y: y if it is a
    module, else pipeline.x)."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def problems() -> tuple[dict[str, set[str]], list[str]]:
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    found = [f"circle: {' -> '.join(c)}" for c in circles(graph)]
    for name, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if layer(dep) > layer(name):
                found.append(f"upward: {name} ({NAMES[layer(name)]}) imports {dep} "
                             f"({NAMES[layer(dep)]})")
    return graph, found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only report problems")
    args = p.parse_args()
    graph, found = problems()
    if not args.check:
        for number in sorted(NAMES, reverse=True):
            names = sorted(n for n in graph if layer(n) == number)
            print(f"{number} {NAMES[number]}:")
            for n in names:
                print(f"    {n} -> {', '.join(sorted(graph[n])) or '-'}")
    for line in found:
        print(line)
    edges = sum(len(d) for d in graph.values())
    print(f"{len(graph)} modules, {edges} imports, {len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
