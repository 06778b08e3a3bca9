"""Event-time windows for `aggregate` and `count`:

    window: {field: ts, size: 1m, slide: 1m, allowed_lateness: 30s}

A record at event time t (epoch seconds in `field`, as `date` makes) belongs to every
window [start, start + size) holding t, windows starting at whole multiples of `slide`
(from the epoch): one window when slide = size (tumbling), size / slide of them when
slide < size (hopping). A record exactly at a window's end belongs to the next one.

A batch run (a file) emits every window once, sorted by window, then group: the window
start is the first part of the group's key, so the reducer's spill, buckets and merge
work as they do without one.

A followed run (`--follow`) emits a window when it is complete instead (`OpenWindows`):
the *watermark* is the largest event time seen less `allowed_lateness`; once it reaches
a window's end the window is reduced, its rows are added to the reducer's `closed` set
(which is what the reducer's result then shows) and its state is dropped. Each open
window is a reducer of its own (the same stage without `window`) spilling to its own
directory, so memory holds only open windows. A record whose every window has been
emitted is late: it goes to the dead-letter file with reason `late`.
"""
from __future__ import annotations

import heapq
import math
import os
import re
import shutil
from fractions import Fraction
from operator import itemgetter
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from pipeline import Option
from pipeline.keyed import ORDER_BITS

from .fields import MISSING, reject_records, show

CLOSED = "closed"  # the spill set of a followed run's emitted windows: (key, record) frames
WINDOW_FIELDS = ("window_start", "window_end")
KEYS = ("field", "size", "slide", "allowed_lateness")
UNITS = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600),
         "d": Fraction(86400)}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*\Z")
MAX_HOPS = 1000  # windows a record may be in (size / slide) at most
SUB_BUFFER = 1 << 20  # the spill buffer of each open window's reducer


class Window(NamedTuple):
    field: str
    size: Fraction    # seconds
    slide: Fraction
    lateness: Fraction

    @property
    def whole(self) -> bool:
        """Whether every window starts and ends on a whole second: bounds are ints."""
        return self.size.denominator == 1 and self.slide.denominator == 1

    def bound(self, start: float) -> Any:
        return int(start) if self.whole else float(start)

    def bounds(self, starts: np.ndarray) -> list[Any]:
        """bound() of each start, a column at a time."""
        return (starts.astype(np.int64) if self.whole else starts).tolist()

    def end(self, start: Any) -> Any:
        return start + (int(self.size) if self.whole else float(self.size))


def duration(value: Any, what: str) -> Fraction | str:
    """Seconds in a duration (`90`, `1.5`, `500ms`, `30s`, `5m`, `1h`, `1d`), or why not."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        seconds = Fraction(value)
    else:
        m = _DURATION.match(value) if isinstance(value, str) else None
        if m is None:
            return (f"`{what}` must be a duration: seconds, or a number with ms, s, m, h "
                    f"or d (30s, 5m, 1h); got {value!r}")
        seconds = Fraction(m.group(1)) * UNITS[m.group(2) or "s"]
    if seconds < 0 or (seconds * 1000).denominator != 1:
        return f"`{what}` must be a whole number of milliseconds, 0 or more; got {value!r}"
    return seconds


def parse_window(value: Any) -> Window | str:
    """The `window` option, checked: a Window, or why it is wrong."""
    if not isinstance(value, dict):
        return f"expected {{field: ts, size: 1m}}; got {value!r}"
    if "gap" in value:
        return ("session windows (`gap`) are not supported; use `size` (and `slide` for "
                "hopping windows)")
    unknown = [k for k in value if k not in KEYS]
    if unknown:
        return f"unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}"
    field = value.get("field")
    if not isinstance(field, str) or not field or "" in field.split("."):
        return f"`field` must name the event-time field (epoch seconds); got {field!r}"
    if "size" not in value:
        return "`size` is required, as in size: 1m"
    size = duration(value["size"], "size")
    slide = duration(value.get("slide", value["size"]), "slide")
    lateness = duration(value.get("allowed_lateness", 0), "allowed_lateness")
    for d in (size, slide, lateness):
        if isinstance(d, str):
            return d
    assert isinstance(size, Fraction) and isinstance(slide, Fraction)
    if not size or not slide:
        return "`size` and `slide` must be more than 0"
    if slide > size:
        return (f"`slide` ({value.get('slide')!r}) must be at most `size` "
                f"({value['size']!r}): records between windows would be lost")
    if size / slide > MAX_HOPS:
        return f"`size` / `slide` must be at most {MAX_HOPS} windows per record"
    return Window(field, size, slide, lateness)  # type: ignore[arg-type]


def _check(value: Any) -> str | None:
    parsed = parse_window(value)
    return parsed if isinstance(parsed, str) else None


WINDOW = Option("window", dict, None,
                "event-time windows: {field: ts, size: 1m, slide: 1m, allowed_lateness: "
                "0s}; each row gets window_start and window_end", check=_check)


def window_of(options: dict[str, Any]) -> Window | None:
    parsed = parse_window(options["window"]) if options.get("window") is not None else None
    return parsed if isinstance(parsed, Window) else None


def names_problem(stage: str, names: Iterable[str]) -> str | None:
    """Output field names that window_start / window_end would collide with."""
    for name in names:
        if name.split(".")[0] in WINDOW_FIELDS:
            return (f"stage {stage!r}: {name!r} is also a window field's name "
                    f"(window_start, window_end); output fields must differ")
    return None


# -- assigning records to windows -------------------------------------------------------
def event_times(values: list[Any], field: str) -> tuple[np.ndarray, dict[int, str]]:
    """Each record's event time as a float, and the records without one: {position:
    reason}. A time is a finite number (an int or a float, not a bool)."""
    kinds = set(map(type, values))
    if kinds <= {int, float}:
        times = np.array(values, np.float64)
        if np.isfinite(times).all():
            return times, {}
    times = np.zeros(len(values), np.float64)
    bad: dict[int, str] = {}
    for j, v in enumerate(values):
        if v.__class__ in (int, float) and math.isfinite(v):
            times[j] = v
        elif v is MISSING or v is None:
            bad[j] = f"field {field!r} is missing: a window needs the record's event time"
        else:
            bad[j] = (f"field {field!r}: a window needs the event time in epoch seconds (a "
                      f"number), got {show(v)}; a `date` stage before it makes one")
    return times, bad


def assign(times: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(rows, starts): for each record (row number) each window start holding its time,
    latest window first."""
    slide, size = float(window.slide), float(window.size)
    last = np.floor(times / slide) * slide + 0.0  # (+ 0.0: no -0.0 start)
    # a quotient rounded up or down by one ulp: put the start back at or just below t
    last = np.where(last > times, last - slide, last)
    last = np.where(last + slide <= times, last + slide, last)
    hops = math.ceil(window.size / window.slide)
    n = len(times)
    if hops == 1:
        return np.arange(n), last
    rows = np.repeat(np.arange(n), hops)
    starts = np.repeat(last, hops) - np.tile(np.arange(hops) * slide, n)
    keep = starts + size > times[rows]
    return rows[keep], starts[keep]


