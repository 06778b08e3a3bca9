"""file-input: blocks, long lines, BOM, positions and newline-aligned splits."""
from __future__ import annotations

import pytest

from stages.file_input import FileInput


def read_all(reader):
    lines, firsts = [], []
    for batch in reader.read():
        firsts.append((batch.first_line, batch.first_offset))
        lines.extend(batch)
    return lines, firsts


def test_lines_longer_than_a_block(tmp_path):
    """A line of several MB is read whole, even with 1 KB blocks."""
    big = b"x" * (3 << 20)
    p = tmp_path / "f"
    p.write_bytes(b"a\n" + big + b"\nb")
    lines, _ = read_all(FileInput(path=str(p), block_size=1024))
    assert lines == [b"a", big, b"b"]


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64, 1 << 20])
def test_positions_of_every_line(tmp_path, block):
    """Every batch knows the line number and byte offset of each of its lines."""
    data = b"\xef\xbb\xbfone\ntwo\r\n\nfour\nfive"
    p = tmp_path / "f"
    p.write_bytes(data)
    seen = []
    for batch in FileInput(path=str(p), block_size=block).read():
        seen += [(batch.locate(i), rec) for i, rec in enumerate(batch)]
    assert seen == [((1, 3), b"one"), ((2, 7), b"two\r"), ((3, 12), b""), ((4, 13), b"four"),
                    ((5, 18), b"five")]


@pytest.mark.parametrize("target", [10**6, 3000, 1000, 300, 50, 1])
def test_ranges_cover_every_line_once_in_order(tmp_path, target):
    """ranges() gives newline-aligned pieces that together read the file exactly."""
    lines = [f"line {i} ".encode() * (i % 5 + 1) for i in range(200)]
    p = tmp_path / "f"
    p.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    source = FileInput(path=str(p), block_size=64)
    ranges, _ = source.ranges(target)
    assert 1 <= len(ranges) <= max(p.stat().st_size // target, 1) + 1
    out = []
    for where in ranges:
        out.extend(read_all(source.part(where))[0])
    assert out == lines


def test_ranges_after_a_frontier_cover_only_the_appended_lines(tmp_path):
    """A grown file gets ranges for the new part only; a replaced one is refused."""
    p = tmp_path / "f"
    p.write_bytes(b"".join(b"%d\n" % i for i in range(100)))
    source = FileInput(path=str(p), block_size=64)
    _, frontier = source.ranges(100)
    with open(p, "ab") as fh:
        fh.write(b"".join(b"%d\n" % i for i in range(100, 150)))
    grown = FileInput(path=str(p), block_size=64)
    assert grown.frontier_problem(frontier) is None
    more, _ = grown.ranges(100, frontier)
    assert [x for w in more for x in read_all(grown.part(w))[0]] == [b"%d" % i for i in range(100, 150)]
    p.write_bytes(b"other\n" * 300)
    assert FileInput(path=str(p)).frontier_problem(frontier) == (
        "the input file was replaced (its first bytes differ)")


def test_resume_from_snapshot_reads_only_the_rest(tmp_path):
    """restore(snapshot) continues after the last batch yielded."""
    p = tmp_path / "f"
    p.write_bytes(b"".join(b"%d\n" % i for i in range(100)))
    first = FileInput(path=str(p), block_size=32)
    it = first.read()
    head = list(next(it)) + list(next(it))
    state = first.snapshot()
    second = FileInput(path=str(p), block_size=32)
    second.restore(state)
    rest, firsts = read_all(second)
    assert head + rest == [b"%d" % i for i in range(100)]
    assert firsts[0][0] == len(head) + 1
    assert second.counters() == {"lines": 100}
