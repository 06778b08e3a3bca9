"""The user-facing rules in configs/summary.md: every test they cite exists, and nothing in
the repository points at documents a clone does not have."""
from __future__ import annotations

import ast
import os
import re

from conftest import ROOT

RULES = ROOT / "configs" / "summary.md"
# a pytest node id in backticks: `tests/test_x.py::test_name` or `...::test_name[param id]`
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".pipeline-state", ".venv", "build"}


def cited_tests() -> list[tuple[str, str]]:
    return sorted(set(NODE_ID.findall(RULES.read_text(encoding="utf-8"))))


def test_every_test_named_in_the_rules_exists():
    """Every pytest node id cited in configs/summary.md names an existing test function."""
    cited = cited_tests()
    assert len(cited) > 40, "configs/summary.md should cite the tests that pin its rules"
    missing = []
    for path, name in cited:
        file = ROOT / path
        if not file.is_file():
            missing.append(f"{path}::{name} (no such file)")
            continue
        tree = ast.parse(file.read_text(encoding="utf-8"))
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        if name not in functions:
            missing.append(f"{path}::{name}")
    assert missing == []


def test_nothing_refers_outside_the_repository():
    """No text file in the repository mentions the spec file or the shared directory."""
    needles = ["SPEC" + ".md", "shared" + "/"]
    found = []
    for root, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            if b"\0" in data:
                continue  # not a text file
            text = data.decode("utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), start=1):
                if any(needle in line for needle in needles):
                    found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert found == [], "\n".join(found)


def test_readme_keyed_reducer_example_is_exact(tmp_path):
    """The README's KeyedReducer example runs, in several buckets and map tasks, exactly."""
    import re
    from collections import Counter

    from pipeline.keyed import reduce_buckets, result_batches

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(import numpy as np\nfrom pipeline import KeyedReducer, "
                     r"keys\n.*?)```", readme, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    cls = scope["CountSenders"]
    senders = ["v1", "v2", "v1", "someone.with.a.long.address@example.com", 7, "v1",
               "someone.with.a.long.address@example.com"]
    dirs = []
    for task, part in enumerate((senders[:3], senders[3:])):
        stage = cls()
        stage.configure(str(tmp_path / f"m{task}"), nbuckets=3, task=task)
        stage.update([{"from": s} for s in part])
        stage.snapshot()  # the engine's end of a map task
        dirs.append(str(tmp_path / f"m{task}"))
    stage = cls()
    stage.nbuckets = 3
    reduce_buckets(stage, 0, range(3), dirs, str(tmp_path / "r"), memory_bytes=1 << 20)
    got = [r for b in result_batches(stage, [str(tmp_path / "r")], 3) for r in b]
    assert got == sorted(Counter(str(s) for s in senders).items())
