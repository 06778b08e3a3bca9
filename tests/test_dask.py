"""The same pipeline on a real Dask cluster (LocalCluster, 2 worker processes, 127.0.0.1)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SUMMARY, cli, generate

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 host="127.0.0.1", dashboard_address=None)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    generate(d / "a.jsonl", 60000, 31, "--mixed-site-ids", "--bad-rate", "0.005",
             "--conflicting-dups", "--sites", "40")
    generate(d / "b.jsonl", 20000, 32, "--mixed-site-ids", "--bad-rate", "0.005", "--sites", "40")
    return d


def dask_run(path, state, address, *extra, **kw):
    args = ["-c", SUMMARY, "-f", str(path), "--state-dir", str(state), "--executor", "dask",
            "--scheduler", address, "--partition-mb", "1", *extra]
    return cli(*args, **kw)


def test_dask_matches_local_executor(cluster, logs, tmp_path):
    """Byte-identical stdout and dead-letter file, file-order rules included."""
    local = cli("-c", SUMMARY, "-f", str(logs / "a.jsonl"), "--state-dir", str(tmp_path / "l"),
                "-w", "1")
    remote = dask_run(logs / "a.jsonl", tmp_path / "d", cluster.scheduler_address)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    assert ((tmp_path / "d" / "dead_letter.jsonl").read_text()
            == (tmp_path / "l" / "dead_letter.jsonl").read_text())


def test_dask_many_files_match_local(cluster, logs, tmp_path):
    """A glob of several files: partitions per file, rejects name their file."""
    pattern = str(logs / "*.jsonl")
    local = cli("-c", SUMMARY, "-f", pattern, "--state-dir", str(tmp_path / "l"))
    remote = dask_run(pattern, tmp_path / "d", cluster.scheduler_address)
    assert remote.stdout == local.stdout
    assert ((tmp_path / "d" / "dead_letter.jsonl").read_text()
            == (tmp_path / "l" / "dead_letter.jsonl").read_text())


def test_worker_killed_mid_run(cluster, logs, tmp_path):
    """Dask retries the partitions of a killed worker; the result is unchanged."""
    expected = cli("-c", SUMMARY, "-f", str(logs / "a.jsonl"), "--state-dir",
                   str(tmp_path / "l"), "-w", "1").stdout
    client = distributed.Client(cluster.scheduler_address)
    pids = list(client.run(os.getpid).values())
    client.close()
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "-c", SUMMARY, "-f",
                             str(logs / "a.jsonl"), "--state-dir", str(tmp_path / "d"),
                             "--executor", "dask", "--scheduler", cluster.scheduler_address,
                             "--partition-mb", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the map tasks have started
        if list((tmp_path / "d").glob("*/s0/m*/spill.dat")):
            break
        time.sleep(0.02)
    assert time.monotonic() < deadline, "the map tasks never started"
    os.kill(pids[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out == expected


def test_killed_client_resumes_without_recomputing(cluster, logs, tmp_path):
    """Map tasks finished before the client was killed are reused by the rerun."""
    expected = cli("-c", SUMMARY, "-f", str(logs / "a.jsonl"), "--state-dir",
                   str(tmp_path / "l"), "-w", "1").stdout
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "-c", SUMMARY, "-f",
                             str(logs / "a.jsonl"), "--state-dir", str(tmp_path / "d"),
                             "--executor", "dask", "--scheduler", cluster.scheduler_address,
                             "--partition-mb", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    saved: list = []
    while time.monotonic() < deadline and len(saved) < 2:
        saved = list((tmp_path / "d").glob("*/s0/m*/result.json"))
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    saved = list((tmp_path / "d").glob("*/s0/m*/result.json"))
    assert len(saved) >= 2
    again = dask_run(logs / "a.jsonl", tmp_path / "d", cluster.scheduler_address)
    assert again.returncode == 0, again.stderr
    assert again.stdout == expected
    notice = [x for x in again.stderr.splitlines() if x.startswith("sluice: resumed")][0]
    reused = int(notice.split(" had finished")[0].split("; ")[-1].split(" of ")[0].split()[-1])
    tasks = int(notice.split(" had finished")[0].split(" of ")[-1].split()[0])
    assert reused >= len(saved) >= 2 and tasks > reused
    assert notice.endswith((f"{reused} of {tasks} had finished",
                            f"{reused} of {tasks} map tasks had finished"))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hand_started_scheduler_and_workers(logs, tmp_path):
    """`dask scheduler` + two `dask worker`s on 127.0.0.1, then the Sluice command."""
    dask_bin = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(dask_bin + ["--host", "127.0.0.1", "--port", str(port),
                                          "--dashboard-address", ":0"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
                 "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        expected = cli("-c", SUMMARY, "-f", str(logs / "a.jsonl"), "--state-dir",
                       str(tmp_path / "l"), "-w", "1").stdout
        p = dask_run(logs / "a.jsonl", tmp_path / "d", address)
        assert p.returncode == 0, p.stderr
        assert p.stdout == expected
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_dask_runs_a_chain_without_reducers_in_parts(cluster, logs, tmp_path):
    """where -> jsonl-output on the cluster, the input cut into 1 MiB partitions: the
    workers encode the parts, the file is byte for byte the one a local run writes."""
    cfg = tmp_path / "filter.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: x}\n  - json-decode: {schema: object}\n"
                   "  - where: {field: type, equals: message}\n"
                   "  - jsonl-output: {path: OUT}\n")
    outs = {}
    for name, extra in (("local", ["-w", "1"]),
                        ("dask", ["--executor", "dask", "--scheduler",
                                  cluster.scheduler_address, "--partition-mb", "1"])):
        (tmp_path / f"{name}.yaml").write_text(
            cfg.read_text().replace("OUT", str(tmp_path / f"{name}.jsonl")))
        p = cli("-c", str(tmp_path / f"{name}.yaml"), "-f", str(logs / "a.jsonl"),
                "--state-dir", str(tmp_path / name), *extra)
        assert p.returncode == 0, p.stderr
        outs[name] = (tmp_path / f"{name}.jsonl").read_bytes()
    assert outs["dask"] == outs["local"] and outs["local"].count(b"\n") > 30000
    assert list((tmp_path / "dask").glob("*/plan.json"))  # in parts
    assert not list((tmp_path / "local").glob("*/plan.json"))  # one process
    assert ((tmp_path / "dask" / "dead_letter.jsonl").read_text()
            == (tmp_path / "local" / "dead_letter.jsonl").read_text())
