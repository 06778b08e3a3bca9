"""Run a chain of stages: input -> processors/reducers -> output.

The chain is plain generators, pulled by the output. `barrier()` sits right after
the input: when the first downstream stage asks for the next batch, every stage has
finished the previous one, so that is where the engine may take a checkpoint.

An output whose reader went away (EPIPE on stdout) calls `ctx.output_closed()` and
discards what it is given; the barrier then writes a checkpoint and stops the run
(OutputClosed), so the saved state ends at a batch boundary like any other.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

from pipeline.columns import as_records
from pipeline.errors import RESUME, InputError, OutputClosed, reason
from pipeline.stage import Batch, Input, Output, Stage


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

    def __init__(self, dead_letter: Any, parent: "Context | None" = None):
        self.dead_letter = dead_letter
        self.meters: list[Meter] = []
        self.branch_meters: dict[str, list[Meter]] = {}  # a fork's branches
        self.root: Context = parent.root if parent is not None else self
        self.closed = False    # an output's reader went away: stop at the barrier
        self.barrier = False   # a checkpoint barrier runs on this chain
        self.checkpoint: Callable[[], Any] | None = None  # the engine's "save one now"
        self.source = "the input"  # named in a read error the barrier reports
        self.stop: Any = parent.stop if parent is not None else None  # a stop request
        self.emitting = False  # outputs show a live run's current result (--follow)
        # the map side of a followed run: windowed reducers emit a window once complete
        self.following: bool = parent.following if parent is not None else False
        self.records_base = 0  # records() before this run (from the checkpoint resumed)
        self.job: str = parent.job if parent is not None else ""  # resume.job_key()

    def records(self) -> int:
        """Records the pipeline handled, over every run of this task: what the first
        stage after the input passed on (the input's lines, if nothing follows it
        before a fork)."""
        if not self.meters:
            return self.records_base
        return self.records_base + self.meters[min(1, len(self.meters) - 1)].records_out

    def output_closed(self) -> None:
        """Called by an output whose reader went away (EPIPE): it writes no more and
        discards what it is still given. Where a checkpoint barrier runs, the run stops
        there, after the batch in hand, with a checkpoint; elsewhere (an output after
        the reducers, whose state is all saved) it stops now."""
        self.root.closed = True
        if not self.root.barrier:
            raise OutputClosed()

    def reject(self, raw: Any, reason: str, *, line: int | None = None,
               offset: int | None = None, stage: str = "", file: str | None = None,
               at: tuple[int | None, int | None] | None = None) -> None:
        """Send a record to the dead-letter file instead of the next stage. Name where
        it came from with `line`/`offset`, or `at=batch.locate(i)`."""
        if at is not None:
            line, offset = at
        self.dead_letter.reject(raw, reason, line=line, offset=offset, stage=stage, file=file)


Hook = Callable[[int, bool], None]


def barrier(batches: Iterator[Batch], hook: Hook | None,
            ctx: Context | None = None) -> Iterator[Batch]:
    """Pass batches through; call hook(records in the finished batch, at_end).

    hook() runs *before* the input reads the next batch, never after: the input's
    snapshot must point just past the batches the rest of the chain has finished.
    If an output's reader went away meanwhile (ctx.closed), it saves a checkpoint
    (ctx.checkpoint) here instead and stops the run with OutputClosed.
    """
    it = iter(batches)
    started = False
    done = 0  # records in the batch just finished (0 for an idle tick while following)
    while True:
        if ctx is not None:  # the batch's rejects, from every stage, in line order
            ctx.root.dead_letter.flush()
        if ctx is not None and ctx.root.closed and started:
            if ctx.root.checkpoint is not None:
                ctx.root.checkpoint()
            raise OutputClosed()
        if hook is not None and started:
            hook(done, False)
        try:
            batch = next(it)
        except StopIteration:
            if ctx is not None:
                ctx.root.dead_letter.flush()
            if hook is not None:
                hook(0, True)  # everything read and folded in; output not yet run
            return
        except OSError as exc:  # only the input runs inside next(it): its read failed
            name = ctx.source if ctx is not None else "the input"
            raise InputError(f"cannot read {name}: {reason(exc)}; {RESUME}") from None
        started, done = True, len(batch)
        yield batch


def _chain(head: Iterator[Batch], stages: list[Stage], ctx: Context,
           consume: Callable[[Iterator[Batch]], None], on_barrier: Hook | None) -> None:
    """stages[0] produced `head`; stages[1:-1] process it; consume() is the last stage.

    Meters every stage, puts the checkpoint barrier after the first, and closes every
    generator whatever happens (downstream first, so none is resumed after a close).
    """
    ctx.meters = [Meter(s.name) for s in stages]
    start = time.perf_counter()
    gens: list[Any] = [head, metered(head, ctx.meters[0])]
    if on_barrier is not None:
        ctx.root.barrier = True
        if isinstance(stages[0], Stage):  # not a reducer's results
            ctx.source = f"input {stages[0].describe()}"
        gens.append(barrier(gens[-1], on_barrier, ctx))
    for stage, meter in zip(stages[1:-1], ctx.meters[1:]):
        gens.append(stage.process(_fit(gens[-1], stage)))  # type: ignore[attr-defined]
        gens.append(metered(gens[-1], meter))
    try:
        consume(_fit(gens[-1], stages[-1]))
    finally:
        for gen in reversed(gens):
            gen.close()
        settle(ctx.meters, time.perf_counter() - start)


def _fit(batches: Iterator[Any], stage: Any) -> Iterator[Any]:
    """What `stage` is given: a stage that does not declare `columnar` gets records
    where the stage before it passed Columns (pipeline.columns)."""
    if not isinstance(stage, Stage) or stage.columnar:
        return batches
    return as_records(batches)


def _consumer(stage: Stage) -> Callable[[Iterator[Batch]], None]:
    """How the last stage of a chain takes its batches: an output writes them, a reducer
    folds them in (its result comes later)."""
    if isinstance(stage, Output):
        return stage.write

    def fold(batches: Iterator[Batch]) -> None:
        for batch in batches:
            stage.update(batch)  # type: ignore[attr-defined]
    return fold


def flow(trunk: list[Stage], branches: dict[str, list[Stage]], ctx: Context,
             on_barrier: Hook | None = None) -> None:
    """Run an input through `trunk` and then every fork branch to its last stage, which
    is an output or a reducer (left unfinished: the engine reduces it afterwards).

    Without branches, trunk[-1] is the last stage. The checkpoint barrier stays right
    after the input: every branch finishes a batch before the trunk reads the next.
    """
    source = trunk[0]
    assert isinstance(source, Input)
    for stage in trunk + [s for b in branches.values() for s in b]:
        stage.open(ctx)
    if not branches:
        _chain(source.read(), trunk, ctx, _consumer(trunk[-1]), on_barrier)
        return
    ctx.branch_meters = {}

    def branch(name: str, stages: list[Stage]) -> Callable[[Iterator[Batch]], None]:
        def consume(inbox: Iterator[Batch]) -> None:
            sub = Context(ctx.dead_letter, parent=ctx)
            try:
                _chain(inbox, [_Named("fork"), *stages], sub, _consumer(stages[-1]), None)
            finally:
                ctx.branch_meters[name] = sub.meters[1:]
        return consume
    feeders = [(name, branch(name, stages)) for name, stages in branches.items()]
    _chain(source.read(), [*trunk, _Named("fork")], ctx,
           lambda batches: fan_out(batches, feeders), on_barrier)
    ctx.meters = ctx.meters[:-1]


class _Named:
    """Stands for something that is not a stage (a fork, a reducer's results) in meters."""

    def __init__(self, name: str):
        self.name = name


class Aborted(Exception):
    """Raised inside a fork branch whose feeder failed: its output must not commit."""


_END, _ABORT = object(), object()


class _Inbox:
    """What one fork branch reads: the batches its feeder hands it, one at a time."""

    def __init__(self) -> None:
        self.asking = threading.Semaphore(0)  # the branch wants the next batch (or ended)
        self.given = threading.Semaphore(0)
        self.item: Any = None
        self.error: BaseException | None = None
        self.done = False

    def __iter__(self) -> Iterator[Batch]:
        while True:
            self.asking.release()
            self.given.acquire()
            if self.item is _END:
                return
            if self.item is _ABORT:
                raise Aborted()
            yield self.item

    def give(self, item: Any) -> None:
        self.item = item
        self.given.release()


def fan_out(batches: Iterator[Batch],
            branches: list[tuple[str, Callable[[Iterator[Batch]], None]]]) -> None:
    """Hand every batch to every branch, each running in its own thread, in lockstep: the
    next batch is read only when every branch has finished this one. A branch that fails
    stops the rest (their outputs see Aborted, never a normal end)."""
    inboxes = [_Inbox() for _ in branches]

    def run(inbox: _Inbox, consume: Callable[[Iterator[Batch]], None]) -> None:
        try:
            consume(iter(inbox))
        except BaseException as exc:  # reported to the feeder, in the main thread
            inbox.error = exc
        finally:
            inbox.done = True
            inbox.asking.release()
    threads = [threading.Thread(target=run, args=(inbox, consume), daemon=True,
                                name=f"sluice-branch-{name}")
               for inbox, (name, consume) in zip(inboxes, branches)]
    for t in threads:
        t.start()
    ok = False
    try:
        _await(inboxes)
        for batch in batches:
            for inbox in inboxes:
                inbox.give(batch)
            _await(inboxes)
        for inbox in inboxes:
            inbox.give(_END)
        for t in threads:
            t.join()
        _raise_first(inboxes)
        ok = True
    finally:
        if not ok:
            for inbox in inboxes:
                if not inbox.done:
                    inbox.give(_ABORT)
            for t in threads:
                t.join()


def _await(inboxes: list[_Inbox]) -> None:
    for inbox in inboxes:
        inbox.asking.acquire()
    _raise_first(inboxes)


def _raise_first(inboxes: list[_Inbox]) -> None:
    for inbox in inboxes:
        if inbox.error is not None and not isinstance(inbox.error, Aborted):
            raise inbox.error
    for inbox in inboxes:
        if inbox.done and inbox.error is None and inbox.item is not _END:
            raise RuntimeError("a fork branch stopped reading before its input ended")


def flow_results(head: Iterator[Batch], name: str, rest: list[Stage], ctx: Context,
               on_barrier: Hook | None = None) -> None:
    """Push a stream of batches (a reducer's results) through `rest`, ending in an output."""
    sink = rest[-1]
    assert isinstance(sink, Output)
    for stage in rest:
        stage.open(ctx)
    _chain(head, [_Named(name), *rest], ctx, sink.write, on_barrier)  # type: ignore[list-item]
