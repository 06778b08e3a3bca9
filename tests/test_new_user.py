"""What a new user hit writing custom pipelines: outputs that destroy files, silent
mistakes, Python formatting in data files, rejects without a line, counters that lie."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import main
from conftest import ROOT, cli, rec
from pipeline import Batch, ConfigError, Processor
from pipeline.config import parse_config

REG = main.build_registry()
SAMPLE = ROOT / "tests" / "data" / "sample" / "input.jsonl"


def error(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "x.yaml", REG)
    return str(exc.value)


FORK_SAME = """pipeline:
  - file-input: {path: in.jsonl}
  - json-decode: {schema: object}
  - fork:
      a:
        - jsonl-output: {path: same.jsonl}
      b:
        - where: {field: status, equals: 500}
        - jsonl-output: {path: same.jsonl}
"""


def test_two_fork_branches_writing_one_file_are_refused_at_validate(tmp_path):
    """The issue's fork, both branches to same.jsonl: `validate` refuses it, naming both
    stages, and a run refuses it before touching the user's same.jsonl."""
    cfg = tmp_path / "fork.yaml"
    cfg.write_text(FORK_SAME)
    (tmp_path / "same.jsonl").write_text("the user's own file\n")
    message = (f"sluice: error: {cfg}:9: fork branch 'b': stage 'jsonl-output': it writes "
               f"same.jsonl, and so does stage 'jsonl-output' in fork branch 'a' (line 6): "
               f"one would overwrite the other; give each output its own path\n")
    for args in (["validate", str(cfg)], ["-c", str(cfg), "-f", str(SAMPLE)]):
        p = cli(*args, cwd=tmp_path)
        assert (p.returncode, p.stderr) == (2, message)
    assert (tmp_path / "same.jsonl").read_text() == "the user's own file\n"


@pytest.mark.parametrize("outputs,message", [
    ("      a: [{sorted-stdout-output: {}}]\n      b: [{jsonl-output: {path: '-'}}]\n",
     "x.yaml:6: fork branch 'b': stage 'jsonl-output': it writes standard output, and so "
     "does stage 'sorted-stdout-output' in fork branch 'a' (line 5): their lines would be "
     "interleaved; write one of them to a file"),
    ("      a: [{sorted-stdout-output: {}}]\n      b: [{jsonl-output: {path: in.jsonl}}]\n",
     "x.yaml:6: fork branch 'b': stage 'jsonl-output': in.jsonl is the input of stage "
     "'file-input' (line 2): writing it would destroy what is being read"),
    ("      a: [{summary-json-output: {path: ./out/x.json}}]\n"
     "      b: [{jsonl-output: {path: out/../out/x.json}}]\n",
     "x.yaml:6: fork branch 'b': stage 'jsonl-output': it writes out/../out/x.json, and so "
     "does stage 'summary-json-output' in fork branch 'a' (line 5): one would overwrite the "
     "other; give each output its own path"),
])
def test_outputs_that_would_collide_are_refused(outputs, message):
    """Two outputs on stdout, an output onto the input, or one path spelt two ways."""
    text = ("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {}\n  - fork:\n"
            + outputs.replace("a: [", "a: [{site-state-reducer: {}}, ", 1))
    assert error(text) == message


