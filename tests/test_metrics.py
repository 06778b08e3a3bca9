"""Per-stage metrics (--stats, --stats-json) and the progress bar."""
from __future__ import annotations

import json

import main
from conftest import ROOT, SUMMARY, cli, generate
from pipeline.engine.job import run_job
from pipeline.engine.options import JobOptions


def test_stats_table_counts_every_stage(tmp_path):
    """--stats prints records in/out, rejects and seconds per stage."""
    sample = ROOT / "tests" / "data" / "sample" / "input.jsonl"
    p = cli("-c", SUMMARY, "-f", str(sample), "--state-dir", str(tmp_path), "--stats",
            "--stats-json", str(tmp_path / "stats.json"))
    assert p.returncode == 0
    lines = p.stderr.splitlines()
    header = next(i for i, x in enumerate(lines) if x.startswith("stage "))
    rows = [x.split() for x in lines[header + 1:header + 5]]
    assert [r[0] for r in rows] == ["file-input", "json-decode", "site-state-reducer",
                                    "sorted-stdout-output"]
    assert [r[1:4] for r in rows] == [["0", "2,003", "0"], ["2,003", "2,000", "3"],
                                      ["2,000", "12", "0"], ["12", "0", "0"]]
    data = json.loads((tmp_path / "stats.json").read_text())
    assert [s["stage"] for s in data["stages"]] == [r[0] for r in rows]
    assert data["stages"][1]["rejected"] == 3 and data["rejected"] == 3
    assert all(s["seconds"] >= 0 for s in data["stages"])


def test_stats_with_workers_add_up(tmp_path):
    """With workers, per-stage counts are summed over partitions."""
    log = generate(tmp_path / "log.jsonl", 3000, 2, "--bad-rate", "0.01")
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path), "-w", "3",
            "--stats-json", str(tmp_path / "s.json"))
    one = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "1"), "-w", "1",
              "--stats-json", str(tmp_path / "s1.json"))
    assert p.returncode == one.returncode == 0
    many = json.loads((tmp_path / "s.json").read_text())["stages"]
    single = json.loads((tmp_path / "s1.json").read_text())["stages"]
    strip = [{k: v for k, v in s.items() if k != "seconds"} for s in many]
    assert strip == [{k: v for k, v in s.items() if k != "seconds"} for s in single]


def test_progress_bar_only_when_asked(tmp_path, capsys):
    """The bar is drawn on stderr when enabled, and never when stderr is not a TTY."""
    log = generate(tmp_path / "log.jsonl", 2000, 3)
    cfg = main.load_config(SUMMARY, main.build_registry())
    cfg.stages[0].options["path"] = str(log)
    run_job(cfg, JobOptions(state_dir=str(tmp_path / "a"), progress=True, notify=print))
    err = capsys.readouterr().err
    assert "sluice" in err and "B/" in err and "lines/s" in err
    p = cli("-c", SUMMARY, "-f", str(log), "--state-dir", str(tmp_path / "b"))
    assert "lines/s" not in p.stderr  # a pipe, not a terminal
