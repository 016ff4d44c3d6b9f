"""The README's configuration reference, generated from the config dataclasses' field metadata.

One source of truth: a key's type, default, allowed values and doc live in vatel_edge/config.py.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from vatel_edge.config import SECTIONS, describe_value

_TYPE_WORDS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`"


def _type_text(annotation: Any) -> str:
    """`integer`, `string (optional)`... for an annotation such as `str | None`."""
    tp, optional = annotation, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        tp, optional = args[0], True
    if typing.get_origin(tp) is tuple:
        return "array of strings"
    word = _TYPE_WORDS.get(tp, getattr(tp, "__name__", str(tp)))
    return f"{word} (optional)" if optional else word


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.metadata.get("required"):
        return "required"
    if f.default is None:
        return "unset"
    if isinstance(f.default, tuple):
        return _code("[" + ", ".join(describe_value(v) for v in f.default) + "]")
    return _code(describe_value(f.default))


def _allowed_text(meta: typing.Mapping[str, Any]) -> str:
    parts = []
    choices = meta.get("choices")
    if choices is not None:
        parts.append(", ".join(_code(describe_value(c)) for c in choices))
    if meta.get("min") is not None and meta.get("max") is not None:
        parts.append(f"{meta['min']} .. {meta['max']}")
    if meta.get("uuid"):
        parts.append("UUID")
    if meta.get("pattern_doc"):
        parts.append(str(meta["pattern_doc"]))
    return "; ".join(parts)


def config_reference_markdown() -> str:
    """A Markdown table of every config key: section, key, type, default, allowed values, description."""
    lines = [
        "| section | key | type | default | allowed | description |",
        "|---|---|---|---|---|---|",
    ]
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            cells = [
                _code(f"[{name}]"),
                _code(f.name),
                _type_text(hints[f.name]),
                _default_text(f),
                _allowed_text(f.metadata),
                str(f.metadata.get("doc", "")),
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    lines.append(
        "Client-side tools are configured as `[tools.NAME]` tables (for example `action = \"gpio\"`); "
        "see the tools section."
    )
    return "\n".join(lines) + "\n"
