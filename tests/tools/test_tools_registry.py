"""Registry boundaries (unknown tools, crashes, built-ins) and the `vatel-edge tool` command."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import RecordingContext, make_call, toml_str, tools_from_toml, write_script
from vatel_edge.config import loads_config
from vatel_edge.errors import ToolError
from vatel_edge.gpio import FakeGpio
from vatel_edge.tools.cli import run_tool_command
from vatel_edge.tools.registry import ToolRegistry

pytestmark = pytest.mark.timeout(60)

BUILTINS = """
[tools.volume]
action = "builtin"
name = "set_volume"

[tools.goodbye]
action = "builtin"
name = "end_session"

[tools.status]
action = "builtin"
name = "device_status"
"""


def registry_for(toml: str) -> ToolRegistry:
    return ToolRegistry(tools_from_toml(toml), FakeGpio(), max_concurrency=2, environ={})


async def test_unknown_tool_answers_an_error_and_warns(ctx: RecordingContext, caplog: pytest.LogCaptureFixture) -> None:
    """A tool name not in the config answers "error: unknown tool <name>" and logs a warning."""
    with caplog.at_level(logging.WARNING, logger="vatel_edge.tools"):
        async with registry_for(BUILTINS) as reg:
            assert await reg.call(make_call("open_garage"), ctx) == "error: unknown tool open_garage"
    assert "unknown tool 'open_garage'" in caplog.text


async def test_builtins_act_through_the_tool_context(ctx: RecordingContext) -> None:
    """set_volume, end_session and device_status call the ToolContext; bad levels never reach it."""
    ctx.status = {"state": "in_session", "volume": 40}
    async with registry_for(BUILTINS) as reg:
        assert await reg.call(make_call("volume", level="40"), ctx) == "ok: volume 40"
        too_loud = await reg.call(make_call("volume", level=101), ctx)
        assert too_loud == "error: argument level: 101 is above the maximum 100"
        assert await reg.call(make_call("volume"), ctx) == "error: missing required argument level"
        assert json.loads(await reg.call(make_call("status"), ctx)) == {"state": "in_session", "volume": 40}
        assert await reg.call(make_call("goodbye"), ctx) == "ok: ending the session"
    assert ctx.volumes == [40]
    assert ctx.ended == 1


class BrokenContext(RecordingContext):
    def set_volume(self, level: int) -> None:
        raise RuntimeError("mixer exploded")

    def device_status(self) -> dict[str, Any]:
        raise ToolError("status unavailable")


async def test_a_crashing_action_is_answered_and_logged_with_the_tool_name(caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception becomes "error: internal error in tool <name>"; a ToolError its message."""
    with caplog.at_level(logging.ERROR, logger="vatel_edge.tools"):
        async with registry_for(BUILTINS) as reg:
            crashed = await reg.call(make_call("volume", level=3), BrokenContext())
            assert crashed == "error: internal error in tool volume"
            assert await reg.call(make_call("status"), BrokenContext()) == "error: status unavailable"
            assert await reg.call(make_call("goodbye"), BrokenContext()) == "ok: ending the session"  # still serving
    crash = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crash) == 1 and "tool volume" in crash[0].getMessage() and crash[0].exc_info is not None


async def test_every_concurrent_call_is_answered_exactly_once(tmp_path: Path, ctx: RecordingContext) -> None:
    """Many mixed calls at once (ok, bad args, unknown, failing) each get one string answer."""
    script = write_script(tmp_path / "echo.sh", 'echo "$1"\n')
    toml = BUILTINS + f'[tools.echo]\naction = "shell"\nargv = [{toml_str(script)}, "{{x}}"]\nargs.x = {{}}\n'
    async with registry_for(toml) as reg:
        calls = [make_call("echo", f"e{i}", x=f"n{i}") for i in range(8)]
        calls += [make_call("volume", "v", level="x"), make_call("nope", "u"), make_call("status", "s")]
        outs = await asyncio.gather(*(reg.call(c, ctx) for c in calls))
    assert outs[:8] == [f"n{i}" for i in range(8)]
    assert outs[8].startswith("error: argument level")
    assert outs[9] == "error: unknown tool nope"
    assert outs[10].startswith("{")


