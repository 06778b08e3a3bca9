"""Sluice's public stage API: what a stage author may use, and nothing else.

    from pipeline import Batch, Option, Processor, SAME

Stages subclass Input, Processor, Reducer (or KeyedReducer) or Output and declare their
options; `pipeline.outputs` has the file helpers outputs use, and `pipeline.testing` the
check every stage should pass. The engine itself lives in subpackages (engine/,
executors/, state/, tools/), which a stage never imports; `pipeline` never imports
`stages/`.
"""
from pipeline import keys
from pipeline.errors import ConfigError, InputError, RejectedLine, SluiceError
from pipeline.keyed import KeyedReducer, ReduceIO
from pipeline.stage import (ANY, KINDS, SAME, AppendOnly, Batch, Fields, Input, InputChanged,
                            Option, Output, Problem, Processor, Reducer, Role, Stage, a_path,
                            positive,
                            positive_at_most, unwrap)

__all__ = [
    "ANY",
    "AppendOnly",
    "Batch",
    "ConfigError",
    "Fields",
    "Input",
    "InputChanged",
    "InputError",
    "KINDS",
    "KeyedReducer",
    "Option",
    "Output",
    "Problem",
    "Processor",
    "ReduceIO",
    "Reducer",
    "RejectedLine",
    "Role",
    "SAME",
    "SluiceError",
    "Stage",
    "a_path",
    "keys",
    "positive",
    "positive_at_most",
    "unwrap",
]
