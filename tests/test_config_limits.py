"""Every config problem is one line, FILE:LINE, exit 2: YAML the safe loader refuses,
odd values, names the OS or the encoder refuses, and limits on size, depth and counts."""
from __future__ import annotations

import os
import sys

import pytest

import main
from conftest import ROOT, cli
from pipeline import ConfigError, Processor
from pipeline.config import load_config
from pipeline.config import parse_config

sys.path.insert(0, str(ROOT / "test_scripts"))
import fuzz_config  # noqa: E402

REG = main.build_registry()
CPUS = os.cpu_count() or 1
GOOD = """pipeline:
  - file-input: {path: in.jsonl}
  - json-decode: {}
  - site-state-reducer: {}
  - sorted-stdout-output: {}
"""
BOMB = ("x-a: &a [1,1,1,1,1,1,1,1,1,1]\nx-b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "x-c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nx-d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "x-e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nx-f: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n")
WHERE = GOOD.replace("  - json-decode: {}\n", "  - json-decode: {}\n  - where: {}\n")


def error(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "x.yaml", REG)
    return str(exc.value)


CASES = [
    # YAML the safe constructor refuses
    ("!!int with bad contents", GOOD + "workers: !!int 0xZZ\n",
     "x.yaml:6: YAML value '0xZZ' cannot be read as !!int"),
    ("!!float", GOOD + "memory_mb: !!float abc\n",
     "x.yaml:6: YAML value 'abc' cannot be read as !!float"),
    ("!!timestamp", GOOD + "memory_mb: !!timestamp 2020-13-45\n",
     "x.yaml:6: YAML value '2020-13-45' cannot be read as !!timestamp"),
    ("!!bool on a non-bool", GOOD + "checkpoint: {enabled: !!bool maybe}\n",
     "x.yaml:6: YAML value 'maybe' cannot be read as !!bool"),
    ("!!omap with bad contents", GOOD + "checkpoint: !!omap [1]\n",
     "x.yaml:6: `checkpoint` must be a mapping"),
    ("!!binary that is not base64", GOOD.replace("{path: in.jsonl}", "{path: !!binary '***'}"),
     "x.yaml:2: stage 'file-input': option 'path' must be str or list; got bytes b''"),
    ("a Python tag", GOOD + "workers: !!python/object:os.system ls\n",
     "x.yaml:6: YAML value: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object:os.system'"),
    ("an undefined alias", GOOD + "x: *nope\n",
     "x.yaml:6: YAML syntax error: found undefined alias 'nope'"),
    ("a merge key of a scalar", GOOD.replace("{path: in.jsonl}", "{<<: 5}"),
     "x.yaml:2: YAML merge key: expected a mapping or list of mappings for merging, but "
     "found scalar"),
    # keys and values that cannot be names or hashed
    ("an unhashable top-level key", GOOD + "? [a]\n: 1\n",
     "x.yaml:6: expected a top-level key (a name), got a list"),
    ("a complex key in checkpoint", GOOD + "checkpoint: {? [a]: 1}\n",
     "x.yaml:6: expected a key of `checkpoint` (a name), got a list"),
    ("an unhashable key inside a value", GOOD.replace("{path: in.jsonl}", "{path: {? [a]: 1}}"),
     "x.yaml:2: YAML value: found unhashable key"),
    ("a list inside where's in", WHERE.replace("where: {}", "where: {field: site_id, in: [[1], 2]}"),
     "x.yaml:4: stage 'where': `in` must list strings, numbers or booleans; got list [1]"),
    ("a relative import path", GOOD.replace("site-state-reducer", ".relative:X"),
     "x.yaml:4: cannot import stage '.relative:X': expected an import path like "
     "package.module:Class"),
    ("a malformed import path", GOOD.replace("site-state-reducer", "a..b:C"),
     "x.yaml:4: cannot import stage 'a..b:C': expected an import path like "
     "package.module:Class"),
    ("a stage name that is a number", GOOD.replace("site-state-reducer: {}", "5: {}"),
     "x.yaml:4: expected a stage name (a name), got int 5"),
    # characters
    ("a NUL character", GOOD + "workers: 2\x00\n",
     "x.yaml:6: YAML cannot hold the character #x0000: control characters (NUL, escape, "
     "...) are not allowed in YAML text"),
    ("an escape character", GOOD + "workers: \x1b\n",
     "x.yaml:6: YAML cannot hold the character #x001b: control characters (NUL, escape, "
     "...) are not allowed in YAML text"),
    ("NUL in a path", GOOD.replace("{path: in.jsonl}", '{path: "in\\0.jsonl"}'),
     "x.yaml:2: stage 'file-input': option 'path' must not hold a NUL character; got "
     "'in\\x00.jsonl'"),
    ("a lone surrogate in a branch name",
     'pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {}\n  - fork:\n'
     '      "a\\udc80":\n        - site-state-reducer: {}\n        - sorted-stdout-output: {}\n',
     "x.yaml:5: the text 'a\\udc80' is not valid Unicode: it holds a lone surrogate (\\udc80)"),
    ("a lone surrogate in a value", GOOD.replace("{path: in.jsonl}", '{path: "a\\ud800"}'),
     "x.yaml:2: the text 'a\\ud800' is not valid Unicode: it holds a lone surrogate (\\ud800)"),
    ("a control character in a branch name",
     'pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {}\n  - fork:\n'
     '      "a\\tb":\n        - site-state-reducer: {}\n        - sorted-stdout-output: {}\n',
     "x.yaml:5: fork: a branch name must be printable text without '/'; got 'a\\tb'"),
    # limits
    ("nesting too deep", GOOD + "x: " + "[" * 70 + "]" * 70 + "\n",
     "x.yaml:6: YAML nested more than 64 levels deep"),
    ("an alias bomb", GOOD + BOMB,
     "x.yaml:11: YAML too large: more than 200,000 values once its aliases are expanded"),
    ("a billion workers", GOOD + "workers: 1000000000\n",
     f"x.yaml:6: `workers` must be a whole number from 1 to {4 * CPUS} (4 per CPU, {CPUS} "
     f"here); got 1000000000"),
    ("a huge memory budget", GOOD + "memory_mb: 100000000000000000000\n",
     "x.yaml:6: `memory_mb` must be a whole number from 1 to 16,777,216; got "
     "100000000000000000000"),
    ("NaN seconds", GOOD + "emit: {every_seconds: .nan}\n",
     "x.yaml:6: emit: `every_seconds` must be a number from 0.001 to 1,000,000,000; got nan"),
    ("infinite seconds", GOOD + "checkpoint: {every_seconds: .inf}\n",
     "x.yaml:6: checkpoint: `every_seconds` must be a number from 0.001 to 1,000,000,000; "
     "got inf"),
    ("a huge block", GOOD.replace("{path: in.jsonl}", "{path: in.jsonl, block_size: 99999999999}"),
     "x.yaml:2: stage 'file-input': option 'block_size' must be at most 1,073,741,824; got "
     "99999999999"),
    # duplicate keys, at any depth
    ("a duplicate option", GOOD.replace("{path: in.jsonl}", "{path: in.jsonl, path: b.jsonl}"),
     "x.yaml:2: key 'path' is given twice in one mapping (first at line 2); YAML would "
     "silently keep only the last"),
    ("a duplicate top-level key", GOOD + "workers: 1\nworkers: 2\n",
     "x.yaml:7: key 'workers' is given twice in one mapping (first at line 6); YAML would "
     "silently keep only the last"),
    ("check_options errors name the stage", WHERE.replace("where: {}", "where: {field: a}"),
     "x.yaml:4: stage 'where': give exactly one of `equals`, `in` or `if`"),
    ("a plugin's check_options error is prefixed too",
     WHERE.replace("where: {}", "test_config_limits:Picky: {}"),
     "x.yaml:4: stage 'test_config_limits:Picky': give `a` or `b`"),
]


