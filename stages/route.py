"""route: send each record to the branches whose condition holds for it.

    - route:
        mode: first                 # or all; first is the default
        errors:
          if: "status >= 500"
          stages:
            - jsonl-output: {path: errors.jsonl}
        slow:
          if: "ms > 1000"
          stages:
            - jsonl-output: {path: slow.jsonl}
        default:                    # optional: the records no condition took
          - jsonl-output: {path: rest.jsonl}

Like `fork`, `route` is the last element of `pipeline`. The config loader
(pipeline.config) turns it into a fork: a `route` stage at the end of the trunk
evaluates every condition once per batch (each an SQL expression, see
stages/expression.py) and marks which branches each record goes to; each branch starts
with a `routed` stage that keeps its records. So branches run, checkpoint, resume and
run in parts like a fork's.

- `mode: first`: a record goes to the first branch whose condition is true (in the
  config's order); `mode: all`: to every branch whose condition is true.
- A record no condition is true for (NULL is not true) goes to `default`, or, without
  one, nowhere (counted as `unrouted`).
- A record a condition it needs cannot be computed for (with `first`, the conditions
  up to the first true one; with `all`, every one) goes to the dead-letter file once,
  with the branch and the reason, and to no branch. With `on_failure: keep` (a key of
  `route`, beside `mode`) a condition that fails is not true for it, and the record
  goes on with a `_failures` entry for each failed condition (to a later branch, the
  default, or nowhere); `on_failure: drop` drops it (see stages/failures.py).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from pipeline import SAME, Batch, Option, Processor
from pipeline.columns import Columns

from .expression import LOADS, ExpressionError, holds, parse, problem
from .failures import ON_FAILURE, OnFailure, as_records

MAX_BRANCHES = 62  # each record's branches are bits of an int64
MODES = ("first", "all")


class Routed:
    """A batch on its way from `route` to the branches, with each record's branches
    (bit k: the k-th branch of the route, the default last)."""

    __slots__ = ("batch", "masks")

    def __init__(self, batch: Any, masks: np.ndarray):
        self.batch, self.masks = batch, masks

    def __len__(self) -> int:
        return len(self.batch)

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        """Each record with its branches (what a stage's test compares)."""
        records = self.batch.records() if isinstance(self.batch, Columns) else self.batch
        return iter(zip(records, self.masks.tolist()))


class Route(OnFailure, Processor):
    """Send each record to the branches whose condition holds for it: made by the
    config loader from the last element of `pipeline`,

        - route:
            mode: first
            errors: {if: "status >= 500", stages: [jsonl-output: {path: errors.jsonl}]}
            default: [jsonl-output: {path: rest.jsonl}]

    at the end of the trunk, where it works out which branches each record goes to
    (see stages/route.py and the README's "Route")."""

    name = "route"
    part_of_route = True  # made by the config loader from `route:`, never given alone
    MAX_BRANCHES = MAX_BRANCHES
    order_free = True
    accepts = ("object", "site-event")
    produces = SAME
    columnar = True
    reports = ("unrouted",)
    options = (
        Option("if", dict, doc="{branch: SQL condition}, in order"),
        Option("mode", str, "first", "first: the first branch that holds; all: each",
               choices=MODES),
        Option("default", bool, False, "whether the records no condition took have a "
                                       "branch (last)"),
        ON_FAILURE,
    )

    @classmethod
    def loads_with(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return LOADS

    @staticmethod
    def check_condition(text: Any) -> str | None:
        """Why `text` is not a usable condition, or None."""
        if not isinstance(text, str):
            return f"must be an SQL condition (text); got {type(text).__name__} {text!r}"
        try:
            parse(text)
        except ExpressionError as exc:
            return problem(exc, text)
        return None

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...]:
        fields: dict[str, None] = {}
        for text in options["if"].values():
            fields.update(dict.fromkeys(parse(text).fields))
        return tuple(fields)

    def __init__(self, **options: Any):
        super().__init__(**options)
        conditions = getattr(self, "if")
        self.names = list(conditions)
        self.conditions = [parse(text) for text in conditions.values()]
        self.unrouted = 0

    def snapshot(self) -> dict[str, int]:
        return {"unrouted": self.unrouted, **self.failure_counts()}

    def restore(self, state: dict[str, int]) -> None:
        self.unrouted = state["unrouted"]
        self.restore_failure_counts(state)

    def counters(self) -> dict[str, int]:
        return {"unrouted": self.unrouted, **self.failure_counts()}

    def process(self, batches: Iterator[Batch]) -> Iterator[Any]:
        keep_failed = self.on_failure == "keep"
        for batch in batches:
            n = len(batch)
            masks = np.zeros(n, dtype=np.int64)
            open_ = np.ones(n, dtype=bool)  # not yet routed (mode first), not failed
            failed: dict[int, list[str]] = {}
            for k, (name, condition) in enumerate(zip(self.names, self.conditions)):
                outcome = condition.evaluate(batch)
                true = holds(outcome, n)
                for i, why in outcome.failed.items():
                    if open_[i]:  # still open: not failed before, not routed (first)
                        failed.setdefault(i, []).append(
                            f"route branch {name!r}: condition `{condition.text}`: {why}")
                        open_[i] = keep_failed  # kept: the other conditions go on
                        true[i] = False
                take = open_ & true
                masks[take] |= 1 << k
                if self.mode == "first":
                    open_ &= ~true
            kept = self.failed(batch, failed)
            if failed and not kept:
                masks[list(failed)] = 0
            nowhere = masks == 0
            if failed and not kept:
                nowhere[list(failed)] = False
            if self.default:
                masks[nowhere] |= 1 << len(self.names)
            else:
                self.unrouted += int(nowhere.sum())
            if kept:
                batch = as_records(batch)
                batch = batch.take(range(n))  # a batch of its own to tag
                self.tag(batch, kept)
            yield Routed(batch, masks)


class RouteBranch(Processor):
    """The first stage of each branch of a `- route:`, put there by the config loader:
    it keeps the records `route` sent to its branch. A config that names `- routed:`
    itself is refused."""

    name = "routed"
    part_of_route = True
    order_free = True
    accepts = ("object", "site-event")
    produces = SAME
    columnar = True
    options = (Option("branch", int, doc="which of the route's branches (0-based)"),)

    @classmethod
    def reads(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return ()

    def process(self, batches: Iterator[Any]) -> Iterator[Any]:
        bit = np.int64(1) << np.int64(self.branch)
        for routed in batches:
            batch = routed.batch
            keep = (routed.masks & bit) != 0
            if keep.all():
                yield batch
            elif isinstance(batch, Columns):
                yield batch.filter(keep)
            else:
                yield batch.take(np.flatnonzero(keep).tolist())
