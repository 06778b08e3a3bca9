from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import main  # noqa: E402

SUMMARY = str(ROOT / "configs" / "summary.yaml")


@dataclass
class Result:
    rc: int
    out: str
    err: str
    dead_letter: Path

    def rejects(self) -> list[dict]:
        if not self.dead_letter.exists():
            return []
        return [json.loads(x) for x in self.dead_letter.read_text().splitlines()]


def rec(id: str, type: str, site, frm: str, ts, status: str | None = None, **extra) -> str:
    """One JSON line in the input format of configs/summary.md."""
    d = {"id": id, "from": frm, "type": type, "site_id": site, "timestamp": ts,
         "data": {"status": status} if type == "status" else {"message": "hi"}}
    d.update(extra)
    return json.dumps(d)


@pytest.fixture
def run(tmp_path, capsys):
    """Run main.main in-process on lines (str or bytes); returns a Result."""
    counter = iter(range(1000))

    def _run(data, *args: str, config: str = SUMMARY) -> Result:
        if isinstance(data, list):
            data = "\n".join(data) + "\n"
        if isinstance(data, str):
            data = data.encode()
        path = tmp_path / f"input{next(counter)}.jsonl"
        path.write_bytes(data)
        state = tmp_path / "state"
        argv = ["-c", config, "-f", str(path), "--state-dir", str(state), *args]
        rc = main.main(argv)
        cap = capsys.readouterr()
        return Result(rc, cap.out, cap.err, state / "dead_letter.jsonl")

    return _run


def cli(*args: str, cwd: Path | None = None, stdin: str | None = None,
        env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python main.py ARGS` as a user would."""
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, input=stdin, timeout=timeout,
                          env={**os.environ, **(env or {})})


def generate(path: Path, lines: int, seed: int, *extra: str) -> Path:
    subprocess.run([sys.executable, str(ROOT / "test_scripts" / "generate.py"),
                    "--lines", str(lines), "--seed", str(seed), "-o", str(path), *extra],
                   check=True)
    return path


@pytest.fixture(scope="session")
def pg():
    """A throwaway PostgreSQL server (tests/pgserver.py), started once, for the tests
    that need one; it stops at the end of the session, or with the tests if they die."""
    from pgserver import Server
    server = Server().start()
    try:
        yield server
    finally:
        server.stop()
