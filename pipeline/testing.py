"""The check every stage should pass: straight through equals snapshot, restore and go on
at every batch boundary. Run it on your own stages, in your own tests:

    from pipeline.testing import check_resume

    def test_my_stage_resumes(tmp_path):
        batches = [Batch([{"from": "ann"}]), Batch([{"from": "bob"}]), ...]
        out = check_resume(lambda: MaskField(field="from"), batches, tmp_path)
        assert out.records == [...]

`make()` builds a fresh instance with your options. For an input, batches are what
it reads (give None); for a processor, reducer or output, the batches it is given. At
each boundary the check takes a snapshot, pickles it (as a checkpoint does), and a new
instance restored from it goes on, as after a kill:

- an input is read again from the snapshot;
- a processor is given the batches after the boundary;
- a reducer also folds two more batches into the first instance first (work a kill
  would lose; a keyed reducer's spill must be cut back to the snapshot), then the new
  one folds the rest and finishes;
- an output is stopped between batches, as a killed run is, and a new one writes the
  rest into the same file.

The output, counters and rejects must equal the straight run's, or ResumeMismatch
(an AssertionError) names the first boundary that differs and what differed.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pipeline.keyed import KeyedReducer
from pipeline.stage import Batch, Input, Output, Processor, Reducer, Stage

__all__ = ["Context", "Outcome", "ResumeMismatch", "check_resume"]


class Context:
    """What the engine lends a stage (`open(ctx)`), for a stage run on its own: rejects
    are kept in `rejected`, as (raw, reason, where) tuples."""

    def __init__(self) -> None:
        self.rejected: list[tuple[Any, str, dict[str, Any]]] = []
        self.stop = None
        self.emitting = False
        self.following = False

    def reject(self, raw: Any, reason: str, **where: Any) -> None:
        self.rejected.append((raw, reason, where))

    def output_closed(self) -> None:
        raise BrokenPipeError("standard output was closed")


@dataclass
class Outcome:
    """What a stage did: the records it produced (an output: the bytes it wrote), its
    counters, and its rejects."""

    records: Any
    counters: dict[str, int]
    rejected: list[Any] = field(default_factory=list)


class ResumeMismatch(AssertionError):
    pass


def _roundtrip(state: Any) -> Any:
    return pickle.loads(pickle.dumps(state))


def _records(batches: Iterable[Any]) -> list[list[Any]]:
    """Each batch's records (a columnar stage's Columns as dicts)."""
    return [list(b.records()) if hasattr(b, "records") else list(b) for b in batches]


def check_resume(make: Callable[[], Stage], batches: list[Batch] | None = None,
                 workdir: str | os.PathLike | None = None, following: bool = False) -> Outcome:
    """Check `make()`'s stage at every batch boundary (see the module docstring);
    return what the straight run did. `workdir` holds a keyed reducer's spill files
    (default: a temporary directory); `following`: a reducer runs as in a followed run
    (`--follow`: a windowed one emits only the windows its watermark closed)."""
    stage = make()
    scratch = None
    if workdir is None:
        workdir = scratch = tempfile.mkdtemp(prefix="sluice-testing-")
    try:
        if isinstance(stage, Input):
            straight = _input(make, None)
            count = len(list(make().read()))
            cuts: Iterable[int] = range(1, count)
            again = lambda cut: _input(make, cut)  # noqa: E731
        elif isinstance(stage, Output):
            assert batches is not None, "an output needs the batches it is given"
            straight = _output(make, batches, len(batches))
            cuts = range(len(batches))
            again = lambda cut: _output(make, batches, cut)  # noqa: E731
        elif isinstance(stage, Reducer):
            assert batches is not None, "a reducer needs the batches it is given"
            spill = os.path.join(str(workdir), f"spill-{stage.name}")
            straight = _reducer(make, batches, len(batches), spill, following)
            cuts = range(len(batches))
            again = lambda cut: _reducer(make, batches, cut, spill, following)  # noqa: E731
        elif isinstance(stage, Processor):
            assert batches is not None, "a processor needs the batches it is given"
            straight = _processor(make, batches, len(batches))
            cuts = range(len(batches))
            again = lambda cut: _processor(make, batches, cut)  # noqa: E731
        else:
            raise TypeError(f"{stage!r} is not an input, processor, reducer or output")
        for cut in cuts:
            got = again(cut)
            for part in ("records", "counters", "rejected"):
                if getattr(got, part) != getattr(straight, part):
                    raise ResumeMismatch(
                        f"stage {stage.name!r}: resumed after batch {cut}, its {part} "
                        f"differ from a straight run's")
        return straight
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _input(make: Callable[[], Any], cut: int | None) -> Outcome:
    """Records (batch boundaries may move after a resume) and counters."""
    stage = make()
    stage.open(Context())
    out, it = [], stage.read()
    for i, batch in enumerate(it):
        out.extend(batch)
        if i + 1 == cut:
            it.close()
            again = make()
            again.open(Context())
            again.restore(_roundtrip(stage.snapshot()))
            for b in again.read():
                out.extend(b)
            return Outcome(out, again.counters())
    return Outcome(out, stage.counters())


def _processor(make: Callable[[], Any], batches: list[Batch], cut: int) -> Outcome:
    stage, ctx = make(), Context()
    stage.open(ctx)
    out = _records(stage.process(iter(batches[:cut])))
    if cut < len(batches):
        again = make()
        again.open(ctx)
        again.restore(_roundtrip(stage.snapshot()))
        out += _records(again.process(iter(batches[cut:])))
        stage = again
    return Outcome(out, stage.counters(), ctx.rejected)


def _reducer(make: Callable[[], Any], batches: list[Batch], cut: int, spill_dir: str,
             following: bool = False) -> Outcome:
    shutil.rmtree(spill_dir, ignore_errors=True)
    ctx = Context()
    ctx.following = following
    stage = make()
    stage.open(ctx)
    if isinstance(stage, KeyedReducer):
        stage.configure(spill_dir, nbuckets=3)
    for b in batches[:cut]:
        stage.update(b)
    state = _roundtrip(stage.snapshot())
    kept = len(ctx.rejected)  # a resume cuts the dead-letter file back to here too
    for b in batches[cut:cut + 2]:  # work a kill would lose
        stage.update(b)
    del ctx.rejected[kept:]
    if isinstance(stage, KeyedReducer):
        stage.spill.flush()  # the lost work reached the files: restore must cut it off
        stage.spill.close()
    again = make()
    again.open(ctx)
    if isinstance(again, KeyedReducer):
        again.configure(spill_dir, nbuckets=3)
    again.restore(state)
    for b in batches[cut:]:
        again.update(b)
    return Outcome(_records(again.finish()), again.counters(), ctx.rejected)


def _output(make: Callable[[], Any], batches: list[Batch], cut: int) -> Outcome:
    first = make()
    paths = [p for p in type(first).destinations(first._options) if p != "-"]
    assert paths, f"stage {first.name!r} writes no file the check could read"
    for path in paths:
        for leftover in (path, path + ".partial"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    first.open(Context())
    state = None

    def feed() -> Any:
        nonlocal state
        for i, b in enumerate(batches):
            if i == cut:
                state = _roundtrip(first.snapshot())
                raise KeyboardInterrupt  # killed between batches
            yield b
    try:
        first.write(feed())
    except KeyboardInterrupt:
        second = make()
        second.open(Context())
        second.restore(state)
        second.write(iter(batches[cut:]))
    written = b""
    for path in paths:
        with open(path, "rb") as fh:
            written += fh.read()
    return Outcome(written, {})
