"""date: each format, offsets, DST gaps and repeats, leap days, epoch ms, garbage, and
output as epoch seconds or ISO text, on records and on columns."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from conftest import cli
from pipeline import Batch
from pipeline.columns import Columns
from pipeline.testing import Context, check_resume
from stages.date import Date


def epoch(*args, tz=timezone.utc):
    return datetime(*args, tzinfo=tz).timestamp()


def parse(values, **options):
    """{field t: value} records through `date`: (what it wrote to t, rejects)."""
    stage, ctx = Date(field="t", **options), Context()
    stage.open(ctx)
    out = [r for b in stage.process(iter([Batch([{"t": v} for v in values])])) for r in b]
    return [r["t"] for r in out], [why for _, why, _ in ctx.rejected]


@pytest.mark.parametrize("text,expected", [
    ("2026-10-10T13:55:36Z", epoch(2026, 10, 10, 13, 55, 36)),
    ("2026-10-10T13:55:36+02:00", epoch(2026, 10, 10, 11, 55, 36)),
    ("2026-10-10T13:55:36+0200", epoch(2026, 10, 10, 11, 55, 36)),
    ("2026-10-10T13:55:36.25-07:00", epoch(2026, 10, 10, 20, 55, 36) + 0.25),
    ("2026-10-10 13:55:36", epoch(2026, 10, 10, 13, 55, 36)),
    ("2026-10-10 13:55:36+02:00", epoch(2026, 10, 10, 11, 55, 36)),
    ("2026-10-10T13:55:36.123456", epoch(2026, 10, 10, 13, 55, 36) + 0.123456),
    ("2024-02-29", epoch(2024, 2, 29)),
    ("2024-02-29T23:59:59Z", epoch(2024, 2, 29, 23, 59, 59)),
])
def test_iso8601(text, expected):
    assert parse([text]) == ([expected], [])


@pytest.mark.parametrize("text", ["2023-02-29", "2026-13-01T00:00:00Z", "garbage", "",
                                  "10/Oct/2026:13:55:36 +0000", "2026-10-10T25:00:00"])
def test_garbage_and_impossible_dates_fail_naming_the_field_and_value(text):
    assert parse([text]) == ([], [f"field 't': no format reads {json.dumps(text)}"
                                  .replace('"', "'")])


def test_strftime_with_offsets_and_formats_tried_in_order():
    got, rejected = parse(["10/Oct/2026:13:55:36 -0700", "2026-10-10T13:55:36Z", 1791640536,
                           "1791640536.5", "Oct 10 2026"],
                          formats=["%d/%b/%Y:%H:%M:%S %z", "ISO8601", "epoch"])
    assert got == [epoch(2026, 10, 10, 20, 55, 36), epoch(2026, 10, 10, 13, 55, 36),
                   1791640536.0, 1791640536.5]
    assert rejected == ["field 't': no format reads 'Oct 10 2026'"]


def test_epoch_ms_and_missing_or_null_values():
    stage, ctx = Date(field="t", formats=["epoch_ms"]), Context()
    stage.open(ctx)
    out = [r for b in stage.process(iter([Batch([{"t": 1791640536123}, {"t": "17"}, {},
                                                  {"t": None}, {"t": True}])])) for r in b]
    assert out == [{"t": 1791640536.123}, {"t": 0.017}]
    assert [why for _, why, _ in ctx.rejected] == [
        "field 't' is missing", "field 't' is null", "field 't': no format reads true"]


def test_local_times_in_a_zone_with_its_daylight_saving_changes():
    from zoneinfo import ZoneInfo
    berlin = ZoneInfo("Europe/Berlin")
    got, rejected = parse(["2026-07-01 12:00:00", "2026-10-25 02:30:00",
                           "2026-03-29 02:30:00", "2026-03-29 03:30:00",
                           "2026-07-01T12:00:00Z"], timezone="Europe/Berlin")
    assert got == [epoch(2026, 7, 1, 12, tz=berlin),
                   epoch(2026, 10, 25, 0, 30),  # twice that night: the earlier, CEST
                   epoch(2026, 3, 29, 1, 30),  # 03:30 CEST
                   epoch(2026, 7, 1, 12)]  # an offset wins over the zone
    assert rejected == ["field 't': 2026-03-29T02:30:00 does not exist in Europe/Berlin "
                        "(the clocks skipped it)"]


def test_iso_output_and_a_target():
    stage = Date(field="t", target="at", formats=["epoch"], **{"as": "iso"})
    stage.open(Context())
    out = [r for b in stage.process(iter([Batch([{"t": 1791640536}, {"t": 1791640536.25},
                                                  {"t": -1.5}])])) for r in b]
    assert [r["at"] for r in out] == ["2026-10-10T13:55:36Z", "2026-10-10T13:55:36.25Z",
                                      "1969-12-31T23:59:58.5Z"]
    assert out[0]["t"] == 1791640536


def test_on_columns_through_main_with_keep(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"t":"2026-10-10T13:55:36Z","n":1}\n{"t":"x","n":2}\n'
                                       '{"t":"2026-10-10T13:55:37.5Z","n":3}\n')
    (tmp_path / "p.yaml").write_text(
        "pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {schema: object}\n"
        "  - date: {field: t, on_failure: keep}\n  - jsonl-output: {path: '-'}\n")
    p = cli("-c", str(tmp_path / "p.yaml"), "-f", str(tmp_path / "in.jsonl"), "-w", "1",
            "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert [json.loads(x) for x in p.stdout.splitlines()] == [
        {"t": 1791640536.0, "n": 1},
        {"t": "x", "n": 2, "_failures": [{"stage": "date",
                                          "reason": "field 't': no format reads 'x'"}]},
        {"t": 1791640537.5, "n": 3}]


def test_columns_and_records_agree():
    records = [{"t": "2026-10-10T13:55:36Z"}, {"t": "2024-02-29"}]
    stage = Date(field="t")
    stage.open(Context())
    a = [r for b in stage.process(iter([Batch(records)])) for r in b]
    b = list(next(stage.process(iter([Columns.from_records(Batch(records))]))).records())
    assert a == b


@pytest.mark.parametrize("options,problem", [
    ("{field: t, formats: []}", "option 'formats' must be a non-empty list of formats"),
    ("{field: t, formats: [yyyy-MM-dd]}", "'yyyy-MM-dd' is not ISO8601, epoch or epoch_ms, "
                                          "and has no strftime directive"),
    ("{field: t, timezone: Mars/Olympus}", "unknown time zone 'Mars/Olympus'"),
    ("{field: t, as: unix}", "option 'as' must be one of"),
])
def test_bad_options_are_config_errors(tmp_path, options, problem):
    (tmp_path / "p.yaml").write_text("pipeline:\n  - file-input: {path: in.jsonl}\n"
                                     "  - json-decode: {schema: object}\n"
                                     f"  - date: {options}\n  - jsonl-output: {{path: '-'}}\n")
    p = cli("validate", "-c", str(tmp_path / "p.yaml"))
    assert p.returncode == 2
    assert p.stderr.startswith(f"sluice: error: {tmp_path / 'p.yaml'}:4: stage 'date': ")
    assert problem in p.stderr


def test_failure_counts_resume():
    batches = [Batch([{"t": "2026-01-01"}, {"t": "bad"}]), Batch([{"t": "nope"}])]
    out = check_resume(lambda: Date(field="t", on_failure="drop"), batches)
    assert out.counters["dropped_on_failure"] == 2
