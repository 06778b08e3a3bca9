"""The summary job against the independent reference implementation in reference.py."""
from __future__ import annotations

import pytest

from conftest import generate
from reference import summarize


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_matches_reference_on_generated_logs(run, tmp_path, seed):
    """Byte-identical to the simple implementation: mixed site ids, bad lines, dups."""
    path = generate(tmp_path / "log.jsonl", 6000, seed, "--mixed-site-ids",
                    "--conflicting-dups", "--bad-rate", "0.01", "--sites", "25",
                    "--operators", "3", "--seconds-per-line", "2")
    data = path.read_bytes()
    r = run(data)
    assert r.rc == 0
    assert r.out == summarize(data)
    assert r.out.count("\n") > 20


def test_matches_reference_with_bom_crlf_and_no_final_newline(run, tmp_path):
    """The same log with a BOM, CRLF line ends and no final newline."""
    path = generate(tmp_path / "log.jsonl", 3000, 9, "--mixed-site-ids", "--bom", "--crlf",
                    "--no-final-newline", "--bad-rate", "0.02")
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and not data.endswith(b"\n")
    assert run(data).out == summarize(data)


def test_matches_reference_on_dense_ties(run, tmp_path):
    """Few distinct timestamps, so most statuses and messages tie."""
    path = generate(tmp_path / "log.jsonl", 4000, 5, "--sites", "4", "--operators", "2",
                    "--seconds-per-line", "0.01", "--status-rate", "0.4")
    data = path.read_bytes()
    assert run(data).out == summarize(data)


def test_shipped_sample_matches_expected_and_reference(run):
    """The README's sample: its expected output is the reference's output."""
    from conftest import ROOT
    sample = ROOT / "tests" / "data" / "sample"
    data = (sample / "input.jsonl").read_bytes()
    expected = (sample / "expected.txt").read_text()
    assert summarize(data) == expected
    r = run(data)
    assert r.out == expected
    assert "rejected 3 of" in r.err
