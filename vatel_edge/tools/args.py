"""Tool-call arguments: declared argument specs, coercion of the agent's values, and rendering as text.

Agents often send every value as a string ("5", "true"), so a declared type accepts its usual string
spellings. The declared type always wins over the server's `dataType` hint. No I/O here.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from vatel_edge.errors import ToolError

log = logging.getLogger(__name__)

ARG_TYPES = ("string", "integer", "number", "boolean", "enum")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_INTEGER = re.compile(r"[+-]?\d+")
#: How much of a bad value an error message quotes (the agent reads it; keep it short).
_SHOWN_CHARS = 40


class GivenArgument(Protocol):
    """One argument as the agent sent it (protocol.ToolArgument); named here so that the config, which
    declares arguments with ArgSpec, does not depend on the protocol codec."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> Any: ...
    @property
    def data_type(self) -> str | None: ...


class ArgumentError(ToolError):
    """A tool-call argument is missing or invalid; the message names the argument."""


@dataclass(frozen=True)
class ArgSpec:
    """One declared argument of a tool ([tools.NAME.args.ARG])."""

    name: str
    type: str = "string"
    required: bool = True
    default: Any = None
    description: str = ""
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.pattern is not None:
            re.compile(self.pattern)  # fail early; config/tools.py reports it as a config error


def _show(value: object) -> str:
    """A value quoted for an error message, shortened."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "..."
    return repr(text) if isinstance(value, str) else text


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _bounds(spec: ArgSpec, value: float) -> None:
    if spec.min is not None and value < spec.min:
        raise ArgumentError(f"argument {spec.name}: {render_text(value)} is below the minimum {render_text(spec.min)}")
    if spec.max is not None and value > spec.max:
        raise ArgumentError(f"argument {spec.name}: {render_text(value)} is above the maximum {render_text(spec.max)}")


def _to_integer(spec: ArgSpec, value: object) -> int:
    if isinstance(value, bool):
        raise ArgumentError(f"argument {spec.name}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise ArgumentError(f"argument {spec.name}: expected an integer, got {_show(value)}")


def _to_number(spec: ArgSpec, value: object) -> int | float:
    number: int | float
    if isinstance(value, bool):
        raise ArgumentError(f"argument {spec.name}: expected a number, got a boolean")
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            number = int(text)
        else:
            try:
                number = float(text)
            except ValueError:
                raise ArgumentError(f"argument {spec.name}: expected a number, got {_show(value)}") from None
    else:
        raise ArgumentError(f"argument {spec.name}: expected a number, got {_kind(value)}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ArgumentError(f"argument {spec.name}: expected a finite number, got {_show(value)}")
    return number


def _to_boolean(spec: ArgSpec, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ArgumentError(f"argument {spec.name}: expected a boolean (true/false), got {_show(value)}")


def _to_string(spec: ArgSpec, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return render_text(value)
    raise ArgumentError(f"argument {spec.name}: expected a string, got {_kind(value)}")


def coerce_argument(spec: ArgSpec, value: object) -> Any:
    """The agent's value for `spec`, coerced to the declared type and checked; ArgumentError if not valid."""
    result: Any
    if spec.type == "integer":
        result = _to_integer(spec, value)
        _bounds(spec, result)
    elif spec.type == "number":
        result = _to_number(spec, value)
        _bounds(spec, result)
    elif spec.type == "boolean":
        result = _to_boolean(spec, value)
    elif spec.type == "enum":
        choices = spec.choices or ()
        text = _to_string(spec, value)
        if text not in choices:
            shown = ", ".join(choices)
            raise ArgumentError(f"argument {spec.name}: expected one of {shown}; got {_show(text)}")
        result = text
    else:
        result = _to_string(spec, value)
        if spec.max_length is not None and len(result) > spec.max_length:
            raise ArgumentError(
                f"argument {spec.name}: longer than {spec.max_length} characters ({len(result)})"
            )
        if spec.pattern is not None and not re.fullmatch(spec.pattern, result):
            raise ArgumentError(f"argument {spec.name}: {_show(result)} does not match the pattern {spec.pattern}")
    if isinstance(result, str) and "\x00" in result:
        raise ArgumentError(f"argument {spec.name}: contains a NUL character")
    return result


def validate_arguments(declared: Mapping[str, ArgSpec], arguments: Sequence[GivenArgument]) -> dict[str, Any]:
    """The agent's argument list as a validated name -> value map (declared arguments only).

    A later duplicate name wins (as in ToolCall.argument_map). Missing optional arguments take their
    default, or are left out when they have none. Undeclared arguments are ignored (logged at debug).
    """
    given: dict[str, GivenArgument] = {a.name: a for a in arguments}
    for name in given:
        if name not in declared:
            log.debug("ignoring undeclared argument %r", name)
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        arg = given.get(name)
        if arg is None or arg.value is None:
            if spec.required:
                raise ArgumentError(f"missing required argument {name}")
            if spec.default is not None:
                values[name] = spec.default
            continue
        if arg.data_type and log.isEnabledFor(logging.DEBUG):
            log.debug("argument %s: dataType %r, declared %s", name, arg.data_type, spec.type)
        values[name] = coerce_argument(spec, arg.value)
    return values


def render_text(value: object) -> str:
    """A validated value as text: booleans true/false, numbers in plain decimal (no exponent)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)
