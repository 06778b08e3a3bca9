"""The runner closes every generator: at the end, on an error, on Ctrl-C."""
from __future__ import annotations

import pytest

from pipeline import Batch, Input, Output, Processor
from pipeline.engine.runner import Context, barrier, flow

EVENTS: list[str] = []


class Source(Input):
    name = "t-source"

    def read(self):
        try:
            for i in range(5):
                yield Batch([i])
        finally:
            EVENTS.append("source closed")


class Step(Processor):
    name = "t-step"

    def __init__(self, fail_at=None, exc=RuntimeError):
        super().__init__()
        self.fail_at, self.exc = fail_at, exc

    def process(self, batches):
        try:
            for b in batches:
                if b[0] == self.fail_at:
                    raise self.exc("boom")
                yield Batch([b[0] * 10])
        finally:
            EVENTS.append("step closed")


class Sink(Output):
    name = "t-sink"

    def write(self, batches):
        self.got = [b[0] for b in batches]


@pytest.mark.parametrize("fail_at,exc", [(None, None), (2, RuntimeError), (3, KeyboardInterrupt)])
def test_every_generator_is_closed(fail_at, exc):
    """End, error or Ctrl-C: every stage's generator runs its cleanup."""
    EVENTS.clear()
    sink = Sink()
    stages = [Source(), Step(fail_at, exc or RuntimeError), sink]
    if fail_at is None:
        flow(stages, {}, Context(None))
        assert sink.got == [0, 10, 20, 30, 40]
    else:
        with pytest.raises(exc):
            flow(stages, {}, Context(None))
    assert sorted(EVENTS) == ["source closed", "step closed"]


def test_barrier_runs_between_batches_and_at_end():
    """The hook sees each finished batch before the next is read, then the end."""
    seen = []

    def source():
        for i in range(3):
            seen.append(f"read {i}")
            yield Batch([i, i])

    def hook(n, at_end):
        seen.append(f"hook {n} {at_end}")
    for batch in barrier(source(), hook):
        seen.append(f"use {batch[0]}")
    assert seen == ["read 0", "use 0", "hook 2 False", "read 1", "use 1", "hook 2 False",
                    "read 2", "use 2", "hook 2 False", "hook 0 True"]
