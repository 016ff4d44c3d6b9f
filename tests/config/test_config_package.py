"""The config package stands alone: it loads neither the protocol codec nor the devkit, and its modules import
in any order (the [tools] tables live in it, so there is no config <-> tools cycle)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _loaded_after(module: str) -> list[str]:
    """The vatel_edge modules in sys.modules after importing `module` first in a fresh interpreter."""
    listing = "sorted(m for m in sys.modules if m.startswith('vatel_edge'))"
    probe = f"import {module}, json, sys\nprint(json.dumps({listing}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "first", ["vatel_edge.config", "vatel_edge.config.tools", "vatel_edge.config.validate", "vatel_edge.config.check"]
)
def test_config_imports_first_in_any_order_without_protocol_or_devkit(first: str) -> None:
    """Whichever config module is imported first, the import works and loads no protocol codec and no devkit."""
    loaded = _loaded_after(first)
    assert "vatel_edge.config.load" in loaded
    assert "vatel_edge.protocol" not in loaded
    assert [m for m in loaded if m.startswith("vatel_edge.devkit")] == []


def test_tool_runtime_imports_before_config() -> None:
    """The tool registry imported first (it reaches the config through the [tools] specs) imports cleanly."""
    assert "vatel_edge.config.tools" in _loaded_after("vatel_edge.tools.registry")
