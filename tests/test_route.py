"""route: records to the branches whose condition holds, first or all, with a default;
against a plain-Python reference with 1 and 2 workers; its config errors, graph and
stats."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import cli
from test_expression import judged, mixed_records

HEAD = "pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"


def status_500(r):
    """`status >= 500`, by hand: (true?, failed?)."""
    s = r.get("status")
    if s is None:
        return False, False
    if isinstance(s, bool):
        return int(s) >= 500, False
    if isinstance(s, (int, float)):
        return s >= 500, False
    return False, True  # text, an array's text, an object: not comparable with 500


def api_path(r):
    """`starts_with(path, '/api')`, by hand."""
    p = r.get("path")
    if p is None:
        return False, False
    if isinstance(p, str):
        return p.startswith("/api"), False
    return False, True


def reference(lines, mode, default):
    """{branch: [ids]} and the line numbers rejected, as route should make them."""
    out: dict[str, list] = {"errors": [], "api": [], "default": []}
    rejected = []
    for number, r, went, failed in judged(lines, lambda r: branches(r, mode)):
        if failed:
            rejected.append(number)
            continue
        for name in went or (["default"] if default else []):
            out[name].append(r["id"])
    return out, rejected


def branches(r, mode):
    """(the branches a record goes to, whether a condition it needed failed)."""
    went = []
    for name, test in (("errors", status_500), ("api", api_path)):
        true, fail = test(r)
        if fail:
            return [], True
        if true:
            went.append(name)
            if mode == "first":
                break
    return went, False


def route_config(tmp_path: Path, data: Path, mode: str, default: bool) -> str:
    text = HEAD.replace("in.jsonl", str(data)) + f"""\
  - route:
      mode: {mode}
      errors:
        if: "status >= 500"
        stages:
          - jsonl-output: {{path: {tmp_path}/errors.jsonl}}
      api:
        if: "starts_with(path, '/api')"
        stages:
          - jsonl-output: {{path: {tmp_path}/api.jsonl}}
"""
    if default:
        text += f"""\
      default:
        - jsonl-output: {{path: {tmp_path}/default.jsonl}}
