"""The command line as a user runs it: exit codes, stdout, stderr."""
from __future__ import annotations

from conftest import ROOT, SUMMARY, cli

SAMPLE = str(ROOT / "tests" / "data" / "sample" / "input.jsonl")
EXPECTED = (ROOT / "tests" / "data" / "sample" / "expected.txt").read_text()


def test_run_prints_summary_on_stdout_and_report_on_stderr(tmp_path):
    """Exit 0; stdout is the summary only; stderr ends with the one-line report."""
    p = cli("-c", SUMMARY, "-f", SAMPLE, "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0
    assert p.stdout == EXPECTED
    dead = tmp_path / "s" / "dead_letter.jsonl"
    assert p.stderr.splitlines()[-1] == (
        f"sluice: 2,003 lines read, 2,000 records, 122 duplicates skipped; "
        f"rejected 3 of 2,003 lines (reasons in {dead})")
    assert len(dead.read_text().splitlines()) == 3


def test_default_dead_letter_is_in_dot_pipeline_state(tmp_path):
    """Without flags, dead letters go to .pipeline-state/dead_letter.jsonl in the cwd."""
    p = cli("-c", SUMMARY, "-f", SAMPLE, cwd=tmp_path)
    assert p.returncode == 0
    assert (tmp_path / ".pipeline-state" / "dead_letter.jsonl").exists()
    assert "(reasons in .pipeline-state/dead_letter.jsonl)" in p.stderr


def test_missing_input_is_exit_2_one_line(tmp_path):
    """A missing input file: exit 2 and one clear line, no traceback."""
    p = cli("-c", SUMMARY, "-f", str(tmp_path / "nope.jsonl"), "--state-dir", str(tmp_path))
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr == (f"sluice: error: cannot read input "
                        f"'{tmp_path / 'nope.jsonl'}': No such file or directory\n")


def test_input_is_a_directory_is_exit_2(tmp_path):
    p = cli("-c", SUMMARY, "-f", str(tmp_path), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 2
    assert p.stderr == f"sluice: error: cannot read input '{tmp_path}': Is a directory\n"


def test_missing_config_is_exit_2(tmp_path):
    p = cli("-c", str(tmp_path / "x.yaml"), "-f", SAMPLE)
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: {tmp_path / 'x.yaml'}: cannot read config: "
                        f"No such file or directory\n")


def test_bad_config_is_exit_2_with_file_and_line(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("pipeline:\n  - file-input:\n      pth: a\n  - sorted-stdout-output\n")
    p = cli("-c", str(cfg), "-f", SAMPLE)
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: {cfg}:3: stage 'file-input': unknown option "
                        f"'pth' (did you mean 'path'?)\n")


def test_usage_error_is_exit_2():
    p = cli("-f", SAMPLE)
    assert p.returncode == 2
    assert "the following arguments are required: -c/--config" in p.stderr


def test_strict_is_exit_1(tmp_path):
    p = cli("-c", SUMMARY, "-f", SAMPLE, "--strict", "--state-dir", str(tmp_path))
    assert p.returncode == 1
    assert p.stdout == ""
    assert p.stderr == ("sluice: error: line 2001: invalid JSON: input data was truncated "
                        "(--strict stops at the first rejected line)\n")


def test_help_documents_exit_codes():
    p = cli("-h")
    assert p.returncode == 0
    assert "exit codes: 0 ok, 1 rejected line under --strict" in p.stdout


def test_help_documents_the_exit_codes_of_machine_faults():
    """-h names 141 (stdout closed by its reader) and --strict-checkpoints."""
    p = cli("-h")
    text = " ".join(p.stdout.split())
    assert p.returncode == 0
    assert "141 standard output closed by its reader" in text
    assert "--strict-checkpoints exit 2 if any checkpoint could not be written" in text


def test_stdout_closed_by_head_is_quiet(tmp_path):
    """`main.py stages | head -1`: the reader goes away; exit 141, nothing on stderr."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "stages"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    assert p.wait(timeout=60) == 141
    assert p.stderr.read() == b""

