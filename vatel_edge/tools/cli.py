"""`vatel-edge tool NAME key=value ...`: run one configured tool exactly as the agent would."""

from __future__ import annotations

import uuid
from typing import Any, TextIO

from vatel_edge.config import Config
from vatel_edge.errors import ToolError
from vatel_edge.gpio import make_gpio_backend
from vatel_edge.protocol import ToolArgument, ToolCall
from vatel_edge.tools.registry import ToolRegistry


class CliToolContext:
    """The ToolContext of a command-line run: no daemon session, built-ins only report what they would do."""

    session_id: str | None = None

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def set_volume(self, level: int) -> None:
        print(f"(set_volume {level}: no session here; the running daemon's volume is unchanged)", file=self._out)

    def end_session(self) -> None:
        print("(end_session: no session here)", file=self._out)

    def device_status(self) -> dict[str, Any]:
        return {"mode": "cli", "session": None}


def parse_assignments(assignments: list[str]) -> tuple[ToolArgument, ...]:
    """key=value words as tool-call arguments with string values (as agents often send them)."""
    out = []
    for word in assignments:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise ValueError(f"expected key=value, got {word!r}")
        out.append(ToolArgument(name=name, value=value, data_type="string"))
    return tuple(out)


async def run_tool_command(cfg: Config, name: str, assignments: list[str], out: TextIO) -> int:
    """Run tool `name` from `cfg` once; print its output. 0 when it succeeded, 1 on "error:", 2 on bad usage."""
    try:
        arguments = parse_assignments(assignments)
    except ValueError as exc:
        print(f"error: {exc}", file=out)
        return 2
    spec = cfg.tools.get(name)
    if spec is None:
        known = ", ".join(sorted(cfg.tools)) or "none configured"
        print(f"error: unknown tool {name} (tools: {known})", file=out)
        return 1
    call = ToolCall(tool_call_id=f"cli-{uuid.uuid4().hex[:12]}", tool_name=name, arguments=arguments)
    gpio = make_gpio_backend(cfg.gpio.backend)
    try:
        # Only this tool's lines are requested, so other tools' lines held elsewhere do not matter.
        async with ToolRegistry({name: spec}, gpio, max_concurrency=1) as registry:
            output = await registry.call(call, CliToolContext(out))
    except ToolError as exc:
        output = f"error: {exc}"
    finally:
        gpio.close()
    print(output, file=out)
    return 1 if output.startswith("error:") else 0