# ----------------------------------------------------------------------------- vatel-edge tool NAME key=value

HEADER = '[vatel]\nagent_id = "123e4567-e89b-12d3-a456-426614174000"\n[gpio]\nbackend = "fake"\n'


def cli_config(tmp_path: Path) -> Any:
    script = write_script(tmp_path / "radio.sh", 'echo "station=$1 level=$2"\n[ "$1" != "fail" ] || exit 4\n')
    return loads_config(
        HEADER
        + f"""
[tools.play_station]
action = "shell"
argv = [{toml_str(script)}, "{{station}}", "{{level}}"]
args.station = {{ type = "enum", choices = ["bbc", "npr", "fail"] }}
args.level = {{ type = "integer", min = 0, max = 10, default = 5 }}

[tools.set_light]
action = "gpio"
chip = "gpiochip0"
line = 17
value = "{{on}}"

[tools.volume]
action = "builtin"
name = "set_volume"
"""
    )


async def test_cli_runs_a_tool_with_string_arguments(tmp_path: Path) -> None:
    """key=value words are coerced like the agent's strings; the output is printed and the exit code is 0."""
    out = io.StringIO()
    assert await run_tool_command(cli_config(tmp_path), "play_station", ["station=npr", "level=7"], out) == 0
    assert out.getvalue() == "station=npr level=7\n"


async def test_cli_exit_code_is_one_for_error_outputs(tmp_path: Path) -> None:
    """An "error:" output (bad argument, failing tool) gives exit code 1."""
    cfg = cli_config(tmp_path)
    out = io.StringIO()
    assert await run_tool_command(cfg, "play_station", ["station=cnn"], out) == 1
    assert out.getvalue() == "error: argument station: expected one of bbc, npr, fail; got 'cnn'\n"
    out = io.StringIO()
    assert await run_tool_command(cfg, "play_station", ["station=fail"], out) == 1
    assert out.getvalue().startswith("error: exit 4")


async def test_cli_gpio_and_builtin_tools(tmp_path: Path) -> None:
    """GPIO tools run on the configured backend (fake here); built-ins say that no session is affected."""
    cfg = cli_config(tmp_path)
    out = io.StringIO()
    assert await run_tool_command(cfg, "set_light", ["on=true"], out) == 0
    assert out.getvalue() == "ok\n"
    out = io.StringIO()
    assert await run_tool_command(cfg, "volume", ["level=30"], out) == 0
    assert out.getvalue().splitlines()[-1] == "ok: volume 30"
    assert "no session" in out.getvalue()


async def test_cli_unknown_tool_and_bad_usage(tmp_path: Path) -> None:
    """An unknown tool lists the configured ones (exit 1); a word without "=" is a usage error (exit 2)."""
    cfg = cli_config(tmp_path)
    out = io.StringIO()
    assert await run_tool_command(cfg, "radio", [], out) == 1
    assert out.getvalue() == "error: unknown tool radio (tools: play_station, set_light, volume)\n"
    out = io.StringIO()
    assert await run_tool_command(cfg, "play_station", ["station"], out) == 2
    assert out.getvalue() == "error: expected key=value, got 'station'\n"


async def test_cli_gpio_start_up_error_is_an_error_output(tmp_path: Path) -> None:
    """A GPIO line that cannot be requested is printed as an error with exit code 1 (no traceback)."""
    cfg = loads_config(HEADER + '[tools.lamp]\naction = "gpio"\nchip = "gpiochip4"\nline = 3\nvalue = true\n')
    out = io.StringIO()
    assert await run_tool_command(cfg, "lamp", [], out) == 1
    assert out.getvalue().startswith("error: tools.lamp: GPIO chip 'gpiochip4' line 3: no chip")
