"""Property tests of argument validation: any JSON value either fails with ArgumentError or satisfies the spec."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from vatel_edge.tools.args import ArgSpec, ArgumentError, coerce_argument, render_text

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
SPECS = st.sampled_from(
    [
        ArgSpec("s"),
        ArgSpec("p", pattern=r"[a-z_]{1,8}", max_length=8),
        ArgSpec("i", "integer", min=-5, max=100),
        ArgSpec("n", "number", min=-1.5, max=1e6),
        ArgSpec("b", "boolean"),
        ArgSpec("e", "enum", choices=("bbc", "npr", "1")),
    ]
)


def satisfies(spec: ArgSpec, value: Any) -> bool:
    if spec.type == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.type == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif spec.type == "boolean":
        return isinstance(value, bool)
    elif spec.type == "enum":
        return value in (spec.choices or ())
    else:
        if not isinstance(value, str) or "\x00" in value:
            return False
        if spec.max_length is not None and len(value) > spec.max_length:
            return False
        return spec.pattern is None or re.fullmatch(spec.pattern, value) is not None
    lo = spec.min if spec.min is not None else float("-inf")
    hi = spec.max if spec.max is not None else float("inf")
    return ok and lo <= value <= hi


@settings(max_examples=400, deadline=None)
@given(SPECS, JSON | st.from_regex(r"\s*[+-]?[0-9]{1,4}(\.[0-9]+)?\s*", fullmatch=True))
def test_coercion_fails_cleanly_or_satisfies_the_spec(spec: ArgSpec, value: Any) -> None:
    """Any JSON value is either rejected with ArgumentError naming the argument, or coerced into the spec."""
    try:
        result = coerce_argument(spec, value)
    except ArgumentError as exc:
        assert spec.name in str(exc)
        return
    assert satisfies(spec, result), (spec, value, result)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.booleans())
def test_rendered_numbers_have_no_exponent_and_round_trip(value: Any) -> None:
    """Numbers render in plain decimal that parses back to the same value."""
    text = render_text(value)
    assert "e" not in text.lower() or isinstance(value, bool)
    if not isinstance(value, bool):
        assert float(text) == float(value)
