"""Reading YAML a user wrote: within limits, with a file:line for every problem.

    doc = YamlDoc.read("configs/x.yaml")     # or YamlDoc(text, path)
    root = doc.root()                        # the composed node tree, checked
    for key, value in doc.pairs(root, "the config"):
        name = doc.key(key)                  # a string, or a ConfigError at its line
        data = doc.value(value)              # the Python value, or a ConfigError

Whatever goes wrong becomes one ConfigError (exit 2) naming FILE:LINE: a YAML syntax
error, a value PyYAML's safe constructor refuses (`!!binary` that is not base64,
`!!int 0xZZ`, a bad `!!timestamp`, an unhashable key `? [a]`), a character YAML does not
allow (NUL, other control characters), text that is not UTF-8, a lone surrogate
written as an escape (`"\\udc80"`), and a key given twice in one mapping (YAML would
silently keep the last).

Limits keep a hostile or mistaken file from taking the machine: a config of at most
MAX_BYTES, mappings and lists nested at most MAX_DEPTH deep, and at most MAX_NODES
values with every alias expanded (a "billion laughs" alias bomb is a few hundred
bytes of text). Merge keys (`<<: *defaults`) work as in YAML 1.1.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from pipeline.errors import ConfigError

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 200_000
_SURROGATE = re.compile("[\ud800-\udfff]")
_MERGE = "tag:yaml.org,2002:merge"


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


class _Composer(yaml.SafeLoader):
    """PyYAML's safe loader, composing with a depth limit (its composer recurses)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _TooDeep(self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _TooDeep(Exception):
    def __init__(self, mark: Any):
        super().__init__()
        self.mark = mark


class YamlDoc:
    def __init__(self, text: str, path: str, what: str = "config"):
        self.text, self.path, self.what = text, path, what
        self._constructor = yaml.SafeLoader("")

    @classmethod
    def read(cls, path: str, what: str = "config") -> "YamlDoc":
        """The file's text, refused if unreadable, too large or not UTF-8."""
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {what}: {exc.strerror or exc}", path) from None
        except ValueError as exc:  # a path YAML gave us with a NUL in it
            raise ConfigError(f"cannot read {what}: {exc}", path) from None
        if len(raw) > MAX_BYTES:
            raise ConfigError(f"the {what} is larger than {MAX_BYTES:,} bytes (1 MiB), the "
                              f"most a {what} may be; keep long lists of values in a data "
                              f"file", path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise ConfigError(f"the {what} is not UTF-8 text: byte 0x{raw[exc.start]:02x} "
                              f"cannot start or continue a character", path, line) from None
        return cls(text, path, what)

    def fail(self, message: str, node: Any = None, offset: int | None = None,
             key: str | None = None) -> ConfigError:
        """The error at `node`; with `offset`, at that character of the node's text (of
        its value under `key`, for a mapping), named as line:column where that can be
        worked out."""
        at = self.position(node, offset, key) if node is not None and offset is not None \
            else None
        if at is not None:
            return ConfigError(message, self.path, *at)
        return ConfigError(message, self.path, node.start_mark.line + 1 if node else None)

    def position(self, node: Any, offset: int, key: str | None = None
                 ) -> tuple[int, int] | None:
        """(line, column), 1-based, of character `offset` of a scalar's value as written
        in the file: a one-line plain or quoted scalar without escapes, or a literal
        block (`|`); None for anything else (a folded or escaped one)."""
        if key is not None and isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value
                         if isinstance(k, yaml.ScalarNode) and k.value == key), None)
        if not isinstance(node, yaml.ScalarNode):
            return None
        start, raw = node.start_mark, self.text[node.start_mark.index:node.end_mark.index]
        if node.style in (None, "", "'", '"'):
            quoted = node.style in ("'", '"')
            body = raw[1:-1] if quoted else raw
            if "\n" in body or body != node.value or offset > len(body):
                return None
            return start.line + 1, start.column + quoted + offset + 1
        if node.style != "|":
            return None
        rows = raw.split("\n")[1:]  # the block's lines, after its `|` line
        indent = min((len(r) - len(r.lstrip(" ")) for r in rows if r.strip()), default=0)
        left = offset
        for i, text in enumerate(node.value.split("\n")):
            if left <= len(text):
                return start.line + 2 + i, indent + left + 1
            left -= len(text) + 1
        return None

    # -- the tree --------------------------------------------------------------------
    def root(self) -> yaml.Node | None:
        """The document's node tree, checked for depth, size, surrogates and duplicate
        keys, with merge keys resolved. None for an empty document."""
        if len(self.text) > MAX_BYTES:
            raise ConfigError(f"the {self.what} is larger than {MAX_BYTES:,} bytes (1 MiB), "
                              f"the most a {self.what} may be", self.path)
        loader = None
        try:
            loader = _Composer(self.text)  # its reader checks the characters here
            node = loader.get_single_node()
        except _TooDeep as exc:
            raise ConfigError(f"YAML nested more than {MAX_DEPTH} levels deep",
                              self.path, exc.mark.line + 1) from None
        except yaml.reader.ReaderError as exc:
            what = (f"character #x{exc.character:04x}" if isinstance(exc.character, int)
                    else f"byte {exc.character!r}")
            raise ConfigError(f"YAML cannot hold the {what}: control characters (NUL, "
                              f"escape, ...) are not allowed in YAML text", self.path,
                              _line_of(self.text, exc.position)) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise ConfigError(f"YAML syntax error: {exc.problem or exc.context}", self.path,
                              mark.line + 1 if mark else None) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"YAML error: {exc}", self.path) from None
        finally:
            if loader is not None:
                loader.dispose()
        if node is not None:
            self._check(node)
        return node

    def _check(self, root: yaml.Node) -> None:
        """Count values with aliases expanded (without expanding them), refuse lone
        surrogates and duplicate keys, then resolve merge keys."""
        size: dict[int, int] = {}
        mappings: list[yaml.MappingNode] = []
        todo: list[tuple[yaml.Node, bool]] = [(root, False)]
        while todo:  # post-order, iterative: aliases make this a graph, not a tree
            node, children_done = todo.pop()
            if id(node) in size:
                continue
            kids = self._children(node)
            if not children_done:
                todo.append((node, True))
                todo += [(k, False) for k in kids if id(k) not in size]
                continue
            total = 1 + sum(size[id(k)] for k in kids)
            if total > MAX_NODES:
                raise self.fail(f"YAML too large: more than {MAX_NODES:,} values once its "
                                f"aliases are expanded", node)
            size[id(node)] = total
            if isinstance(node, yaml.ScalarNode):
                m = _SURROGATE.search(node.value)
                if m:
                    raise self.fail(f"the text {node.value[:40]!r} is not valid Unicode: it "
                                    f"holds a lone surrogate (\\u{ord(m.group()):04x})", node)
            elif isinstance(node, yaml.MappingNode):
                mappings.append(node)
                self._no_duplicates(node)
        for node in mappings:
            try:
                self._constructor.flatten_mapping(node)
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                raise ConfigError(f"YAML merge key: {exc.problem}", self.path,
                                  mark.line + 1 if mark else None) from None

    @staticmethod
    def _children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    def _no_duplicates(self, node: yaml.MappingNode) -> None:
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
                continue
            first = seen.setdefault((key.tag, key.value), key)
            if first is not key:
                raise self.fail(f"key {key.value!r} is given twice in one mapping (first at "
                                f"line {first.start_mark.line + 1}); YAML would silently "
                                f"keep only the last", key)

    # -- values ----------------------------------------------------------------------
    def value(self, node: yaml.Node) -> Any:
        """The Python value of a node (a fresh copy each time)."""
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark or node.start_mark
            raise ConfigError(f"YAML value: {exc.problem or exc.context}", self.path,
                              mark.line + 1) from None
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            # PyYAML's own constructors let these out for `!!int 0xZZ`, `!!timestamp x`
            tag = node.tag.rsplit(":", 1)[-1]
            raise self.fail(f"YAML value {node.value!r} cannot be read as !!{tag}"
                            if isinstance(node, yaml.ScalarNode) else
                            f"YAML value cannot be read as !!{tag}: "
                            f"{exc.__class__.__name__}", node) from None
        finally:
            self._constructor.constructed_objects.clear()
            self._constructor.recursive_objects.clear()

    def key(self, node: yaml.Node, what: str = "a key") -> str:
        """A mapping key that must be a name: a non-empty string."""
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value:
            shown = (f"{type(value).__name__} {value!r}" if isinstance(node, yaml.ScalarNode)
                     else "a list" if isinstance(node, yaml.SequenceNode) else "a mapping")
            raise self.fail(f"expected {what} (a name), got {shown}", node)
        return value
