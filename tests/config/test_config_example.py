"""config/vatel-edge.toml stays in step with the dataclasses; the README reference is generated from them."""

from __future__ import annotations

import dataclasses
import io
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from vatel_edge.cli import check_config_command
from vatel_edge.config import SECTIONS, load_config, loads_config
from vatel_edge.devkit.config_doc import config_reference_markdown

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "vatel-edge.toml"
PLACEHOLDER_AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
_HEADER = re.compile(r"^(#\s*)?\[([A-Za-z0-9_.]+)\]\s*$")
_KEY = re.compile(r"^(#\s*)?([A-Za-z0-9_]+)\s*=")


def example_lines() -> list[str]:
    return EXAMPLE.read_text(encoding="utf-8").splitlines()


def keys_by_section() -> dict[str, dict[str, tuple[bool, int]]]:
    """section -> key -> (commented out?, line index), from the example file's text."""
    found: dict[str, dict[str, tuple[bool, int]]] = {}
    section = ""
    for i, line in enumerate(example_lines()):
        header = _HEADER.match(line)
        if header:
            section = header.group(2)
            continue
        key = _KEY.match(line)
        if key:
            found.setdefault(section, {})[key.group(2)] = (key.group(1) is not None, i)
    return found


def test_example_loads_and_validates() -> None:
    """The shipped example is a valid config with the placeholder agent."""
    cfg = load_config(EXAMPLE)
    assert cfg.vatel.agent_id == PLACEHOLDER_AGENT
    assert cfg.tools == {}


def test_example_passes_check_config_with_a_key() -> None:
    """check-config accepts the example when a key is in the environment."""
    out, err = io.StringIO(), io.StringIO()
    assert check_config_command(str(EXAMPLE), out, err, environ={"ORG_API_KEY": "k"}) == 0
    assert out.getvalue().startswith(f"OK: {EXAMPLE}\n")
    assert err.getvalue() == ""


def test_every_dataclass_key_appears_in_its_section_of_the_example() -> None:
    """Every field of every section dataclass is written in the example, and nothing else is."""
    found = keys_by_section()
    for name, cls in SECTIONS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(found.get(name, {})) == fields, name


def test_example_values_are_the_defaults() -> None:
    """Keys with a default are active and set to it (agent_id aside); keys without one are commented out."""
    cfg = load_config(EXAMPLE)
    found = keys_by_section()
    for name, cls in SECTIONS.items():
        section = cfg.section(name)
        for f in dataclasses.fields(cls):
            commented, _ = found[name][f.name]
            if f.name == "agent_id":
                assert not commented
                continue
            assert commented == (f.default is None), f"{name}.{f.name}"
            assert getattr(section, f.name) == f.default, f"{name}.{f.name}"


def test_every_example_key_has_a_comment_line_above() -> None:
    """Each key is documented by a one-line comment directly above it."""
    lines = example_lines()
    for name, keys in keys_by_section().items():
        if name not in SECTIONS:
            continue
        for key, (_, i) in keys.items():
            above = lines[i - 1]
            assert above.startswith("# ") and not _KEY.match(above), f"{name}.{key}"


def uncommented(drop_tools: bool) -> str:
    """The example with every commented-out key and header activated."""
    out = []
    for line in example_lines():
        stripped = line[2:] if line.startswith("# ") else line
        if line.startswith("# ") and (_HEADER.match(line) or _KEY.match(line)):
            out.append(stripped)
        else:
            out.append(line)
    text = "\n".join(out) + "\n"
    if drop_tools:
        text = text[: text.index("[tools.")]
    return text


def test_commented_examples_are_valid_when_enabled() -> None:
    """Uncommenting the optional keys gives a valid config (tools aside: not supported yet)."""
    cfg = loads_config(uncommented(drop_tools=True))
    assert cfg.vatel.api_key_file == "/etc/vatel-edge/org_api_key"
    assert cfg.feedback.wake_sound is not None


def test_tool_example_is_commented_out_and_well_formed() -> None:
    """The tool example is a commented-out [tools.set_light] gpio table that parses as TOML."""
    assert "[tools." not in "\n".join(line for line in example_lines() if not line.startswith("#"))
    raw: dict[str, Any] = tomllib.loads(uncommented(drop_tools=False))
    assert raw["tools"]["set_light"] == {"action": "gpio", "chip": "gpiochip0", "line": 17, "value": "{on}"}


def test_commented_tool_example_is_valid_when_enabled() -> None:
    """The tool example, uncommented, is accepted by the tools parser as one gpio tool."""
    cfg = loads_config(uncommented(drop_tools=False))
    assert list(cfg.tools) == ["set_light"]
    assert cfg.tools["set_light"].action == "gpio"


def test_example_contains_no_key_like_values() -> None:
    """The example never holds a key, only where one comes from."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert not re.search(r"^\s*#?\s*(api_key|key|token)\s*=", text, re.MULTILINE)


# --------------------------------------------------------------------------- config_doc


def reference_rows() -> list[list[str]]:
    rows = []
    for line in config_reference_markdown().splitlines():
        if line.startswith("| `["):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            rows.append([c.strip() for c in cells])
    return rows


def test_reference_has_one_row_per_field_with_its_doc() -> None:
    """Every field of every section is one six-cell row carrying its doc text, in declaration order."""
    rows = reference_rows()
    expected = [(name, f) for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    assert len(rows) == len(expected)
    for row, (name, f) in zip(rows, expected, strict=True):
        assert len(row) == 6
        assert row[0] == f"`[{name}]`"
        assert row[1] == f"`{f.name}`"
        assert row[5] == f.metadata["doc"].replace("|", "\\|")


@pytest.mark.parametrize(
    ("section", "key", "type_", "default", "allowed"),
    [
        ("vatel", "agent_id", "string", "required", "UUID"),
        ("vatel", "api_key_file", "string (optional)", "unset", "an absolute path"),
        ("vatel", "allow_insecure", "boolean", "`false`", ""),
        ("audio", "frame_ms", "integer", "`20`", "`10`, `20`, `30`, `40`"),
        ("audio", "volume", "number", "`1.0`", "0.0 .. 4.0"),
        ("wake", "mode", "string", '`"vad"`', '`"vad"`, `"wakeword"`, `"always"`, `"button"`, `"manual"`'),
        ("feedback", "wake_sound", "string (optional)", "unset", ""),
    ],
)
def test_reference_row_shows_type_default_and_allowed(
    section: str, key: str, type_: str, default: str, allowed: str
) -> None:
    """Type words, defaults as TOML, choices and ranges come out as a reader expects."""
    (row,) = [r for r in reference_rows() if r[0] == f"`[{section}]`" and r[1] == f"`{key}`"]
    assert row[2:5] == [type_, default, allowed]


def test_reference_is_a_markdown_table() -> None:
    """A header row, a separator row, then rows; nothing unescaped breaks the table."""
    lines = config_reference_markdown().splitlines()
    assert lines[0] == "| section | key | type | default | allowed | description |"
    assert lines[1] == "|---|---|---|---|---|---|"
