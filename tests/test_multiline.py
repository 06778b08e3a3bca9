"""file-input's `multiline`: lines joined into records (previous, next, negate,
max_lines), each record located at its first line, and a resume at any batch boundary
never splitting one."""
from __future__ import annotations

import json
import random

import pytest

from conftest import cli
from pipeline.testing import check_resume
from stages.file_input import FileInput

JAVA = (b"2026-10-10 13:55:36 INFO started\n"
        b"2026-10-10 13:55:37 ERROR request failed\n"
        b"java.lang.IllegalStateException: boom\n"
        b"\tat com.example.Shop.buy(Shop.java:42)\n"
        b"\tat com.example.Main.main(Main.java:7)\n"
        b"Caused by: java.io.IOException: disk\n"
        b"\t... 2 more\n"
        b"2026-10-10 13:55:38 INFO done\n")


def records(data, tmp_path, block_size=4 << 20, **spec):
    path = tmp_path / "in.log"
    path.write_bytes(data)
    stage = FileInput(path=str(path), block_size=block_size, multiline=spec)
    from pipeline.testing import Context
    stage.open(Context())
    out = []
    for batch in stage.read():
        out += [(*batch.locate(i), r) for i, r in enumerate(batch)]
    return out, stage


def test_a_java_stack_trace_is_one_record_located_at_its_first_line(tmp_path):
    got, stage = records(JAVA, tmp_path, pattern=r"^\d{4}-\d\d-\d\d ", negate=True)
    assert got == [
        (1, 0, b"2026-10-10 13:55:36 INFO started"),
        (2, 33, b"2026-10-10 13:55:37 ERROR request failed\n"
                b"java.lang.IllegalStateException: boom\n"
                b"\tat com.example.Shop.buy(Shop.java:42)\n"
                b"\tat com.example.Main.main(Main.java:7)\n"
                b"Caused by: java.io.IOException: disk\n"
                b"\t... 2 more"),
        (8, JAVA.index(b"2026-10-10 13:55:38"), b"2026-10-10 13:55:38 INFO done")]
    assert stage.counters() == {"lines": 8}


def test_what_next_joins_a_line_to_the_lines_after_it(tmp_path):
    data = b"a \\\nb \\\nc\nd\ne \\\n"
    got, _ = records(data, tmp_path, pattern=r"\\$", what="next")
    assert got == [(1, 0, b"a \\\nb \\\nc"), (4, 10, b"d"), (5, 12, b"e \\")]


def test_an_indented_continuation_and_a_first_line_that_matches(tmp_path):
    data = b"  orphan\nx\n  y\n  z\nw\n"
    got, _ = records(data, tmp_path, pattern=r"^\s")
    assert [r for _, _, r in got] == [b"  orphan", b"x\n  y\n  z", b"w"]


def test_max_lines_completes_a_record_and_the_next_line_starts_another(tmp_path):
    data = b"x\n" + b"".join(b" %d\n" % i for i in range(7))
    got, _ = records(data, tmp_path, pattern=r"^\s", max_lines=3)
    assert [(line, r) for line, _, r in got] == [
        (1, b"x\n 0\n 1"), (4, b" 2\n 3\n 4"), (7, b" 5\n 6")]


def test_a_resume_after_any_batch_never_splits_a_record(tmp_path):
    """Blocks of 40 bytes end mid-record again and again; restored after any batch
    (the work of the next two lost), the records are a straight run's."""
    rng = random.Random(4)
    lines = []
    for i in range(120):
        lines.append(b"2026-10-10 12:00:%02d event %d" % (i % 60, i))
        lines += [b"\tat frame %d" % k for k in range(rng.choice([0, 0, 1, 3, 9]))]
    path = tmp_path / "in.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    spec = {"pattern": r"^\t", "what": "previous"}
    straight = check_resume(lambda: FileInput(path=str(path), block_size=40, multiline=spec))
    got = straight.records
    assert len(got) == 120 and all(r.startswith(b"2026-10-10") for r in got)
    assert b"\n".join(got) == path.read_bytes()[:-1]


def test_through_main_with_two_workers_a_file_is_read_whole(tmp_path):
    (tmp_path / "in.log").write_bytes(JAVA * 300)
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  - file-input:\n      path: in.log\n      block_size: 100\n"
        "      multiline: {pattern: '^\\d{4}-', negate: true}\n"
        "  - grok: {match: '(?s)^%{TIMESTAMP_ISO8601:ts} %{WORD:level} %{GREEDYDATA:msg}$'}\n"
        "  - jsonl-output: {path: out.jsonl}\n")
    p = cli("-c", "p.yaml", "-w", "2", "--state-dir", "s", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 900 and [r["level"] for r in out[:3]] == ["INFO", "ERROR", "INFO"]
    assert out[1]["msg"].endswith("Caused by: java.io.IOException: disk\n\t... 2 more")
    assert p.stderr.startswith("sluice: 2,400 lines read, 900 records")


@pytest.mark.parametrize("spec, problem", [
    ("{pattern: '('}", "`pattern` '(' is not a regular expression: missing ), unterminated "
                       "subpattern at position 0"),
    ("{pattern: x, what: before}", "`what` must be previous or next; got 'before'"),
    ("{pattern: x, max_lines: 0}", "`max_lines` must be a whole number from 1 to 100,000; "
                                   "got 0"),
    ("{pattern: x, negate: 'no'}", "`negate` must be true or false; got 'no'"),
    ("{what: next}", "`pattern` must be a regular expression; got None"),
    ("{pattern: x, lines: 3}", "unknown key 'lines'; the keys are pattern, negate, what, "
                               "max_lines"),
])
def test_a_wrong_multiline_is_a_config_error(tmp_path, spec, problem):
    (tmp_path / "p.yaml").write_text(
        f"pipeline:\n  - file-input:\n      path: in.log\n      multiline: {spec}\n"
        "  - jsonl-output: {path: '-'}\n")
    (tmp_path / "in.log").write_text("")
    p = cli("-c", "p.yaml", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == (f"sluice: error: p.yaml:4: stage 'file-input': option "
                                f"'multiline' {problem}")


def test_multiline_and_follow_are_refused_together(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  - file-input: {path: in.log, follow: true, multiline: {pattern: x}}\n"
        "  - jsonl-output: {path: '-'}\n")
    p = cli("-c", "p.yaml", cwd=tmp_path)
    assert p.returncode == 2
    assert "`multiline` cannot be used with `follow` yet" in p.stderr
