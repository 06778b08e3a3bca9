"""Sluice's built-in stages, one module per stage.

Importing this package registers nothing; `builtin_stages()` lists the classes and
the caller registers them (see main.py).
"""
from __future__ import annotations

from pipeline import Stage


def builtin_stages() -> list[type[Stage]]:
    from .aggregate import Aggregate
    from .count import Count
    from .csv_output import CsvOutput
    from .date import Date
    from .dedupe import Dedupe
    from .dissect import Dissect
    from .file_input import FileInput
    from .grok import Grok
    from .json_decode import JsonDecode
    from .jsonl_output import JsonlOutput
    from .kv import Kv
    from .mutate import Mutate
    from .route import Route, RouteBranch
    from .parquet_output import ParquetOutput
    from .postgres_output import PostgresOutput
    from .site_state_reducer import SiteStateReducer
    from .sorted_stdout_output import SortedStdoutOutput
    from .sqlite_output import SqliteOutput
    from .summary_json_output import SummaryJsonOutput
    from .where import Where

    return [FileInput, JsonDecode, Grok, Dissect, Date, Kv, Where, Mutate, Dedupe, SiteStateReducer, Count, Aggregate,
            SortedStdoutOutput, SummaryJsonOutput, JsonlOutput, CsvOutput,
            ParquetOutput, SqliteOutput, PostgresOutput, Route, RouteBranch]
