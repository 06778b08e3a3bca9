"""Config errors are refused before anything runs, naming file:line."""
from __future__ import annotations

import os

import pytest

import main
from conftest import SUMMARY
from pipeline import ConfigError
from pipeline.config import load_config
from pipeline.config import parse_config

CPUS = os.cpu_count() or 1
GOOD = """\
pipeline:
  - file-input:
      path: in.jsonl
  - json-decode:
      schema: site-event
  - site-state-reducer: {}
  - sorted-stdout-output: {}
"""


def load(text: str):
    return parse_config(text, "configs/x.yaml", main.build_registry())


def error(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load(text)
    return str(exc.value)


def test_good_config_loads():
    """The summary chain loads with its options and lines."""
    cfg = load(GOOD)
    assert [s.name for s in cfg.stages] == ["file-input", "json-decode",
                                           "site-state-reducer", "sorted-stdout-output"]
    assert cfg.stages[0].options == {"path": "in.jsonl"}
    assert cfg.stages[1].line == 4


def test_shipped_summary_config_loads():
    """configs/summary.yaml is valid."""
    cfg = load_config(SUMMARY, main.build_registry())
    assert cfg.stages[1].options == {"schema": "site-event"}


@pytest.mark.parametrize("text,message", [
    (GOOD.replace("path:", "pth:"),
     "configs/x.yaml:3: stage 'file-input': unknown option 'pth' (did you mean 'path'?)"),
    (GOOD.replace("      path: in.jsonl\n", "      block_size: 10\n"),
     "configs/x.yaml:2: stage 'file-input': missing required option 'path' (file, `-` (stdin), glob, or a list of them)"),
    (GOOD.replace("schema: site-event", "schema: site-events"),
     "configs/x.yaml:5: stage 'json-decode': option 'schema' must be one of 'site-event', "
     "'object'; got 'site-events' (did you mean 'site-event'?)"),
    (GOOD.replace("path: in.jsonl", "path: in.jsonl\n      block_size: big"),
     "configs/x.yaml:4: stage 'file-input': option 'block_size' must be int; got str 'big'"),
    (GOOD.replace("path: in.jsonl", "path: in.jsonl\n      block_size: true"),
     "configs/x.yaml:4: stage 'file-input': option 'block_size' must be int; got bool True"),
    (GOOD.replace("path: in.jsonl", "path: in.jsonl\n      block_size: 0"),
     "configs/x.yaml:4: stage 'file-input': option 'block_size' must be > 0; got 0"),
    (GOOD.replace("json-decode:", "json-decoder:"),
     "configs/x.yaml:4: unknown stage 'json-decoder' (did you mean 'json-decode'?)"),
    (GOOD.replace("pipeline:", "pipline:"),
     "configs/x.yaml:1: unknown top-level key 'pipline' (did you mean 'pipeline'?); "
     "expected pipeline, workers, checkpoint, executor, memory_mb, emit, metrics"),
    ("workers: 2\n", "configs/x.yaml:1: missing `pipeline:` (a list of stages)"),
    ("pipeline: []\n", "configs/x.yaml:1: `pipeline` must be a non-empty list of stages"),
    ("- a\n", "configs/x.yaml:1: a config must be a mapping with a `pipeline:` list"),
    (GOOD + "workers: 0\n", f"configs/x.yaml:8: `workers` must be a whole number from 1 to "
                            f"{4 * CPUS} (4 per CPU, {CPUS} here); got 0"),
    (GOOD + "checkpoint: {every_record: 5}\n",
     "configs/x.yaml:8: checkpoint: unknown key 'every_record' (did you mean 'every_records'?)"),
    (GOOD.replace("  - sorted-stdout-output: {}\n", ""),
     "configs/x.yaml:6: the last stage must be an output; 'site-state-reducer' is a reducer"),
    ("pipeline:\n  - json-decode\n  - sorted-stdout-output\n",
     "configs/x.yaml:2: the first stage must be an input; 'json-decode' is a processor"),
    (GOOD.replace("  - site-state-reducer: {}\n", "  - file-input: {path: x}\n"),
     "configs/x.yaml:6: stage 'file-input' is an input; only processors and reducers go "
     "between the input and the output"),
    ("pipeline:\n  - file-input: {path: [}\n",
     "configs/x.yaml:2: YAML syntax error: expected the node content, but found '}'"),
    ("pipeline:\n  - file-input:\n    path: x\n   - bad\n",
     "configs/x.yaml:4: YAML syntax error: expected <block end>, but found "
     "'<block sequence start>'"),
    ("pipeline:\n  - stages.nope:Missing\n  - sorted-stdout-output\n",
     "configs/x.yaml:2: cannot import stage 'stages.nope:Missing': No module named 'stages.nope'"),
    ("pipeline:\n  - pipeline.config:PipelineConfig\n  - sorted-stdout-output\n",
     "configs/x.yaml:2: stage 'pipeline.config:PipelineConfig': <class "
     "'pipeline.config.PipelineConfig'> is not a subclass of pipeline.Stage"),
])
def test_config_errors_name_file_and_line(text, message):
    """Each config mistake gives one line: file:line, what, and a suggestion."""
    assert error(text) == message


def test_stage_by_import_path():
    """A stage may be named as package.module:Class."""
    cfg = load(GOOD.replace("site-state-reducer:", "stages.site_state_reducer:SiteStateReducer:"))
    assert cfg.stages[2].cls.name == "site-state-reducer"


def test_identity_changes_with_options_not_with_comments():
    """The config hash covers stages and options, not formatting."""
    a = load(GOOD).identity()
    assert load("# comment\n" + GOOD).identity() == a
    assert load(GOOD.replace("in.jsonl", "other.jsonl")).identity() != a


def test_readme_config_example_parses():
    """The config in README's "Config format" is a valid config."""
    from conftest import ROOT
    text = (ROOT / "README.md").read_text()
    block = text.split("## Config format\n\n```yaml\n")[1].split("```")[0]
    cfg = parse_config(block, "README.md", main.build_registry())
    assert (cfg.workers, cfg.executor["type"]) == (2, "dask")


def test_ci_runs_the_readme_commands():
    """.ci/run installs what the README's first command installs and runs its test command."""
    from conftest import ROOT
    readme = (ROOT / "README.md").read_text().split("```sh\n")[1].split("```")[0].splitlines()
    ci = (ROOT / ".ci" / "run").read_text()
    install = readme[0].split(" && ")[0]
    assert install.split("-e ")[1] in ci
    assert readme[1] in ci.splitlines()
