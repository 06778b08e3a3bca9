"""fork: one input feeding several branches, each to its own output, exactly."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import main
from conftest import ROOT, SUMMARY, cli, generate
from pipeline import ConfigError
from pipeline.config import parse_config
from reference import parse, summarize

REGISTRY = main.build_registry()
FORK = """\
pipeline:
  - file-input: {path: in.jsonl}
  - json-decode: {}
  - fork:
      summary:
        - site-state-reducer: {}
        - sorted-stdout-output: {}
      statuses:
        - where: {field: type, equals: status}
        - jsonl-output: {path: statuses.jsonl}
"""


def valid_statuses(data: bytes) -> list[dict]:
    """The valid status records of a log, duplicates included, in file order."""
    out = []
    for line in data.split(b"\n"):
        rec = parse(line)
        if rec is not None and rec["type"] == "status":
            out.append(json.loads(line))
    return out


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("fork") / "log.jsonl"
    return generate(path, 15_000, 51, "--mixed-site-ids", "--conflicting-dups",
                    "--bad-rate", "0.005", "--sites", "25")


def write(tmp_path, text, name="fork.yaml"):
    cfg = tmp_path / name
    cfg.write_text(text)
    return cfg


@pytest.mark.parametrize("workers,kb", [("1", None), ("2", None), ("2", "16")])
def test_summary_and_statuses_branches_are_exact(log, tmp_path, workers, kb):
    """stdout equals the plain summary; statuses.jsonl holds every valid status record,
    duplicates included, in file order (one worker, two, and tiny buckets)."""
    cfg = write(tmp_path, FORK)
    p = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / "s"), "-w", workers,
            cwd=tmp_path, env={"SLUICE_TEST_BUCKET_KB": kb} if kb else None)
    assert p.returncode == 0, p.stderr
    assert p.stdout == summarize(log.read_bytes())
    got = [json.loads(x) for x in (tmp_path / "statuses.jsonl").read_text().splitlines()]
    assert got == valid_statuses(log.read_bytes())


def test_fork_without_reducers_runs_every_branch_and_resumes(log, tmp_path, monkeypatch,
                                                             capsys):
    """Two reducer-free branches in one process: each output complete; after a crash
    mid-run, the rerun finishes both without a line written twice."""
    cfg = write(tmp_path, """\
pipeline:
  - file-input: {path: in.jsonl, block_size: 4096}
  - json-decode: {schema: object}
  - fork:
      messages:
        - where: {field: type, equals: message}
        - jsonl-output: {path: messages.jsonl}
      statuses:
        - where: {field: type, equals: status}
        - csv-output: {path: statuses.csv, columns: [id, from, timestamp]}
checkpoint: {every_records: 500}
""")
    argv = ["-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / "s")]
    monkeypatch.chdir(tmp_path)
    assert main.main(argv + ["--no-checkpoint"]) == 0
    want = {f: (tmp_path / f).read_bytes() for f in ("messages.jsonl", "statuses.csv")}
    for f in want:
        (tmp_path / f).unlink()
    from stages.file_input import FileInput
    real = FileInput.read

    def crashing(self):
        for i, batch in enumerate(real(self)):
            if i == 300:
                raise KeyboardInterrupt
            yield batch
    with monkeypatch.context() as m:
        m.setattr(FileInput, "read", crashing)
        assert main.main(argv) == 130
    assert not (tmp_path / "messages.jsonl").exists()  # never committed half-way
    capsys.readouterr()
    assert main.main(argv) == 0
    assert "resumed at line" in capsys.readouterr().err
    for f, data in want.items():
        assert (tmp_path / f).read_bytes() == data
    objects = []
    for line in log.read_bytes().split(b"\n"):
        try:
            objects.append(json.loads(line))
        except ValueError:
            continue
    statuses = [o for o in objects if isinstance(o, dict) and o.get("type") == "status"]
    assert want["statuses.csv"].count(b"\n") == len(statuses) + 1


def test_dedupe_then_fork_into_two_reducers(log, tmp_path):
    """A reducer before the fork, and one in each branch: each branch exact."""
    cfg = write(tmp_path, """\
pipeline:
  - file-input: {path: in.jsonl}
  - json-decode: {}
  - dedupe: {field: id}
  - fork:
      summary:
        - site-state-reducer: {}
        - sorted-stdout-output: {}
      types:
        - count: {field: type}
        - csv-output: {path: types.csv, columns: [type, n]}
