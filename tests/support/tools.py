"""Tool-test helpers: configs from TOML text, a recording ToolContext, scripts, process checks."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vatel_edge.config.tools import ToolSpec, parse_tools
from vatel_edge.protocol import ToolArgument, ToolCall


def tools_from_toml(text: str) -> dict[str, ToolSpec]:
    """Parse a TOML snippet of [tools.*] tables."""
    raw = tomllib.loads(textwrap.dedent(text))
    return parse_tools(raw.get("tools", {}))


def toml_str(value: str | Path) -> str:
    """A TOML basic string literal."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_call(tool: str, call_id: str = "call-1", /, **values: Any) -> ToolCall:
    """A ToolCall as protocol.py decodes it."""
    args = tuple(ToolArgument(name=k, value=v) for k, v in values.items())
    return ToolCall(tool_call_id=call_id, tool_name=tool, arguments=args)


class RecordingContext:
    """A ToolContext that records what the built-ins asked for."""

    def __init__(self, session_id: str | None = "sess-1", status: Mapping[str, Any] | None = None) -> None:
        self.session_id = session_id
        self.volumes: list[int] = []
        self.ended = 0
        self.status = dict(status or {"state": "in_session"})

    def set_volume(self, level: int) -> None:
        self.volumes.append(level)

    def end_session(self) -> None:
        self.ended += 1

    def device_status(self) -> dict[str, Any]:
        return dict(self.status)


def write_script(path: Path, body: str) -> Path:
    """An executable /bin/sh script (only tests use a shell)."""
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def write_py_script(path: Path, body: str) -> Path:
    """An executable Python script run by this interpreter."""
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def alive(pid: int) -> bool:
    """True while `pid` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


async def wait_for_file(path: Path, *, lines: int = 1, timeout: float = 20.0) -> list[str]:
    """Wait until `path` holds at least `lines` complete lines; return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            got = [ln for ln in text.split("\n")[:-1] if ln]
            if len(got) >= lines:
                return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} did not get {lines} line(s) within {timeout} s")


async def wait_dead(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait for every pid to be gone; the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        await asyncio.sleep(0.05)
    return [p for p in pids if alive(p)]
