"""The verbs: stages, validate, graph, test; the bare form stays the run verb."""
from __future__ import annotations

from conftest import ROOT, SUMMARY, cli

CONFIGS = ROOT / "configs"


def test_stages_lists_every_stage_with_kind_and_doc():
    p = cli("stages")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert [x.split()[0] for x in lines] == [
        "aggregate", "count", "csv-output", "date", "dedupe", "dissect", "file-input", "grok", "json-decode",
        "jsonl-output", "kv", "mutate", "parquet-output", "postgres-output", "route", "routed",
        "site-state-reducer",
        "sorted-stdout-output", "sqlite-output", "summary-json-output", "where"]
    assert lines[6] == ("file-input            input      Read lines from files; each batch is "
                        "one block of whole lines (bytes).  [sluice (built-in)]")


def test_stages_name_shows_options_and_snippet():
    p = cli("stages", "file-input")
    assert p.returncode == 0
    assert p.stdout.startswith("file-input (input, from sluice (built-in))\n")
    assert "    - file-input:\n        path: chat.jsonl\n" in p.stdout
    assert ("  block_size  int          default 4194304  bytes read per batch\n") in p.stdout
    unknown = cli("stages", "file-inptu")
    assert unknown.returncode == 2
    assert unknown.stderr == ("sluice: error: unknown stage 'file-inptu' "
                              "(did you mean 'file-input'?)\n")


def test_validate_ok_and_mistyped_option(tmp_path):
    """validate: exit 0 for a good config; exit 2 with file:line for a mistyped option."""
    ok = cli("validate", "-c", SUMMARY)
    assert ok.returncode == 0
    assert ok.stdout == (f"{SUMMARY}: ok (file-input -> json-decode -> site-state-reducer -> "
                         f"sorted-stdout-output)\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline:\n  - file-input:\n      path: x\n  - where:\n      feild: a\n"
                   "      equals: b\n  - sorted-stdout-output\n")
    p = cli("validate", "-c", str(bad))
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: {bad}:5: stage 'where': unknown option 'feild' "
                        f"(did you mean 'field'?)\n")
    wiring = tmp_path / "wiring.yaml"
    wiring.write_text("pipeline:\n  - file-input: {path: x}\n  - json-decode\n")
    p = cli("validate", "-c", str(wiring))
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: {wiring}:3: the last stage must be an output; "
                        f"'json-decode' is a processor\n")


def test_graph_text_and_mermaid():
    p = cli("graph", "-c", str(CONFIGS / "site_filter.yaml"))
    assert p.stdout == (
        "file-input [input] (path='tests/data/sample/input.jsonl')\n"
        "-(lines)-> json-decode [processor] (schema='site-event')\n"
        "-(site-event)-> where [processor] (field='site_id', in=['W', 'V'])\n"
        "-(site-event)-> site-state-reducer [reducer]\n"
        "-(summary-row)-> sorted-stdout-output [output]\n")
    m = cli("graph", "-c", SUMMARY, "--mermaid")
    assert m.stdout == (
        "flowchart LR\n"
        '    s0["file-input<br/>input"]\n'
        '    s1["json-decode<br/>processor"]\n'
        '    s2["site-state-reducer<br/>reducer"]\n'
        '    s3["sorted-stdout-output<br/>output"]\n'
        "    s0 -->|lines| s1\n    s1 -->|site-event| s2\n    s2 -->|summary-row| s3\n")


def test_every_shipped_config_passes_its_sidecar_tests():
    """`main.py test configs/` runs every *_test.yaml; all pass."""
    p = cli("test", str(CONFIGS))
    assert p.returncode == 0, p.stdout
    assert p.stdout.splitlines()[-1] == "13 passed, 0 failed"
    for name in ("summary", "summary_json", "site_filter", "count_by_type", "fork", "mutate",
                 "aggregate", "access_log"):
        assert (CONFIGS / f"{name}_test.yaml").exists()
        assert cli("validate", "-c", str(CONFIGS / f"{name}.yaml")).returncode == 0


def test_test_verb_reports_failures_with_a_diff(tmp_path):
    """A failing case prints FAIL with a diff and exits 1."""
    (tmp_path / "p.yaml").write_text(SUMMARY_TEXT)
    (tmp_path / "p_test.yaml").write_text(
        "cases:\n  - name: wrong on purpose\n    input: |\n"
        '      {"id":"a","from":"v","type":"message","site_id":"1","timestamp":1}\n'
        "    output: |\n      1,messages=1,emails=0,operators=0,visitors=1\n")
    p = cli("test", str(tmp_path / "p_test.yaml"))
    assert p.returncode == 1
    assert f"FAIL {tmp_path / 'p_test.yaml'}: wrong on purpose" in p.stdout
    assert "-1,messages=1,emails=0,operators=0,visitors=1" in p.stdout
    assert "+1,messages=0,emails=1,operators=0,visitors=1" in p.stdout
    assert p.stdout.splitlines()[-1] == "0 passed, 1 failed"
    empty = tmp_path / "e_test.yaml"
    empty.write_text("cases: []\n")
    p = cli("test", str(empty))
    assert p.returncode == 2
    assert p.stderr == f"sluice: error: {empty}: a test file needs a non-empty `cases:` list\n"


SUMMARY_TEXT = (CONFIGS / "summary.yaml").read_text()


def test_bare_form_and_run_verb_are_the_same(tmp_path):
    sample = str(ROOT / "tests" / "data" / "sample" / "input.jsonl")
    a = cli("-c", SUMMARY, "-f", sample, "--state-dir", str(tmp_path / "a"))
    b = cli("run", "-c", SUMMARY, "-f", sample, "--state-dir", str(tmp_path / "b"))
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout
