"""The registry: built-ins by name, import paths, checked before insert."""
from __future__ import annotations

import pytest

import main
import pipeline
from pipeline import Input, Option, Output, Processor, Stage
from pipeline.registry import Registry


def test_public_api_names():
    """pipeline's public names are exactly what a stage author may use (sorted __all__):
    the engine's own (the registry, the config loader, exit codes) live in its modules."""
    assert pipeline.__all__ == sorted(pipeline.__all__)
    assert pipeline.__all__ == [
        "ANY", "AppendOnly", "Batch", "ConfigError", "Fields", "Input", "InputChanged",
        "InputError", "KINDS", "KeyedReducer", "Option", "Output", "Problem", "Processor", "ReduceIO",
        "Reducer", "RejectedLine", "Role", "SAME", "SluiceError", "Stage", "a_path", "keys",
        "positive", "positive_at_most", "unwrap"]


def test_builtins_are_registered_by_name():
    """The built-ins register under their documented names and kinds."""
    reg = main.build_registry()
    assert {n: reg.get(n).role.value for n in reg.names()} == {
        "aggregate": "reducer", "count": "reducer", "csv-output": "output",
        "date": "processor", "dedupe": "reducer", "dissect": "processor", "file-input": "input", "grok": "processor",
        "json-decode": "processor",
        "jsonl-output": "output", "kv": "processor", "mutate": "processor", "parquet-output": "output",
        "postgres-output": "output",
        "route": "processor", "routed": "processor", "site-state-reducer": "reducer",
        "sorted-stdout-output": "output", "sqlite-output": "output",
        "summary-json-output": "output",
        "where": "processor"}


def test_every_builtin_documents_itself():
    """Each built-in has a docstring with a YAML snippet and a doc for every option."""
    reg = main.build_registry()
    for name in reg.names():
        cls = reg.get(name)
        assert f"- {name}:" in cls.__doc__
        assert all(o.doc for o in cls.options)


def test_engine_never_imports_stages():
    """pipeline/ does not import stages/."""
    from pathlib import Path
    for path in Path(pipeline.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "import stages" not in text and "from stages" not in text, path


class Good(Processor):
    """ok

        - good: {}
    """
    name = "good"


def test_clash_names_both_origins():
    """Registering a second class under a taken name is refused, naming both."""
    reg = Registry()
    reg.register(Good, "pkg-a")

    class Other(Processor):
        name = "good"
    with pytest.raises(ValueError, match="stage name 'good' from pkg-b clashes with the one from pkg-a"):
        reg.register(Other, "pkg-b")
    assert reg.get("good") is Good


@pytest.mark.parametrize("bad,problem", [
    (object, "is not a subclass of pipeline.Stage"),
    (type("NoName", (Processor,), {}), "NoName has no `name`"),
    (type("WrongKind", (Output,), {"name": "w", "role": pipeline.Role.INPUT}),
     "WrongKind.role <Role.INPUT: 'input'> does not match its base class"),
    (type("BadOpts", (Input,), {"name": "b", "options": ["x"]}),
     "BadOpts.options must be a tuple of pipeline.Option"),
])
def test_invalid_classes_are_refused_before_insert(bad, problem):
    """A class is checked first and inserted last: a bad one leaves nothing behind."""
    reg = Registry()
    with pytest.raises(ValueError, match=problem.split("<")[0][:20]):
        reg.register(bad, "plug")
    assert reg.names() == []


def test_stage_options_defaults_and_unknown():
    """Options arrive as attributes, with declared defaults filled in."""
    class S(Stage):
        name = "s"
        role = pipeline.Role.PROCESSOR
        options = (Option("a", int, 3, "a doc"), Option("b", str, doc="b doc"))
    s = S(b="x")
    assert (s.a, s.b) == (3, "x")
    with pytest.raises(TypeError, match="unknown option 'c'"):
        S(b="x", c=1)
    with pytest.raises(TypeError, match="missing option 'b'"):
        S()
