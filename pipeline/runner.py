"""Run a chain of stages: input -> processors/reducers -> output.

The chain is plain generators, pulled by the output. `barrier()` sits right after
the input: when the first downstream stage asks for the next batch, every stage has
finished the previous one, so that is where the engine may take a checkpoint.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from .stage import Batch, Input, Kind, Output, Stage


class Meter:
    """One stage's counts and time. `inclusive` covers upstream stages too; a stage's
    own time is its inclusive time minus its upstream neighbour's."""

    __slots__ = ("name", "records_in", "records_out", "batches", "inclusive", "seconds")

    def __init__(self, name: str):
        self.name = name
        self.records_in = self.records_out = self.batches = 0
        self.inclusive = self.seconds = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.name, "records_in": self.records_in,
                "records_out": self.records_out, "seconds": round(self.seconds, 3)}


def metered(batches: Iterator[Batch], meter: Meter) -> Iterator[Batch]:
    it = iter(batches)
    clock = time.perf_counter
    while True:
        t0 = clock()
        try:
            batch = next(it)
        except StopIteration:
            meter.inclusive += clock() - t0
            return
        meter.inclusive += clock() - t0
        meter.batches += 1
        meter.records_out += len(batch)
        yield batch


def settle(meters: list[Meter], total: float) -> None:
    """Turn inclusive times into each stage's own time; the last meter gets the rest."""
    previous = 0.0
    for i, m in enumerate(meters):
        if i:
            m.records_in = meters[i - 1].records_out
        incl = total if i == len(meters) - 1 else m.inclusive
        m.seconds = max(incl - previous, 0.0)
        previous = incl


class Context:
    """What a running stage may ask of the engine."""

    def __init__(self, dead_letter: Any):
        self.dead_letter = dead_letter
        self.meters: list[Meter] = []

    def reject(self, raw: Any, reason: str, *, line: int | None = None,
               offset: int | None = None, stage: str = "", file: str | None = None) -> None:
        """Send a record to the dead-letter file instead of the next stage."""
        self.dead_letter.reject(raw, reason, line=line, offset=offset, stage=stage, file=file)


Hook = Callable[[int, bool], None]


def barrier(batches: Iterator[Batch], hook: Hook | None) -> Iterator[Batch]:
    """Pass batches through; call hook(records in the finished batch, at_end).

    hook() runs *before* the input reads the next batch, never after: the input's
    snapshot must point just past the batches the rest of the chain has finished.
    """
    it = iter(batches)
    done = 0
    while True:
        if hook is not None and done:
            hook(done, False)
        try:
            batch = next(it)
        except StopIteration:
            if hook is not None:
                hook(0, True)  # everything read and folded in; output not yet run
            return
        done = len(batch) or 1
        yield batch


def partition_boundary(stages: list[Any]) -> int | None:
    """Index just past the first reducer (stages before it run once per partition), or
    None when there is no reducer: such a chain cannot be split and merged."""
    for i, stage in enumerate(stages):
        if stage.kind is Kind.REDUCER:
            return i + 1
    return None


def _drive(head: Iterator[Batch], stages: list[Stage], ctx: Context,
           consume: Callable[[Iterator[Batch]], None], on_barrier: Hook | None) -> None:
    """stages[0] produced `head`; stages[1:-1] process it; consume() is the last stage.

    Meters every stage, puts the checkpoint barrier after the first, and closes every
    generator whatever happens (downstream first, so none is resumed after a close).
    """
    ctx.meters = [Meter(s.name) for s in stages]
    start = time.perf_counter()
    gens: list[Any] = [head, metered(head, ctx.meters[0])]
    if on_barrier is not None:
        gens.append(barrier(gens[-1], on_barrier))
    for stage, meter in zip(stages[1:-1], ctx.meters[1:]):
        gens.append(stage.process(gens[-1]))  # type: ignore[attr-defined]
        gens.append(metered(gens[-1], meter))
    try:
        consume(gens[-1])
    finally:
        for gen in reversed(gens):
            gen.close()
        settle(ctx.meters, time.perf_counter() - start)


def run_chain(stages: list[Stage], ctx: Context, on_barrier: Hook | None = None) -> None:
    """Run input -> ... -> output to the end."""
    source, sink = stages[0], stages[-1]
    assert isinstance(source, Input) and isinstance(sink, Output)
    for stage in stages:
        stage.open(ctx)
    _drive(source.read(), stages, ctx, sink.write, on_barrier)


def run_partial(stages: list[Stage], ctx: Context, on_barrier: Hook | None = None) -> None:
    """Run input -> processors -> reducer.update(), leaving the reducer unfinished.

    This is what one partition does; the engine merges the reducers afterwards.
    """
    source, reducer = stages[0], stages[-1]
    assert isinstance(source, Input) and reducer.kind is Kind.REDUCER
    for stage in stages:
        stage.open(ctx)

    def fold(batches: Iterator[Batch]) -> None:
        for batch in batches:
            reducer.update(batch)  # type: ignore[attr-defined]
    _drive(source.read(), stages, ctx, fold, on_barrier)


def run_stream(head: Iterator[Batch], name: str, rest: list[Stage], ctx: Context,
               on_barrier: Hook | None = None) -> None:
    """Push a stream of batches (a reducer's results) through `rest`, ending in an output."""
    sink = rest[-1]
    assert isinstance(sink, Output)
    for stage in rest:
        stage.open(ctx)

    class Head:  # stands for whatever produced the stream, in the meters
        pass
    head_stage = Head()
    head_stage.name = name  # type: ignore[attr-defined]
    _drive(head, [head_stage, *rest], ctx, sink.write, on_barrier)  # type: ignore[list-item]
