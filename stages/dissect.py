"""dissect: split text into fields at literal delimiters (no regular expressions to
write), the fast path for fixed formats. It runs on grok's machinery: the pattern becomes
one anchored RE2 expression, matched a column at a time."""
from __future__ import annotations

import re
from typing import Any

from pipeline import Option

from .failures import ON_FAILURE
from .grok import Compiled, Grok, GrokError, _check_re2

_KEY = re.compile(r"%\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def compile_dissect(text: str) -> Compiled:
    """`%{a} - %{b} [%{ts}] "%{req}"` as an anchored RE2 expression: each key takes
    the shortest text up to the delimiter after it (the last key, the rest of the line).

    - `%{name}`: a field; `%{+name}`: appended to `name` after a space;
    - `%{}` or `%{?name}`: matched and skipped;
    - `%{name->}`: the delimiter after it may repeat (padding, as in `%{level->} %{msg}`).
    """
    keys = list(_KEY.finditer(text))
    if not keys:
        raise GrokError("it names no field: write %{name} where a field is")
    regex, captures, seen = ["^"], [], set()
    at, pad = 0, False
    for k, m in enumerate(keys):
        literal = text[at:m.start()]
        if k and not literal:
            raise GrokError(f"`{keys[k - 1].group(0)}{m.group(0)}`: two keys need a delimiter "
                            f"between them")
        regex.append(_literal(literal, pad))
        key = m.group(1)
        pad = key.endswith("->")
        key = key[:-2] if pad else key
        last = k == len(keys) - 1
        body = ".*" if last else ".*?"
        if key == "" or key.startswith("?"):
            if key and not _NAME.fullmatch(key[1:]):
                raise GrokError(f"`{m.group(0)}`: a skipped key is %{{}} or %{{?name}}")
            regex.append(f"(?:{body})")
        else:
            append = key.startswith("+")
            name = key[1:] if append else key
            if not _NAME.fullmatch(name):
                raise GrokError(f"`{m.group(0)}`: a key is %{{name}}, %{{+name}}, %{{?name}}, "
                                f"%{{}} or %{{name->}} (name: letters, digits and _)")
            if name in seen and not append:
                raise GrokError(f"field {name!r} is named twice; %{{+{name}}} appends to it")
            seen.add(name)
            group = f"g{len(captures)}"
            captures.append((group, name, "append" if append else None))
            regex.append(f"(?P<{group}>{body})")
        at = m.end()
    regex.append(_literal(text[at:], pad) + "$")
    if not captures:
        raise GrokError("it captures no field: every key is skipped")
    out = "".join(regex)
    _check_re2(out)
    return Compiled(text, out, captures)


def _literal(text: str, repeat: bool) -> str:
    if not text:
        return ""
    escaped = re.escape(text)
    return f"(?:{escaped})+" if repeat else escaped


class Dissect(Grok):
    """Split text into fields at literal delimiters: no regular expressions.

        - dissect:
            pattern: '%{clientip} %{ident} %{auth} [%{timestamp}] "%{request}" %{status} %{size}'

    Each key takes the text up to the delimiter written after it (the shortest that
    lets the rest of the line match), the last key the rest of the line; the line must
    match from start to end. `%{+name}` appends to `name` after a space (`%{ts} %{+ts}`
    makes "Oct 10" and "13:55:36" one "Oct 10 13:55:36"), `%{}` or `%{?name}` skips a
    part, and `%{name->}` lets the delimiter after it repeat (padded columns). Fields
    are strings; an empty one is no field. Like grok: `field` (default: the raw lines),
    `on_failure` (a line that does not match fails with `no pattern matched`), a column
    at a time, and a bad pattern is a config error with its line.
    """

    name = "dissect"
    options = (
        Option("pattern", str, doc="the layout: literal text with %{name} keys"),
        Option("field", str, None, "the field of object records to split (default: the "
                                   "raw lines of file-input)"),
        ON_FAILURE,
    )

    @classmethod
    def compile(cls, options: dict[str, Any]) -> list[Compiled]:
        text = options.get("pattern")
        try:
            return [compile_dissect(text)]  # type: ignore[arg-type]
        except GrokError as exc:
            raise GrokError(f"pattern {text!r}: {exc}") from None

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        if not options.get("pattern"):
            return "stage 'dissect': `pattern` must be a non-empty layout, as in '%{a} %{b}'"
        return cls._compiles(options)
