"""Loading the configuration: a TOML file (or text, or an already parsed table) into a validated Config."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vatel_edge.config.feedback import check_feedback
from vatel_edge.config.schema import SECTIONS, Config
from vatel_edge.config.tools import ToolSpec, parse_tools
from vatel_edge.config.validate import Problems, check_cross, parse_section_partial, unknown_top_level
from vatel_edge.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/vatel-edge/config.toml"


def config_from_dict(raw: Mapping[str, Any], path: str | None = None) -> Config:
    """Validate a parsed TOML document into a Config; ConfigError lists every problem."""
    problems = Problems()
    sections: dict[str, Any] = {}
    failed: set[str] = set()
    for key, value in raw.items():
        if key not in SECTIONS and key != "tools":
            problems.extend([unknown_top_level(str(key), value)])
    for name, cls in SECTIONS.items():
        table = _section_table(raw, name)
        if table is None and name != "vatel":
            continue
        section, section_failed = parse_section_partial(name, cls, {} if table is None else table, problems)
        if section is not None:
            sections[name.replace(".", "_")] = section
        failed |= section_failed
    tools: Mapping[str, ToolSpec] = {}
    try:
        tools = parse_tools(raw.get("tools", {}))
    except ConfigError as exc:
        problems.extend(exc.problems)
    check_cross(sections, failed, problems)
    problems.extend(check_feedback(sections, tools))
    problems.raise_if_any()
    return Config(**sections, tools=tools, path=path)


def _section_table(raw: Mapping[str, Any], name: str) -> Any:
    """The TOML table of section `name` ("feedback.leds" is [feedback] leds), without its nested sections'
    tables; None when the file has none (or its parent is no table: that is the parent's problem)."""
    head, _, tail = name.partition(".")
    table: Any = raw.get(head)
    if tail:
        table = table.get(tail) if isinstance(table, dict) else None
    if not isinstance(table, dict):
        return table
    nested = {n.partition(".")[2] for n in SECTIONS if n.startswith(name + ".")}
    return {k: v for k, v in table.items() if k not in nested}


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    return loads_config(decode_config(p, read_config_bytes(p)), str(path))


def read_config_bytes(p: Path) -> bytes:
    """The file's bytes; ConfigError when it is missing or unreadable."""
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc.__class__.__name__}") from None


def decode_config(p: Path, data: bytes) -> str:
    """The file's text; ConfigError when it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (bad byte at offset {exc.start})") from None


_TOML_POSITION = re.compile(r"^(?P<what>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$", re.DOTALL)


def loads_config(text: str, path: str | None = None) -> Config:
    """Validate TOML text; syntax errors carry line and column."""
    where = path or "<config>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_POSITION.match(str(exc))
        if m:
            raise ConfigError(
                f"{where}: TOML syntax error at line {m['line']}, column {m['col']}: {m['what']}"
            ) from None
        raise ConfigError(f"{where}: TOML syntax error: {exc}") from None
    except ValueError as exc:  # tomllib lets int() refuse a literal of more than 4300 digits
        raise ConfigError(f"{where}: TOML value out of range: {str(exc).split(':')[0]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: TOML syntax error: arrays or tables nested too deeply") from None
    return config_from_dict(raw, path)
