"""Built-in actions that act on the daemon itself through the ToolContext: set_volume, end_session, device_status."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from vatel_edge.config.tools import BuiltinSpec
from vatel_edge.errors import ToolError


class ToolContext(Protocol):
    """What a tool call may ask of the running daemon (one per session)."""

    session_id: str | None

    def set_volume(self, level: int) -> None:
        """Set the speaker volume, 0..100 percent."""
        ...

    def end_session(self) -> None:
        """End the current session politely after this answer."""
        ...

    def device_status(self) -> dict[str, Any]:
        """A JSON-serializable status summary of the device."""
        ...


def run_builtin(spec: BuiltinSpec, values: Mapping[str, Any], ctx: ToolContext) -> str:
    """Perform a built-in action; its output string."""
    if spec.name == "set_volume":
        level = int(values["level"])
        ctx.set_volume(level)
        return f"ok: volume {level}"
    if spec.name == "end_session":
        ctx.end_session()
        return "ok: ending the session"
    if spec.name == "device_status":
        return json.dumps(ctx.device_status(), sort_keys=True, default=str)
    raise ToolError(f"unknown built-in action {spec.name}")
