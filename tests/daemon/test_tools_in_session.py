"""Tool calls end to end through a session: the simulator sends tool_call, the daemon runs a real process,
a real HTTP request or the fake GPIO, and the output comes back with the same toolCallId."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import daemon_config
from tests.support.pulse import PulseServer
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.gpio import FakeGpio
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(60)

ECHO_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
SLOW = "import time; time.sleep(30)"


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append({"path": self.path, "json": json.loads(body)})
            reply = b'{"result": "scene on"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


async def test_each_action_type_answers_with_the_same_tool_call_id(
    pulse: PulseServer, tmp_path: Path, http_server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = http_server
    outputs: dict[str, str] = {}
    injection = "; rm -rf / $(id) `x` \"q\" 'q'\nline2 ../../etc/passwd ünï"

    async def script(s: SimSession) -> None:
        outputs["gpio"] = await s.tool_call("set_light", {"on": True})
        outputs["shell"] = await s.tool_call("echo_args", {"text": injection})
        outputs["http"] = await s.tool_call("scene", {"name": "movie night"})
        outputs["bad"] = await s.tool_call("echo_args", {})
        slow = asyncio.create_task(s.tool_call("slow", {}, timeout=10))
        await asyncio.sleep(0.5)
        await s.speech_started()
        await s.interrupt()
        outputs["slow"] = await slow
        outputs["end"] = await s.tool_call("bye", {})
        await s.wait_closed(timeout=10)

    tools = {
        "set_light": {"action": "gpio", "chip": "gpiochip0", "line": 17, "value": "{on}"},
        "echo_args": {
            "action": "shell",
            "argv": [sys.executable, "-c", ECHO_ARGV, "--text={text}"],
            "args": {"text": {"type": "string"}},
        },
        "scene": {
            "action": "http",
            "method": "POST",
            "url": f"{url}/api/scene/{{name}}",
            "json": {"entity_id": "scene.{name}"},
            "args": {"name": {"type": "string"}},
        },
        "slow": {"action": "shell", "argv": [sys.executable, "-c", SLOW], "timeout_s": 20,
                 "cancel_on_interruption": True},
        "bye": {"action": "builtin", "name": "end_session"},
    }
    async with Simulator(script=script) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual"}, tools=tools)
        daemon = Daemon(cfg, api_key=sim.api_key)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert daemon.trigger("test")
            session = await sim.next_session(timeout=10)
            await session.wait_closed(timeout=30)
            await daemon.wait_state(State.LISTENING, timeout=10)
            gpio = daemon.gpio
            assert isinstance(gpio, FakeGpio)
            assert gpio.is_active("gpiochip0", 17)
    assert outputs["gpio"] == "ok"
    assert json.loads(outputs["shell"]) == [f"--text={injection}"]  # literal, one argv element
    assert outputs["http"].startswith("200") and "scene on" in outputs["http"]
    assert seen == [{"path": "/api/scene/movie%20night", "json": {"entity_id": "scene.movie night"}}]
    assert outputs["bad"].startswith("error:") and "text" in outputs["bad"]
    assert outputs["slow"].startswith("error: cancelled")
    assert outputs["end"].startswith("ok")
    # Every call answered exactly once, under its own id.
    assert len(session.tool_outputs) == 6
    assert sim.client_errors == []
