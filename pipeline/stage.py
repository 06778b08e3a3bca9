"""The stage interface: what every input, processor, reducer and output implements.

A *batch* is a list of records (`Batch`). Stages work on whole batches because the
per-record cost of Python generators is what makes a naive pipeline slow.

    class Upper(Processor):
        '''Upper-case every record.

            - upper: {}
        '''
        name = "upper"
        def process(self, batches):
            for batch in batches:              # [b'a', b'b'] -> [b'A', b'B']
                yield Batch(r.upper() for r in batch)

State contract (the same one bytewax uses): `snapshot()` returns a picklable value
describing everything the stage has done with the batches it has *finished*, and a
fresh instance given `restore(state)` must continue exactly where that one stopped.
The engine only snapshots between batches, at the moment the first stage is asked
for the next batch, so a stage must finish with one batch before it pulls another.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from array import array
from typing import Any, Callable, ClassVar, Iterator, Optional, Tuple

from pipeline.batch import Batch, Encoded


class Role(enum.Enum):
    """A stage's role in a pipeline, which says where it may run (the engine never has
    to guess). Not to be confused with the kinds of records (KINDS) stages exchange."""

    INPUT = "input"          # yields batches; can be split into partitions
    PROCESSOR = "processor"  # stateless or per-partition: runs in every worker
    REDUCER = "reducer"      # per-partition partial state, combined with merge()
    OUTPUT = "output"        # runs once, after everything upstream has finished


@dataclass(frozen=True)
class Option:
    """One declared stage option: `Option("path", str, doc="file to read")`."""

    name: str
    type: type | tuple[type, ...]
    default: Any = ...      # `...` means required
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error text or None

    @property
    def required(self) -> bool:
        return self.default is ...


def bind_options(target: Any, declared: tuple[Option, ...], given: dict[str, Any],
                 owner: str) -> list[Option]:
    """Set each given option as an attribute of `target` (an option not declared is a
    TypeError naming `owner`) and each absent one to its default; returns the required
    options that were not given (their attributes are left unset)."""
    names = {o.name for o in declared}
    for key, value in given.items():
        if key not in names:
            raise TypeError(f"{owner}: unknown option {key!r}")
        setattr(target, key, value)
    missing = []
    for opt in declared:
        if opt.name not in given:
            if opt.required:
                missing.append(opt)
            else:
                setattr(target, opt.name, opt.default)
    return missing


class Problem(str):
    """What an Option check returns when it can say where in the option's value the
    problem is: `offset` (0-based, into the value's text, or into the value of `key`
    when the option maps names to texts). The config error then names the column."""

    offset: int | None = None
    key: str | None = None

    @classmethod
    def at(cls, text: str, offset: int | None, key: str | None = None) -> "Problem":
        out = cls(text)
        out.offset, out.key = offset, key
        return out


def positive(value: Any) -> str | None:
    return None if value > 0 else f"must be > 0; got {value!r}"


def positive_at_most(hi: int) -> Callable[[Any], str | None]:
    """An Option check: 0 < value <= hi, e.g. `check=positive_at_most(1 << 30)`."""
    def check(value: Any) -> str | None:
        return positive(value) or (None if value <= hi else
                                   f"must be at most {hi:,}; got {value!r}")
    return check


def a_path(value: Any) -> str | None:
    """An Option check for a file path, or a list of them: non-empty, and without the
    NUL character no operating system takes in a path."""
    for path in value if isinstance(value, list) else [value]:
        if not isinstance(path, str) or not path:
            return f"must be a non-empty path; got {path!r}"
        if "\0" in path:
            return f"must not hold a NUL character; got {path!r}"
    return None


ANY, SAME = "any", "same"
Fields = Optional[Tuple[str, ...]]  # the fields of records, when a config tells them
KINDS = {
    "lines": "raw lines of text, as bytes (file-input)",
    "object": "decoded JSON objects: dicts of JSON values (str, int, float, bool, None, "
              "list, dict)",
    "site-event": "chat-log records (json-decode's site-event schema)",
    "summary-row": "(site_id, messages, emails, operators, visitors) tuples",
    "count-row": "(value, count) tuples; with a window, (window_start, window_end, value, "
                 "count)",
    ANY: "anything: the stage does not say",
}


class Stage:
    """Base of every stage. Options arrive as keyword arguments, already validated.

    Its *contract* says which kinds of records it accepts and which it produces (see
    KINDS); the config loader checks every connection before anything runs. `SAME`
    means it passes on the kind it was given; `ANY` accepts, or produces, anything.
    """

    name: ClassVar[str] = ""
    role: ClassVar[Role]
    options: ClassVar[tuple[Option, ...]] = ()
    accepts: ClassVar[tuple[str, ...]] = (ANY,)
    produces: ClassVar[str] = ANY
    reports: ClassVar[tuple[str, ...]] = ()  # counters the final line shows, even at 0
    given: str = ANY  # the kind of records it is given in this pipeline, set by the engine
    columnar: ClassVar[bool] = False  # process()/write() also take pipeline.columns.Columns
    prefers_columns: ClassVar[bool] = False  # columns save it more than making them costs
    feeds_columns: bool = False  # it should pass on columns (set by the engine)
    order_free: ClassVar[bool] = False  # what it does does not depend on the order of its
    #   records: after a keyed reducer, a segment of such stages reads the buckets in parallel
    loads: ClassVar[tuple[str, ...]] = ()  # modules it imports when it runs (pyarrow): the
    #   memory budget counts them in every process, since any process may run it
    needed: tuple[str, ...] | None = None  # set by the engine: the top-level fields of the
    #   records it passes on that a stage after it reads (`reads`); None: any of them

    @classmethod
    def is_order_free(cls, options: dict[str, Any]) -> bool:
        """order_free, with these options (aggregate is not, with first() or last())."""
        return cls.order_free

    @classmethod
    def output_kind(cls, options: dict[str, Any], given: str) -> str:
        """The kind of records this stage emits with these options, given `given`."""
        return given if cls.produces == SAME else cls.produces

    def __init__(self, **options: Any):
        self._options = dict(options)  # as configured: what a copy of it is built with
        missing = bind_options(self, self.options, options, f"stage {self.name!r}")
        if missing:
            raise TypeError(f"stage {self.name!r}: missing option {missing[0].name!r}")
        self.ctx: Any = None

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        """Why these (individually valid) options do not go together, or None."""
        return None

    @classmethod
    def output_fields(cls, options: dict[str, Any], given: Fields) -> Fields:
        """The fields of the records this stage emits, as far as the config tells
        (dotted names for nested ones, in order; for tuples, their positions' names),
        or None when they are not known. `given` are the fields it receives. By
        default a stage that passes on its kind (`SAME`) passes on its fields."""
        return given if cls.produces == SAME else None

    @classmethod
    def loads_with(cls, options: dict[str, Any]) -> tuple[str, ...]:
        """The modules it imports when it runs with these options (`loads`, unless an
        option brings in more, as an expression brings in DuckDB)."""
        return cls.loads

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...] | None:
        """The fields of the records it is given that it reads (dotted names), with
        these options; None (the default) if it may read any, or passes a record on
        whole anywhere (to a dead-letter file, say). A stage that passes records on
        (`SAME`) is read by the stages after it too. Where everything after a stage
        reads only some fields, that stage may drop the others (see `needed`)."""
        return None

    @classmethod
    def check_kind(cls, options: dict[str, Any], kind: str) -> str | None:
        """Why this stage, with these options, cannot take records of `kind` (one it
        accepts), or None. Checked at load; the loader adds which stage gives them."""
        return None

    @classmethod
    def check_fields(cls, options: dict[str, Any], given: tuple[str, ...],
                     kind: str) -> str | None:
        """Why this stage cannot work on records of `kind` with these (known) fields,
        or None: say, a column no record has. Checked at load, like check_options; the
        loader adds which stage produced the fields."""
        return None

    def open(self, ctx: Any) -> None:
        """Called once before the stage sees data. `ctx` is the run's `Context`."""
        self.ctx = ctx

    def snapshot(self) -> Any:
        """State after the last finished batch. Stateless stages return None."""
        return None

    def restore(self, state: Any) -> None:
        """Continue from a value `snapshot()` returned."""

    def committed(self) -> None:
        """The checkpoint holding the last `snapshot()` is durable: files that only
        older checkpoints needed may be deleted now."""

    def counters(self) -> dict[str, int]:
        """Named counts for the end-of-run report, e.g. {'lines': 10}."""
        return {}

    def describe(self) -> str:
        return self.name


class InputChanged(Exception):
    """Raised by an input that follows growing files when one was truncated or replaced:
    what was read no longer describes it, so the engine starts over (with a notice)."""


class Input(Stage):
    """Where records come from. The engine uses only what is declared here.

    Reading. `read()` yields batches, and may be called on a fresh instance restored
    from a snapshot: it goes on after what the snapshot covers. A *bounded* input (a
    file) ends by itself. An *unbounded* one (`unbounded()` is True: a followed file, a
    queue) ends only when the run's stop request is set: it finds that request as
    `self.ctx.stop` (`is_set()`), given in `open(ctx)`, and must end its read after the
    batch in hand once it is set. While it has nothing new, it yields an empty batch
    now and then (say, every quarter second), so that the engine can checkpoint, emit
    a followed run's current result, and notice the stop request between them.

    Pieces. An input that can be read in pieces, in parallel, describes them with
    `ranges()` (JSON-able descriptors, in input order), says how big each is
    (`range_bytes()`), whose line numbers it continues (`numbering()`), and what it
    holds (`range_identity()`); `part(piece)` is a reader of one piece. The default is
    one piece: the whole input.

    Resuming. `identity()` says what the input is; `resume_problem()` why a snapshot
    taken of another cannot continue; `resumable` is False for an input that cannot be
    read again after a kill (standard input): the run then takes no checkpoints.
    """

    role = Role.INPUT
    accepts = ()
    resumable = True  # False: it cannot be read again after a kill (stdin), so no checkpoints

    def read(self) -> Iterator[Batch]:
        raise NotImplementedError

    def unbounded(self) -> bool:
        """Whether it ends only when stopped (see the class docstring); such a run is
        one process, with one reducer on each path, and emits as it goes."""
        return False

    def identity(self) -> dict[str, Any]:
        """What the input is (path, inode, ...). A resume needs the same identity."""
        return {}

    def resume_problem(self, saved_identity: dict[str, Any], saved_state: Any) -> str | None:
        """Why a checkpoint taken over `saved_identity` cannot continue here, or None."""
        return None if saved_identity == self.identity() else "the input changed"

    def lines_before(self) -> int:
        """Lines in the source before this reader's piece (for absolute line numbers in
        an error; it may read them)."""
        return 0

    def resume_has_more(self) -> bool:
        """After restore(): is there anything new to read?"""
        return True

    def location(self) -> str:
        """Where it is, in words, e.g. 'line 10 (byte 512)'."""
        return ""

    # -- planning (engine/plan.py) ------------------------------------------------------
    def ranges(self, target_bytes: int, frontier: Any = None) -> tuple[list[Any], Any]:
        """JSON-able descriptions of pieces of the input, in order, each about
        `target_bytes`, that `part()` can read independently; only what lies beyond
        `frontier` (what an earlier plan covered). Also returns the new frontier.
        The default is one piece: the whole input, planned once."""
        return ([None] if frontier is None else []), self.identity()

    def frontier_problem(self, frontier: Any) -> str | None:
        """Why a plan that covered `frontier` cannot go on with the input as it is now."""
        return None if frontier == self.identity() else "the input changed"

    def range_bytes(self, piece: Any) -> int:
        """How many bytes a piece holds, for progress; 0 if that is not known."""
        return 0

    def numbering(self, piece: Any) -> str:
        """Which numbering of lines a piece's lines belong to: the lines of pieces with
        the same numbering are counted on from one piece to the next (a file's); a
        rejected line's number is its line in that numbering."""
        return ""

    def range_identity(self, piece: Any) -> Any:
        """What the bytes of a piece are now, in a few words (say, hashes of its first
        and last blocks): a finished task is only reused while it is unchanged.
        JSON-able; None if the piece cannot be checked cheaply."""
        return None

    def part(self, piece: Any) -> "Input":
        """A reader of one piece that ranges() described."""
        return self

    def estimated_bytes(self) -> int | None:
        """About how much there is to read (sizes the reducers' buckets), if known."""
        return None

    def total_bytes(self) -> int | None:
        """How much this reader will read (for a progress bar), if known."""
        return None

    def position(self) -> int:
        """Bytes consumed so far, for progress."""
        return 0


class Processor(Stage):
    role = Role.PROCESSOR

    def process(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        raise NotImplementedError


class Reducer(Processor):
    """Folds every batch into a partial state; `merge` combines two partial states.

    `merge(other)` is called with `other` covering input that comes *after* self's
    input in file order, so order-sensitive rules (first id wins) stay exact.
    """

    role = Role.REDUCER
    reduce_row_bytes: ClassVar[int] = 256  # memory a keyed reducer's row takes, reduced

    def update(self, batch: Batch) -> None:
        raise NotImplementedError

    def merge(self, other: "Reducer") -> None:
        raise NotImplementedError

    def finish(self) -> Iterator[Batch]:
        raise NotImplementedError

    def current(self, memory_bytes: int) -> Iterator[Batch]:
        """The result so far, as finish() would give it now, leaving the state as it is:
        a followed run shows it every --emit-every seconds. By default, finish() of a
        copy of this reducer (made with snapshot() and restore())."""
        import pickle

        copy = type(self)(**self._options)
        copy.restore(pickle.loads(pickle.dumps(self.snapshot())))
        yield from copy.finish()

    def process(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            self.update(batch)
        yield from self.finish()


class Output(Stage):
    role = Role.OUTPUT
    produces = ""

    @classmethod
    def destinations(cls, options: dict[str, Any]) -> list[str]:
        """Where it writes, from its options: file paths, or "-" for standard output.
        The loader refuses two outputs with one destination, and an output onto the
        input. By default: its `path` option, if it declares one."""
        for opt in cls.options:
            if opt.name == "path":
                path = options.get("path", opt.default)
                return [path] if isinstance(path, str) else []
        return []

    def write(self, batches: Iterator[Batch]) -> None:
        raise NotImplementedError

    # -- writing in parts ---------------------------------------------------------------
    @property
    def in_parts(self) -> bool:
        """Whether the bytes it writes for a batch depend on that batch alone (encode()),
        and it writes them to a file: then a run without reducers and with several
        workers has the workers encode their ranges' records, and this output, in the
        main process, writes their bytes in input order (bytes_of() in write())."""
        return False

    def encode(self, batch: Any) -> bytes:
        """The bytes write() writes for `batch`, with nothing before or after them (a
        header is write()'s own). Only called if in_parts."""
        raise NotImplementedError

    def bytes_of(self, batch: Any) -> bytes:
        """What to write for a batch given to write(): encode(batch), or the bytes a
        worker made ahead (an Encoded batch)."""
        return batch.data if isinstance(batch, Encoded) else self.encode(batch)


class AppendOnly:
    """Marks a list or array in a snapshot as grow-only. Pickles as the plain value."""

    __slots__ = ("value",)

    def __init__(self, value: list[Any] | array):
        self.value = value

    def __reduce__(self) -> Any:
        return (_identity, (self.value,))


def _identity(value: Any) -> Any:
    return value


def unwrap(value: Any) -> Any:
    return value.value if isinstance(value, AppendOnly) else value