class Picky(Processor):
    """A plugin whose check_options says what is wrong without naming itself."""

    name = "picky"

    @classmethod
    def check_options(cls, options):
        return "give `a` or `b`"


@pytest.mark.parametrize("name,text,message", CASES, ids=[c[0] for c in CASES])
def test_each_config_problem_is_one_line(name, text, message):
    """Each class of config problem the fuzzer found is one exact line, FILE:LINE."""
    assert error(text) == message


@pytest.mark.parametrize("section,message", [
    ("{type: dask, partition_mb: 99999999999}",
     "x.yaml:6: executor 'dask': option 'partition_mb' must be at most 1,048,576; got "
     "99999999999"),
    ("{partition_mb: 8}",
     "x.yaml:6: executor: 'partition_mb' is not an option of executor 'local'; it takes none"),
    ("{type: dask, schedular: x}",
     "x.yaml:6: executor: 'schedular' is not an option of executor 'dask' (did you mean "
     "'scheduler'?); it takes scheduler, partition_mb"),
    ("{type: ray}",
     "x.yaml:6: executor: unknown executor 'ray'; expected dask, local, or package.module:Class"),
    ("{type: .x:Y}",
     "x.yaml:6: executor: cannot import executor '.x:Y': expected an import path like "
     "package.module:Class"),
])
def test_executor_options_are_checked_by_the_executor(section, message):
    """The `executor:` section is checked against the chosen executor's own options."""
    from pipeline.executors import resolve
    cfg = parse_config(GOOD + f"executor: {section}\n", "x.yaml", REG)
    with pytest.raises(ConfigError) as exc:
        resolve(cfg)
    assert str(exc.value) == message