class Windowed:
    """What a windowed reducer (aggregate, count) shares: its stage calls
    `_init_window()` in __init__ and hands each batch to `_windowed()`."""

    win: Window | None = None
    live: "OpenWindows | None" = None

    def _init_window(self) -> None:
        from .fields import column
        self.win = window_of(self._options)  # type: ignore[attr-defined]
        self.time_col = column(self.win.field) if self.win is not None else None
        self.live = None

    @property
    def following(self) -> bool:
        """A followed run: each window is emitted once complete (see OpenWindows)."""
        return getattr(self.ctx, "following", False)  # type: ignore[attr-defined]

    def _windowed(self, records: Any, skip: set[int],
                  take: Callable[[Any, np.ndarray, Any], None]) -> None:
        """Hand a batch's records to their windows: take(reducer, positions, starts),
        a position once per window holding it. In a batch run the reducer is this one
        and `starts` are the windows' starts (the first part of each group); in a
        followed run, each open window's own reducer, and None. Records without an
        event time are the stage's failures (`time_failed`); `skip` are positions
        already rejected; a followed run's late records go to the dead letters."""
        win = self.win
        assert win is not None and self.time_col is not None
        times, bad = event_times(self.time_col(records), win.field)
        for j in sorted(bad):
            if j not in skip:
                self.time_failed(records, j, bad[j])
        good = np.array([j for j in range(len(times)) if j not in skip and j not in bad],
                        np.int64) if (bad or skip) else np.arange(len(times))
        times = times[good]
        rows, starts = assign(times, win)
        if not self.following:
            take(self, good[rows], starts)
            return
        if self.live is None:
            self.live = OpenWindows(self)
        live = self.live
        # a row is late if the watermark before its record (the largest time before
        # it, less the lateness) reached its window's end: record by record, so that
        # where batches happen to break changes nothing
        latest = np.maximum.accumulate(np.r_[live.max_time, times])[:-1]  # before each
        late = starts + float(win.size) <= latest[rows] - float(win.lateness)
        if late.any():
            on_time = set(rows[~late].tolist())
            for r in sorted(set(rows[late].tolist()) - on_time):
                self.time_failed(records, int(good[r]), (
                    f"late: event time {_number(times[r])} is more than "
                    f"{_number(win.lateness)}s (allowed_lateness) before the latest one "
                    f"seen, {_number(latest[r])}: its window was already emitted"), late=True)
            rows, starts = rows[~late], starts[~late]
        live.add(starts, lambda sub, at: take(sub, good[rows[at]], None))
        live.advance(times)

    def time_failed(self, records: Any, j: int, reason: str, late: bool = False) -> None:
        """Record j has no usable event time (or is late): to the dead-letter file, or
        dropped with `on_failure: drop` (late records always go to the dead letters)."""
        if getattr(self, "on_failure", "dead-letter") == "drop" and not late:
            self.failures_dropped += 1  # type: ignore[attr-defined]
            return
        reject_records(self.ctx, self.name, records, {j: reason})  # type: ignore

    def closed_pair(self, start: Any, end: Any, key: Any, record: Any) -> tuple[Any, Any]:
        """A closed window's result pair, as the reducer's own results are keyed."""
        raise NotImplementedError

    def window_state(self) -> dict[str, Any]:
        return {"windows": self.live.snapshot()} if self.live is not None else {}

    def restore_windows(self, state: dict[str, Any]) -> None:
        if "windows" in state:
            self.live = OpenWindows(self)
            self.live.restore(state["windows"])

    def committed(self) -> None:
        if self.live is not None:
            self.live.committed()


