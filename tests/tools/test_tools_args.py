"""Argument coercion and validation (vatel_edge.tools.args): every failure class names the argument."""

from __future__ import annotations

from typing import Any

import pytest

from vatel_edge.protocol import ToolArgument
from vatel_edge.tools.args import ArgSpec, ArgumentError, coerce_argument, render_text, validate_arguments

INT = ArgSpec("level", "integer", min=0, max=10)
NUM = ArgSpec("temp", "number", min=-10, max=40.5)
BOOL = ArgSpec("on", "boolean")
ENUM = ArgSpec("station", "enum", choices=("bbc", "npr"))
STR = ArgSpec("name", "string", pattern=r"[a-z_]+", max_length=12)


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        (INT, 5, 5),
        (INT, "7", 7),
        (INT, " 3 ", 3),
        (INT, 4.0, 4),
        (NUM, "21.5", 21.5),
        (NUM, 20, 20),
        (NUM, "-3", -3),
        (BOOL, True, True),
        (BOOL, "true", True),
        (BOOL, "False", False),
        (BOOL, "1", True),
        (BOOL, 0, False),
        (BOOL, "off", False),
        (ENUM, "npr", "npr"),
        (STR, "kitchen", "kitchen"),
    ],
)
def test_agent_values_are_coerced_to_the_declared_type(spec: ArgSpec, value: Any, expected: Any) -> None:
    """Strings such as "7" or "true" become the declared type, as agents often send strings."""
    result = coerce_argument(spec, value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        (INT, "seven", "argument level: expected an integer"),
        (INT, 2.5, "argument level: expected an integer"),
        (INT, True, "argument level: expected an integer, got a boolean"),
        (INT, 11, "argument level: 11 is above the maximum 10"),
        (INT, "-1", "argument level: -1 is below the minimum 0"),
        (NUM, "warm", "argument temp: expected a number"),
        (NUM, "nan", "argument temp: expected a finite number"),
        (NUM, [1], "argument temp: expected a number, got a list"),
        (NUM, 41, "argument temp: 41 is above the maximum 40.5"),
        (BOOL, "maybe", "argument on: expected a boolean"),
        (BOOL, 2, "argument on: expected a boolean"),
        (ENUM, "cnn", "argument station: expected one of bbc, npr"),
        (ENUM, "BBC", "argument station: expected one of bbc, npr"),
        (STR, "Kitchen!", "argument name: 'Kitchen!' does not match the pattern"),
        (STR, "kitchenkitchenkitchen", "argument name: longer than 12 characters"),
        (STR, {"a": 1}, "argument name: expected a string, got an object"),
        (ArgSpec("text"), "a\x00b", "argument text: contains a NUL character"),
    ],
)
def test_invalid_values_raise_naming_the_argument(spec: ArgSpec, value: Any, message: str) -> None:
    """Each validation failure class is an ArgumentError whose message starts with the argument name."""
    with pytest.raises(ArgumentError) as info:
        coerce_argument(spec, value)
    assert str(info.value).startswith(message)


def test_pattern_must_match_the_whole_value() -> None:
    """`pattern` is a full match: a matching prefix is not enough."""
    with pytest.raises(ArgumentError):
        coerce_argument(ArgSpec("id", pattern=r"[0-9]+"), "12; rm -rf /")


def test_missing_required_argument_is_an_error() -> None:
    """A required argument that is absent (or null) is reported by name."""
    declared = {"on": BOOL}
    with pytest.raises(ArgumentError, match="missing required argument on"):
        validate_arguments(declared, ())
    with pytest.raises(ArgumentError, match="missing required argument on"):
        validate_arguments(declared, (ToolArgument("on", None),))


def test_optional_arguments_take_defaults_and_undeclared_ones_are_ignored() -> None:
    """Defaults fill absent optional arguments; unknown names are dropped, not passed on."""
    declared = {
        "station": ENUM,
        "level": ArgSpec("level", "integer", required=False, default=5),
        "note": ArgSpec("note", required=False),
    }
    values = validate_arguments(
        declared, (ToolArgument("station", "bbc", data_type="string"), ToolArgument("evil", "x"))
    )
    assert values == {"station": "bbc", "level": 5}


def test_later_duplicate_argument_wins() -> None:
    """A repeated name takes its last value, as ToolCall.argument_map does."""
    values = validate_arguments({"level": INT}, (ToolArgument("level", "1"), ToolArgument("level", "9")))
    assert values == {"level": 9}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (2.0, "2"),
        (0.1, "0.1"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "0.00000015"),
        (-2.5, "-2.5"),
        ("x y", "x y"),
    ],
)
def test_values_render_as_plain_text(value: Any, text: str) -> None:
    """Booleans render as true/false and numbers in plain decimal without an exponent."""
    assert render_text(value) == text