def test_merge_keys_and_x_keys_work():
    """YAML merge keys work, and top-level `x-` keys hold anchors without being read."""
    cfg = parse_config("x-input: &in {path: in.jsonl, block_size: 4096}\n"
                       + GOOD.replace("{path: in.jsonl}", "{<<: *in, block_size: 8192}"),
                       "x.yaml", REG)
    assert cfg.stages[0].options == {"path": "in.jsonl", "block_size": 8192}


def test_config_files_that_cannot_be_read(tmp_path):
    """Too large, not UTF-8, or not a file: one line each."""
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(big), REG)
    assert str(exc.value) == (f"{big}: the config is larger than 1,048,576 bytes (1 MiB), the "
                              f"most a config may be; keep long lists of values in a data file")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(GOOD.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(latin), REG)
    assert str(exc.value) == (f"{latin}:6: the config is not UTF-8 text: byte 0xe9 cannot "
                              f"start or continue a character")
    with pytest.raises(ConfigError) as exc:
        load_config(str(tmp_path), REG)
    assert str(exc.value) == f"{tmp_path}: cannot read config: Is a directory"


@pytest.mark.parametrize("argv,message", [
    (["-w", "0"], "main.py: argument -w/--workers: must be > 0, got 0"),
    (["-w", "-1"], "main.py: argument -w/--workers: must be > 0, got -1"),
    (["-w", "1000000000"], f"main.py: argument -w/--workers: must be at most {4 * CPUS} "
                           f"(4 per CPU, {CPUS} here), got 1000000000"),
    (["--emit-every", "0"], "main.py: argument --emit-every: must be a positive number, got 0"),
    (["--bogus"], "main.py: unrecognized arguments: --bogus"),
])
def test_command_line_mistakes_are_one_line(argv, message):
    """A command-line mistake is one line and exit 2, never argparse's usage text."""
    p = cli("-c", "configs/summary.yaml", *argv)
    assert p.returncode == 2
    assert p.stderr == f"sluice: error: {message} (see `python main.py -h`)\n"


def test_validate_and_graph_take_the_config_as_a_positional_argument():
    """`main.py validate CONFIG` works like `-c CONFIG`; giving neither is one line."""
    p = cli("validate", "configs/summary.yaml")
    assert p.returncode == 0
    assert p.stdout == ("configs/summary.yaml: ok (file-input -> json-decode -> "
                        "site-state-reducer -> sorted-stdout-output)\n")
    assert cli("graph", "configs/summary.yaml").stdout == cli(
        "graph", "-c", "configs/summary.yaml").stdout
    p = cli("validate")
    assert (p.returncode, p.stderr) == (2, "sluice: error: main.py validate: give the config "
                                           "once: CONFIG or -c CONFIG (see `python main.py "
                                           "validate -h`)\n")


def test_a_signal_during_start_up_stops_at_once(tmp_path):
    """A run stopped before its tasks start (here, by SIGTERM while it plans) exits at
    once with one line: nothing polls the stop request before that."""
    import signal
    import subprocess
    import time
    log = tmp_path / "in.jsonl"
    log.write_bytes((ROOT / "tests" / "data" / "sample" / "input.jsonl").read_bytes())
    slow = tmp_path / "slow.py"  # an input plugin that takes 30 s to plan
    slow.write_text("import time\nfrom stages.file_input import FileInput\n"
                    "class Slow(FileInput):\n    name = 'slow-input'\n"
                    "    def ranges(self, target, frontier=None):\n"
                    "        time.sleep(30)\n        return super().ranges(target, frontier)\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD.replace("file-input", "slow:Slow"))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "-c", str(cfg), "-f",
                             str(log), "--state-dir", str(tmp_path / "s")], cwd=tmp_path,
                            env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - start < 5
    assert (proc.returncode, err) == (143, "sluice: stopped by SIGTERM before any input "
                                           "was read\n")


def test_config_fuzzer_finds_nothing():
    """test_scripts/fuzz_config.py, in-process: 200 seeded mutants of the shipped configs,
    each validated and run on the sample, give no traceback, hang or multi-line error."""
    said: list[str] = []
    assert fuzz_config.fuzz(200, 11, in_process=True, timeout=30, say=said.append) == 0, said