def _number(x: Any) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def with_closed(result: Iterable[tuple[Any, Any]], io: Any, bucket: int
                ) -> Iterator[tuple[Any, Any]]:
    """A bucket's (key, record) result pairs merged with the windows a followed run
    closed into it: both are in key order (windows close in the order they end)."""
    closed = (pair for frame in io.frames(CLOSED, bucket) for pair in frame)
    return heapq.merge(result, closed, key=itemgetter(0))


# -- a followed run's open windows ------------------------------------------------------
class OpenWindows:
    """The open windows of a windowed reducer in a followed run: one reducer each (the
    same stage without `window`), spilling under `<reducer's spill>/windows/`.

    The reducer hands each batch's windowed rows to `add()`, then `advance()` closes the
    windows the watermark has passed: a closed window's reducer is reduced in this
    process, its result rows go to the reducer's CLOSED set with the window's bounds,
    and its directory is deleted once a checkpoint that no longer names it is durable
    (`committed()`), so a kill between the two never loses it."""

    def __init__(self, owner: Any):
        self.owner = owner
        self.win: Window = owner.win
        self.open: dict[float, tuple[str, Any]] = {}  # start -> (directory name, reducer)
        self.made = 0               # windows opened so far: names their directories
        self.max_time = -math.inf   # the largest event time seen
        self.gone: list[str] = []     # directories of windows closed since the snapshot
        self.unneeded: list[str] = []  # ... closed before it: deleted once it is durable
        self.emitted = 0  # windows closed by this process (the metrics endpoint's count)

    @property
    def root(self) -> str:
        return os.path.join(self.owner._writer().dir, "windows")

    def _reducer(self, start: float) -> Any:
        have = self.open.get(start)
        if have is not None:
            return have[1]
        name = f"w{self.made}"
        self.made += 1
        sub = self._build(name)
        self.open[start] = (name, sub)
        return sub

    def _build(self, name: str) -> Any:
        owner = self.owner
        options = {k: v for k, v in owner._options.items() if k != "window"}
        sub = owner.__class__(**options)
        sub.ctx = owner.ctx
        sub.configure(os.path.join(self.root, name), owner.nbuckets,
                      owner.order_base >> ORDER_BITS, SUB_BUFFER)
        return sub

    def add(self, starts: np.ndarray, take: Callable[[Any, np.ndarray], None]) -> None:
        """Hand rows to their windows' reducers: take(reducer, row numbers)."""
        if not len(starts):
            return
        order = np.argsort(starts, kind="stable")
        sorted_starts = starts[order]
        cuts = np.flatnonzero(np.diff(sorted_starts)) + 1
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(order)]):
            take(self._reducer(float(sorted_starts[lo])), order[lo:hi])

    def advance(self, times: np.ndarray) -> None:
        """Move the watermark on to the batch's latest time, and close what it passed."""
        if len(times):
            self.max_time = max(self.max_time, float(times.max()))
        watermark = self.max_time - float(self.win.lateness)
        size = float(self.win.size)
        for start in sorted(s for s in self.open if s + size <= watermark):
            self._close(start)

    def _close(self, start: float) -> None:
        name, sub = self.open.pop(start)
        owner, win = self.owner, self.win
        ws = win.bound(start)
        we = win.end(ws)
        bucket = int(start // float(win.slide)) % owner.nbuckets
        writer = owner._writer()
        for pairs in sub.reduced_pairs():
            writer.add_objects(CLOSED, bucket, [owner.closed_pair(ws, we, key, record)
                                                for key, record in pairs])
        for key, n in sub.reduced.items():
            owner.reduced[key] = owner.reduced.get(key, 0) + n
        sub.spill.close()
        self.gone.append(name)
        self.emitted += 1

    # -- state -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        self.unneeded += self.gone
        self.gone = []
        return {"open": [[start, name, sub.snapshot()]
                         for start, (name, sub) in sorted(self.open.items())],
                "made": self.made, "max_time": self.max_time}

    def restore(self, state: dict[str, Any]) -> None:
        self.made, self.max_time = state["made"], state["max_time"]
        self.open = {}
        for start, name, sub_state in state["open"]:
            sub = self._build(name)
            sub.restore(sub_state)
            self.open[start] = (name, sub)
        keep = {name for name, _ in self.open.values()}
        if os.path.isdir(self.root):  # windows opened or closed after that checkpoint
            for name in os.listdir(self.root):
                if name not in keep:
                    shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def committed(self) -> None:
        """A checkpoint without the windows closed before it is durable: delete them."""
        for name in self.unneeded:
            shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
        self.unneeded = []
