"""Sluice's engine: stages, registry, config, runner. It never imports `stages/`."""
from pipeline import keys
from pipeline.stage import AppendOnly, unwrap
from pipeline.config import PipelineConfig, load_config, parse_config
from pipeline.errors import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ConfigError,
                             InputError, RejectedLine, SluiceError)
from pipeline.keyed import KeyedReducer, ReduceIO
from pipeline.registry import Registry, check_stage_class
from pipeline.stage import (ANY, KINDS, SAME, Batch, Input, InputChanged, Kind, Option, Output,
                            Processor, Reducer, Stage, a_path, positive, positive_at_most)

__all__ = [
    "ANY",
    "AppendOnly",
    "Batch",
    "ConfigError",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Input",
    "InputChanged",
    "InputError",
    "KINDS",
    "KeyedReducer",
    "Kind",
    "Option",
    "Output",
    "PipelineConfig",
    "Processor",
    "ReduceIO",
    "Reducer",
    "Registry",
    "RejectedLine",
    "SAME",
    "SluiceError",
    "Stage",
    "a_path",
        "check_stage_class",
    "keys",
    "load_config",
    "parse_config",
    "positive",
    "positive_at_most",
    "unwrap",
]
