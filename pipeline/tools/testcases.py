"""Pipeline unit tests in YAML, beside the config they test (`main.py test`).

    # configs/summary_test.yaml -- tests configs/summary.yaml
    config: summary.yaml          # optional: NAME_test.yaml tests NAME.yaml
    cases:
      - name: a message before any operator is an email
        input: |
          {"id":"a","from":"v","type":"message","site_id":"1","timestamp":1}
        output: |
          1,messages=0,emails=1,operators=0,visitors=1
        rejects: []               # optional: [{line: N, reason: "..."}], exact
        files:                    # optional: files the pipeline writes, exactly
          statuses.jsonl: |
            {"id":"a",...}

Each case runs the pipeline on its input lines in a scratch directory (which is also
the working directory, so relative output paths land there), without checkpoints, and
compares stdout, and the rejects and files when given, exactly.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.config import load_config, override_option
from pipeline.engine.job import run_job
from pipeline.engine.options import JobOptions
from pipeline.errors import ConfigError, SluiceError
from pipeline.registry import Registry


@dataclass
class CaseResult:
    file: str
    name: str
    ok: bool
    detail: str = ""


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read test file: {exc.strerror}", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"YAML syntax error: {getattr(exc, 'problem', exc)}", path,
                          mark.line + 1 if mark else None) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list) or not doc["cases"]:
        raise ConfigError("a test file needs a non-empty `cases:` list", path)
    return doc


def _config_for(path: str, doc: dict[str, Any]) -> str:
    here = os.path.dirname(path)
    if "config" in doc:
        return os.path.join(here, doc["config"])
    base = os.path.basename(path)
    if not base.endswith("_test.yaml"):
        raise ConfigError("name the config with `config:` or call the file NAME_test.yaml", path)
    return os.path.join(here, base[: -len("_test.yaml")] + ".yaml")


def case_output(config: str, registry: Registry, case: dict[str, Any]
             ) -> tuple[str, list[dict], dict[str, str | None]]:
    """(stdout, rejects, {file: its text or None}) of the pipeline on the case's input."""
    cfg = load_config(config, registry)
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="sluice-test-") as tmp:
        data = case.get("input", "")
        path = os.path.join(tmp, "input.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(data)
        override_option(cfg, 0, "path", path, "the test input")
        opts = JobOptions(state_dir=tmp, checkpoint=False, workers=1, notify=lambda _: None)
        buf = io.BytesIO()
        out = io.TextIOWrapper(buf, encoding="utf-8", newline="")
        os.chdir(tmp)
        try:
            with contextlib.redirect_stdout(out):
                run_job(cfg, opts)
                out.flush()
            files = {name: _read(os.path.join(tmp, name)) for name in case.get("files") or {}}
        finally:
            os.chdir(here)
        dead = os.path.join(tmp, "dead_letter.jsonl")
        rejects = []
        if os.path.exists(dead):
            with open(dead, encoding="utf-8") as fh:
                rejects = [json.loads(x) for x in fh]
        return buf.getvalue().decode("utf-8"), rejects, files


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def check_file(path: str, registry: Registry) -> list[CaseResult]:
    doc = _load(path)
    config = _config_for(path, doc)
    results = []
    for i, case in enumerate(doc["cases"], 1):
        name = str(case.get("name", f"case {i}"))
        try:
            got, rejects, files = case_output(config, registry, case)
        except SluiceError as exc:
            results.append(CaseResult(path, name, False, f"error: {exc}"))
            continue
        problems = []
        want = case.get("output", "")
        if got != want:
            diff = difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                        "expected", "got")
            problems.append("output differs:\n" + "".join(diff))
        for fname, want_text in (case.get("files") or {}).items():
            if files.get(fname) is None:
                problems.append(f"file {fname} was not written")
            elif files[fname] != want_text:
                diff = difflib.unified_diff(want_text.splitlines(True),
                                            files[fname].splitlines(True), "expected", "got")
                problems.append(f"file {fname} differs:\n" + "".join(diff))
        if "rejects" in case:
            have = [{"line": r["line"], "reason": r["reason"]} for r in rejects]
            if have != case["rejects"]:
                problems.append(f"rejects differ:\n  expected {case['rejects']}\n  got      {have}")
        results.append(CaseResult(path, name, not problems, "\n".join(problems)))
    return results


def find_tests(paths: list[str]) -> list[str]:
    found = []
    for p in paths:
        if os.path.isdir(p):
            found += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith("_test.yaml"))
        else:
            found.append(p)
    return found


def check_paths(paths: list[str], registry: Registry, out: Any = sys.stdout) -> int:
    """Run every case; print PASS/FAIL lines and a total. Exit 0, or 1 if any failed."""
    files = find_tests(paths)
    if not files:
        raise ConfigError(f"no *_test.yaml files in {' '.join(paths)}")
    results = [r for f in files for r in check_file(f, registry)]
    for r in results:
        print(f"{'PASS' if r.ok else 'FAIL'} {r.file}: {r.name}", file=out)
        if not r.ok:
            print("  " + r.detail.replace("\n", "\n  "), file=out)
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} passed, {failed} failed", file=out)
    return 1 if failed else 0
