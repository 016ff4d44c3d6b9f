"""Tool specifications: the [tools.NAME] tables of the config, validated.

(Placeholder owned by the tools work: accepts no tools yet.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vatel_edge.errors import ConfigError


@dataclass(frozen=True)
class ToolSpec:
    """One configured tool."""

    name: str
    action: str


def parse_tools(raw: Mapping[str, Any], path: str = "tools") -> dict[str, ToolSpec]:
    """Validate the [tools] table; ConfigError names each bad key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table")
    if raw:
        raise ConfigError(f"{path}: tools are not supported yet")
    return {}