def test_minus_f_onto_an_output_is_refused(tmp_path):
    """`-f` naming the file an output writes is refused before anything is read."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: a.jsonl}\n  - json-decode: {}\n"
                   "  - jsonl-output: {path: out.jsonl}\n")
    (tmp_path / "out.jsonl").write_text("precious\n")
    p = cli("-c", str(cfg), "-f", "out.jsonl", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr == (f"sluice: error: {cfg}:4: stage 'jsonl-output': out.jsonl is the input "
                        f"of stage 'file-input' (line 2): writing it would destroy what is "
                        f"being read\n")
    assert (tmp_path / "out.jsonl").read_text() == "precious\n"


@pytest.mark.parametrize("body,message", [
    ("  - json-decode: {}\n  - dedupe: {field: id}\n"
     "  - aggregate: {by: [site_id, type], metrics: {records: count}}\n"
     "  - csv-output: {path: out.csv, columns: [site_id, type, recods]}\n",
     "x.yaml:6: stage 'csv-output': column 'recods' (did you mean 'records'?) is not among "
     "site_id, type, records, the fields of the records 'aggregate' produces"),
    ("  - json-decode: {}\n  - count: {field: type}\n"
     "  - csv-output: {path: out.csv, columns: [type, count, share]}\n",
     "x.yaml:5: stage 'csv-output': count-row records are 2 values (type, count): give 2 "
     "columns, got 3, the fields of the records 'count' produces"),
    ("  - json-decode: {}\n  - csv-output: {path: out.csv, columns: [id, data.message]}\n",
     "x.yaml:4: stage 'csv-output': column 'data.message' (did you mean 'data.status'?) is "
     "not among type, id, from, site_id, timestamp, data.status, the fields of the records "
     "'json-decode' produces"),
    ("  - json-decode: {}\n  - mutate: {rename: {from: sender}}\n"
     "  - csv-output: {path: out.csv, columns: [id, from]}\n",
     "x.yaml:5: stage 'csv-output': column 'from' is not among type, id, sender, site_id, "
     "timestamp, data.status, the fields of the records 'mutate' produces"),
    ("  - json-decode: {}\n  - aggregate: {by: [site], metrics: {n: count}}\n"
     "  - csv-output: {path: out.csv, columns: [site, n]}\n",
     "x.yaml:4: stage 'aggregate': field 'site' (did you mean 'site_id'?) is not among type, "
     "id, from, site_id, timestamp, data.status, the fields of the records 'json-decode' "
     "produces"),
])
def test_a_field_no_record_has_is_refused_where_the_fields_are_known(body, message):
    """A CSV column (or a field an aggregate reads) that the records cannot have, where
    their fields are known (site-event records, aggregate's and count's output, and
    what mutate makes of them), is a config error, not an empty column."""
    assert error("pipeline:\n  - file-input: {path: in.jsonl}\n" + body) == message


def test_a_duplicate_metrics_key_is_refused():
    """`metrics:` given twice no longer drops the first silently."""
    text = ("pipeline:\n  - file-input: {path: in.jsonl}\n  - json-decode: {}\n"
            "  - aggregate:\n      by: [type]\n      metrics: {n: count}\n"
            "      metrics: {m: count}\n  - jsonl-output: {path: out.jsonl}\n")
    assert error(text) == ("x.yaml:7: key 'metrics' is given twice in one mapping (first at "
                           "line 6); YAML would silently keep only the last")


def pipeline_file(tmp_path, body: str) -> str:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl}\n" + body)
    return str(cfg)


def test_csv_cells_are_json_not_python(tmp_path):
    """null is an empty cell; booleans, lists and objects are JSON; numbers as JSON."""
    log = tmp_path / "in.jsonl"
    log.write_text('{"a": null, "b": true, "c": [1, "x"], "d": {"k": 1}, "e": 1e22, "f": 2}\n'
                   '{"b": false}\n')
    cfg = pipeline_file(tmp_path, "  - json-decode: {schema: object}\n"
                                  "  - csv-output: {path: '-', columns: [a, b, c, d, e, f]}\n")
    p = cli("-c", cfg, "-f", str(log), "--state-dir", str(tmp_path / "s"))
    assert p.stdout == 'a,b,c,d,e,f\n,true,"[1,""x""]","{""k"":1}",1e22,2\n,false,,,,\n'


def test_count_keeps_null_apart_and_writes_json(tmp_path):
    """A null group is null (an empty cell), not 'None'; true is 'true', not 'True'."""
    log = tmp_path / "in.jsonl"
    log.write_text("\n".join(json.dumps({"v": v}) for v in
                             [None, None, True, [1, 2], "None", 3, "3", {}]) + "\n")
    cfg = pipeline_file(tmp_path, "  - json-decode: {schema: object}\n  - count: {field: v}\n"
                                  "  - csv-output: {path: '-', columns: [v, n]}\n")
    p = cli("-c", cfg, "-f", str(log), "--state-dir", str(tmp_path / "s"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == 'v,n\n,2\n3,2\nNone,1\n"[1,2]",1\ntrue,1\n{},1\n'


@pytest.mark.parametrize("workers", ["1", "2"])
def test_rejects_from_mutate_and_aggregate_name_their_line(tmp_path, workers):
    """A record that mutate or aggregate rejects carries the line and byte offset of
    the input line it came from, with one worker or two."""
    lines = [json.dumps({"kind": "web", "bytes": "12", "size": 1}),
             json.dumps({"kind": "web", "bytes": "-", "size": 2}), "",
             json.dumps({"kind": "web", "bytes": "7", "size": "big"})] * 3000
    log = tmp_path / "in.jsonl"
    log.write_text("\n".join(lines) + "\n")
    cfg = pipeline_file(tmp_path, "  - json-decode: {schema: object}\n"
                                  "  - mutate: {convert: {bytes: int}}\n"
                                  "  - aggregate: {by: [kind], metrics: {total: sum(size)}}\n"
                                  "  - csv-output: {path: '-', columns: [kind, total]}\n")
    p = cli("-c", cfg, "-f", str(log), "--state-dir", str(tmp_path / "s"), "-w", workers)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "kind,total\nweb,3000\n"
    dead = [json.loads(x) for x in (tmp_path / "s" / "dead_letter.jsonl").read_text().splitlines()]
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln) + 1)
    want = []
    for n in range(3000):
        want += [(4 * n + 2, starts[4 * n + 1], "mutate"), (4 * n + 4, starts[4 * n + 3],
                                                            "aggregate")]
    # in file order batch by batch; within a batch, an earlier stage's rejects first
    assert sorted((d["line"], d["offset"], d["stage"]) for d in dead) == want
    assert {d["stage"]: d["reason"] for d in dead} == {
        "mutate": "field 'bytes': cannot convert '-' to int",
        "aggregate": "field 'size': sum(size) needs a number, got 'big'"}


def test_locate_sums_the_line_lengths_once_per_batch():
    """Finding many rejects' offsets in one batch reads each line's length once, not
    once per reject (0.44% bad lines made decoding 2x slower)."""
    calls = [0]

    class Line(bytes):
        def __len__(self):
            calls[0] += 1
            return super().__len__()
    batch = Batch([Line(b"x" * 9) for _ in range(10_000)], first_line=1, first_offset=0)
    assert [batch.locate(i) for i in range(0, 10_000, 100)][-1] == (9901, 99_000)
    assert calls[0] <= 10_001


class Words(Processor):
    """A plugin that makes records of raw lines itself: one object per line."""

    name = "words"
    accepts = ("lines",)
    produces = "object"

    def process(self, batches):
        for batch in batches:
            yield Batch(({"w": line.decode()} for line in batch), source=batch.source)


@pytest.mark.parametrize("body,counts", [
    ("  - test_new_user:Words: {}\n  - jsonl-output: {path: out.jsonl}\n",
     "2,003 lines read, 2,003 records; rejected 0 of 2,003 lines"),
    ("  - json-decode: {schema: object}\n  - mutate: {set: {x: 1}}\n"
     "  - jsonl-output: {path: out.jsonl}\n",
     "2,003 lines read, 2,001 records; rejected 2 of 2,003 lines"),
    ("  - json-decode: {}\n  - aggregate: {by: [type], metrics: {n: count}}\n"
     "  - jsonl-output: {path: out.jsonl}\n",
     "2,003 lines read, 2,000 records; rejected 3 of 2,003 lines"),
    ("  - json-decode: {}\n  - fork:\n      a: [{site-state-reducer: {}}, "
     "{sorted-stdout-output: {}}]\n      b: [{jsonl-output: {path: out.jsonl}}]\n",
     "2,003 lines read, 2,000 records, 122 duplicates skipped; rejected 3 of 2,003 lines"),
    ("  - json-decode: {}\n  - dedupe: {field: id}\n  - jsonl-output: {path: out.jsonl}\n",
     "2,003 lines read, 2,000 records, 122 duplicates skipped; rejected 3 of 2,003 lines"),
])
def test_the_final_line_counts_what_this_pipeline_did(tmp_path, body, counts):
    """Records are what the first stage after the input passed on (a plugin's too);
    duplicates are only mentioned where a stage drops them."""
    cfg = pipeline_file(tmp_path, body)
    env = {"PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    p = cli("-c", cfg, "-f", str(SAMPLE), "--state-dir", str(tmp_path / "s"), cwd=tmp_path,
            env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines()[-1].startswith(f"sluice: {counts}")


def test_stats_show_what_a_reducer_passed_on(tmp_path):
    """--stats: dedupe's records out are the records the next stage received."""
    cfg = pipeline_file(tmp_path, "  - json-decode: {}\n  - dedupe: {field: id}\n"
                                  "  - count: {field: type}\n"
                                  "  - csv-output: {path: '-', columns: [type, count]}\n")
    p = cli("-c", cfg, "-f", str(SAMPLE), "--state-dir", str(tmp_path / "s"), "--stats")
    rows = {r.split()[0]: r.split()[1:3] for r in p.stderr.splitlines()[1:5]}
    assert rows["dedupe"] == ["2,000", "1,878"] and rows["count"] == ["1,878", "2"]


def test_resumed_notice_reads_well(tmp_path):
    """A rerun of a finished multi-task run says how many map tasks had finished."""
    from conftest import generate
    log = generate(tmp_path / "log.jsonl", 40000, 2)
    cfg = str(ROOT / "configs" / "summary.yaml")
    first = cli("-c", cfg, "-f", str(log), "--state-dir", str(tmp_path / "s"), "-w", "2")
    assert first.returncode == 0
    tasks = [x for x in (tmp_path / "s").glob("*/s0/m*") if x.is_dir()]
    shutil.rmtree(tasks[-1])  # as if the last map task had not run
    again = cli("-c", cfg, "-f", str(log), "--state-dir", str(tmp_path / "s"), "-w", "2")
    assert f"sluice: resumed {len(tasks) - 1} of {len(tasks)} map tasks had finished\n" \
        in again.stderr
    assert again.stdout == first.stdout


class Boom:
    """Wraps a function to fail (EIO) on call `at` among those whose path argument
    ends with `suffix`."""

    def __init__(self, real, suffix: str, at: int = 1, path_arg: int = 0):
        self.real, self.suffix, self.at, self.path_arg, self.seen = real, suffix, at, path_arg, 0

    def __call__(self, *args, **kw):
        path = args[self.path_arg] if len(args) > self.path_arg else None
        if isinstance(path, int) or str(path).endswith(self.suffix):
            self.seen += 1
            if self.seen == self.at:
                raise OSError(5, "Input/output error")
        return self.real(*args, **kw)


STEPS = {  # a step of writing, committing or resuming an output file, and where it is
    "open": ("open", ".partial", 0), "copy": ("copyfile", ".partial", 1),
    "replace": ("replace", "", 0), "fsync": ("fsync", "", 0),
}


def inject(monkeypatch, step: str, at: int) -> None:
    import pipeline.outputs as rf
    name, suffix, arg = STEPS[step]
    if name == "open":
        monkeypatch.setattr(rf, "open", Boom(open, suffix, at, arg), raising=False)
    elif name == "copyfile":
        monkeypatch.setattr(rf.shutil, "copyfile", Boom(shutil.copyfile, suffix, at, arg))
    else:
        monkeypatch.setattr(rf.os, name, Boom(getattr(os, name), suffix, at, arg))


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("at", [1, 2])
def test_an_output_never_destroys_a_file_it_did_not_write(tmp_path, monkeypatch, capsys,
                                                          step, at):
    """A user's file at an output path is either left as it was or replaced by the
    complete new output, whatever step of writing, committing or resuming an output
    fails: in a first run, in a run resuming one that failed midway, and in a run
    resuming a finished one whose input grew. A rerun then finishes the job."""
    import pipeline.outputs as rf
    lines = [rec(f"r{i}", "message", "1", "v", i) for i in range(3000)]
    log = tmp_path / "in.jsonl"
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pipeline:\n  - file-input: {path: in.jsonl, block_size: 4096}\n"
                   "  - json-decode: {}\n  - jsonl-output: {path: out.jsonl}\n")
    out, user = tmp_path / "out.jsonl", "the user's own file\n"
    here = os.getcwd()
    os.chdir(tmp_path)

    def run(n_lines: int, state: str = "s") -> int:
        log.write_text("\n".join(lines[:n_lines]) + "\n")
        code = main.main(["-c", str(cfg), "-f", str(log), "--state-dir", state,
                          "--checkpoint-every", "100"])
        capsys.readouterr()
        return code
    try:
        complete = {}
        for n in (2000, 3000):  # what a clean run writes
            assert run(n, f"clean{n}") == 0
            complete[n] = out.read_text()
        for phase in ("first run", "resume", "grown"):
            if phase != "grown":
                shutil.rmtree(tmp_path / "s", ignore_errors=True)
                out.write_text(user)
            if phase == "resume":  # a run that fails midway first: its partial file stays
                real = rf.ResumableFile.write
                count = iter(range(10**6))
                monkeypatch.setattr(rf.ResumableFile, "write", lambda self, data: (
                    real(self, data) if next(count) < 5 else (_ for _ in ()).throw(
                        OSError(5, "Input/output error"))))
                assert run(2000) == 2
                monkeypatch.undo()
                assert out.read_text() == user
            before = out.read_text()
            inject(monkeypatch, step, at)
            code = run(3000 if phase == "grown" else 2000)
            monkeypatch.undo()
            want = complete[3000 if phase == "grown" else 2000]
            assert out.read_text() in (before, want), (phase, code)
            if code != 0:
                assert out.read_text() == before, phase
                assert run(3000 if phase == "grown" else 2000) == 0
            assert out.read_text() == want, phase
    finally:
        os.chdir(here)