"""
    cfg = tmp_path / "route.yaml"
    cfg.write_text(text)
    return str(cfg)


@pytest.mark.parametrize("mode,default", [("first", True), ("all", False)])
def test_route_matches_the_reference_with_1_and_2_workers(tmp_path, mode, default):
    lines = mixed_records(12000, 5)  # over 512 KiB: 2 workers run it in parts
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cfg = route_config(tmp_path, data, mode, default)
    expected, rejected = reference(lines, mode, default)
    runs = []
    for workers in ("1", "2"):
        p = cli("-c", cfg, "--state-dir", str(tmp_path / f"s{workers}"), "-w", workers,
                "--fresh", "--stats", "--memory-mb", "1024")  # room for 2 workers
        assert p.returncode == 0, p.stderr
        got = {}
        for name in expected:
            path = tmp_path / f"{name}.jsonl"
            got[name] = [json.loads(x)["id"] for x in path.read_text().splitlines()] \
                if path.exists() else []
            path.unlink(missing_ok=True)
        dead = [json.loads(x) for x in (tmp_path / f"s{workers}" / "dead_letter.jsonl")
                .read_text().splitlines()]
        runs.append((got, dead))
        assert got == expected
        assert bool(list((tmp_path / f"s{workers}").glob("*/plan.json"))) == (workers == "2")
        assert [d["line"] for d in dead if d["stage"] == "route"] == rejected
        lines_out = p.stderr.splitlines()
        table = lines_out[[k for k, x in enumerate(lines_out) if x.startswith("stage ")][0] + 1:]
        stats = [line.split()[0] for line in table if not line.startswith(("sluice", "wall"))]
        assert stats[:3] == ["file-input", "json-decode", "route"]
        assert "errors/routed" in stats and "api/jsonl-output" in stats
        went = {i for ids in expected.values() for i in ids}
        unrouted = sum(1 for line in lines if line != "{not json") - len(went) \
            - len(rejected)
        assert (f", {unrouted:,} unrouted;" in p.stderr) == (not default)
    assert runs[0] == runs[1]
    assert len(rejected) > 50 and all(expected[k] for k in ("errors", "api"))
    reasons = {d["reason"].split(": ")[0] for d in runs[0][1] if d["stage"] == "route"}
    assert reasons == {"route branch 'errors'", "route branch 'api'"}


def test_a_reject_names_the_branch_and_the_condition(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": 1, "status": "500"}\n{"id": 2, "status": 503, "path": 7}\n'
                    '{"id": 3, "status": 200, "path": "/api"}\n')
    cfg = route_config(tmp_path, data, "first", True)
    p = cli("-c", cfg, "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text()
            .splitlines()]
    assert dead == [{"line": 1, "offset": 0, "stage": "route", "reason":
                     "route branch 'errors': condition `status >= 500`: Cannot compare "
                     "values of type VARCHAR and type INTEGER_LITERAL - an explicit cast is "
                     "required", "raw": '{"id":1,"status":"500"}'}]
    # first: record 2 went to errors, so its path (a number) was never tested
    assert (tmp_path / "errors.jsonl").read_text() == '{"id":2,"status":503,"path":7}\n'
    assert (tmp_path / "api.jsonl").read_text() == '{"id":3,"status":200,"path":"/api"}\n'
    assert not (tmp_path / "default.jsonl").exists() or \
        (tmp_path / "default.jsonl").read_text() == ""


def test_graph_draws_the_branches(tmp_path):
    cfg = route_config(tmp_path, tmp_path / "in.jsonl", "all", True)
    p = cli("graph", "-c", cfg)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[2:5] == [
        "-(object)-> route [processor] (if={'errors': 'status >= 500', 'api': "
        "\"starts_with(path, '/api')\"}, mode='all', default=True)",
        "|-(object)-> route branch 'errors'",
        "|   routed [processor] (branch=0)"]
    assert "`-(object)-> route branch 'default'" in p.stdout


ROUTE = HEAD + "  - route:\n"


@pytest.mark.parametrize("text,where,message", [
    (ROUTE + "      a:\n        if: 'x > '\n        stages: [jsonl-output: {path: '-'}]\n",
     "6:18", "route branch 'a': `if` is not a valid expression: syntax error at end of "
             "input, at column 5 of `x >`"),
    (ROUTE + "      a:\n        stages: [jsonl-output: {path: '-'}]\n", "5",
     "route branch 'a': missing 'if'"),
    (ROUTE + "      a:\n        if: 'x'\n        stage: []\n", "7",
     "route branch 'a': unknown key 'stage' (did you mean 'stages'?); expected if, stages"),
    (ROUTE + "      mode: any\n      a: {if: x, stages: [jsonl-output: {path: '-'}]}\n",
     "5", "route: `mode` must be 'first' or 'all'; got 'any'"),
    (ROUTE + "      default: [jsonl-output: {path: '-'}]\n", "5",
     "route: give at least one branch with a condition"),
    (ROUTE + "      a: {if: x, stages: [where: {if: y}]}\n", "5",
     "route branch 'a' must end with an output; 'where' is a processor"),
    (ROUTE + "      a: {if: 5, stages: [jsonl-output: {path: '-'}]}\n", "5",
     "route branch 'a': `if` must be an SQL condition (text); got int 5"),
    (HEAD + "  - routed: {branch: 0}\n  - jsonl-output: {path: '-'}\n", "4",
     "stage 'routed' is made by `route` (the last element of `pipeline`, with branches) "
     "and cannot be given on its own"),
    (HEAD + "  - route: {a: {if: x, stages: [jsonl-output: {path: '-'}]}}\n"
     "  - jsonl-output: {path: '-'}\n", "4", "`route` must be the last element of "
                                              "`pipeline`"),
])
def test_route_mistakes_name_file_and_line(tmp_path, text, where, message):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(text)
    p = cli("validate", "-c", str(cfg))
    assert (p.returncode, p.stderr) == (2, f"sluice: error: {cfg}:{where}: {message}\n")