""")
    for workers in ("1", "2"):
        p = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / workers),
                "-w", workers, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert p.stdout == summarize(log.read_bytes())
        seen, counts = set(), {}
        for line in log.read_bytes().split(b"\n"):
            rec = parse(line)
            if rec is not None and rec["id"] not in seen:
                seen.add(rec["id"])
                counts[rec["type"]] = counts.get(rec["type"], 0) + 1
        assert (tmp_path / "types.csv").read_text() == "type,n\n" + "".join(
            f"{k},{v}\n" for k, v in sorted(counts.items()))


def test_stats_name_each_branch(log, tmp_path):
    """--stats has a row per stage of each branch, named branch/stage."""
    cfg = write(tmp_path, FORK)
    p = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / "s"), "--stats",
            cwd=tmp_path)
    stages = [line.split()[0] for line in p.stderr.splitlines()[1:7]]
    assert stages == ["file-input", "json-decode", "summary/site-state-reducer",
                      "summary/sorted-stdout-output", "statuses/where", "statuses/jsonl-output"]
    n = len(valid_statuses(log.read_bytes()))
    where = next(x for x in p.stderr.splitlines() if x.startswith("statuses/where"))
    assert where.split()[2] == f"{n:,}"


def test_stress_kill_with_a_fork():
    """SIGKILLs at random moments: stdout and statuses.jsonl exact every time."""
    cfg = ROOT / "configs" / "fork.yaml"
    for workers in ("1", "2"):
        p = subprocess.run([sys.executable, str(ROOT / "test_scripts" / "stress_kill.py"),
                            "--config", str(cfg), "--compare", "statuses.jsonl",
                            "--lines", "20000", "--kills", "6", "--seed", "12",
                            "--workers", workers, "--max-seconds", "200"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "0 failures" in p.stdout


@pytest.mark.parametrize("text,message", [
    (FORK.replace("  - json-decode: {}\n", "  - json-decode: {}\n  - sorted-stdout-output\n"),
     "x.yaml:4: stage 'sorted-stdout-output' is an output; only processors and reducers go "
     "between the input and the output (before a fork, every output goes at the end of a "
     "branch)"),
    (FORK.replace("        - jsonl-output: {path: statuses.jsonl}\n", ""),
     "x.yaml:9: fork branch 'statuses' must end with an output; 'where' is a processor"),
    (FORK.replace("{field: type, equals: status}", "{feild: type, equals: status}"),
     "x.yaml:9: fork branch 'statuses': stage 'where': unknown option 'feild' (did you mean "
     "'field'?)"),
    (FORK.replace("      statuses:\n", "      statuses: []\n      other:\n"),
     "x.yaml:8: fork branch 'statuses' must be a non-empty list of stages"),
    (FORK + "  - sorted-stdout-output\n",
     "x.yaml:4: `fork` must be the last element of `pipeline`"),
    (FORK.replace("  - fork:\n", "  - fork: []\n  - nothing:\n"),
     "x.yaml:4: `fork` must be the last element of `pipeline`"),
    ("pipeline:\n  - file-input: {path: x}\n  - fork: []\n",
     "x.yaml:3: `fork` must map branch names to lists of stages"),
    (FORK.replace("      statuses:", "      summary:"),
     "x.yaml:8: key 'summary' is given twice in one mapping (first at line 5); YAML would "
     "silently keep only the last"),
])
def test_fork_config_errors_name_the_branch_and_line(text, message):
    """Each fork mistake is one line with file:line and the branch it is in."""
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.yaml", REGISTRY)
    assert str(err.value) == message


def test_graph_and_validate_draw_the_tree(tmp_path):
    """graph prints the fork as a tree (text and Mermaid); validate names both branches."""
    cfg = write(tmp_path, FORK)
    text = cli("graph", "-c", str(cfg)).stdout
    assert text == (
        "file-input [input] (path='in.jsonl')\n"
        "-(lines)-> json-decode [processor]\n"
        "|-(site-event)-> fork branch 'summary'\n"
        "|   site-state-reducer [reducer]\n"
        "|   -(summary-row)-> sorted-stdout-output [output]\n"
        "`-(site-event)-> fork branch 'statuses'\n"
        "    where [processor] (field='type', equals='status')\n"
        "    -(site-event)-> jsonl-output [output] (path='statuses.jsonl')\n")
    mermaid = cli("graph", "-c", str(cfg), "--mermaid").stdout.splitlines()
    assert mermaid[-5:] == ["    s0 -->|lines| s1", "    s1 -->|summary: site-event| s2",
                            "    s2 -->|summary-row| s3", "    s1 -->|statuses: site-event| s4",
                            "    s4 -->|site-event| s5"]


def test_the_shipped_fork_example_passes_its_sidecar():
    """configs/fork.yaml's cases, which check stdout and statuses.jsonl exactly."""
    p = cli("test", str(ROOT / "configs" / "fork_test.yaml"))
    assert p.returncode == 0, p.stdout
    assert p.stdout.splitlines()[-1] == "1 passed, 0 failed"


def test_dask_runs_a_fork(log, tmp_path):
    """The same fork on a Dask LocalCluster: identical stdout and statuses.jsonl."""
    pytest.importorskip("distributed")
    cfg = write(tmp_path, FORK)
    p = cli("-c", str(cfg), "-f", str(log), "--state-dir", str(tmp_path / "s"), "--executor",
            "dask", "--partition-mb", "1", cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout == summarize(log.read_bytes())
    got = [json.loads(x) for x in (tmp_path / "statuses.jsonl").read_text().splitlines()]
    assert got == valid_statuses(log.read_bytes())


def test_plain_summary_unchanged_by_a_fork_elsewhere(log, tmp_path):
    """Sanity: the summary config itself still matches the reference on this log."""
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "s"))
    assert p.stdout == summarize(log.read_bytes())
