"""`vatel-edge events`: the control socket's event stream, with real `vatel-edge events` processes as subscribers.

Several subscribers receive the same events in the same order; one that stops reading is dropped without the
daemon's publishing ever waiting for it; the socket's permissions are the access control, as for `status`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import config_toml
from tests.support.daemon import VATEL_EDGE, quick_end
from vatel_edge.config import load_config
from vatel_edge.control import ControlServer, event_stream
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.simulator import Simulator
from vatel_edge.errors import ControlError
from vatel_edge.events import EventHub
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(90)
AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


async def no_commands(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "error": "no commands here"}


def config_file(d: Path, socket_path: Path) -> Path:
    path = d / "config.toml"
    path.write_text(f'[vatel]\nagent_id = "{AGENT}"\n[control]\nsocket_path = "{socket_path}"\n')
    return path


def start_subscriber(cfg: Path, out: Path) -> subprocess.Popen[bytes]:
    """A real `vatel-edge events` writing its JSON lines to `out`."""
    return subprocess.Popen([VATEL_EDGE, "events", "--config", str(cfg)], stdout=out.open("wb"),
                            stderr=subprocess.PIPE)


async def wait_subscribers(hub: EventHub, n: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while hub.subscribers < n:
            await asyncio.sleep(0.05)


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.read_text().splitlines()]


async def wait_lines(out: Path, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while len(out.read_text().splitlines()) < n:
            await asyncio.sleep(0.05)
    return lines(out)


async def test_two_subscribers_get_the_same_ordered_events_and_a_stalled_one_is_dropped(sock_dir: Path) -> None:
    """Two `vatel-edge events` processes and a raw client that never reads: 6000 events later the two have every
    one of them in order, the stalled one was dropped (its connection closed), and no publish ever waited."""
    hub = EventHub()
    path = sock_dir / "control.sock"
    cfg = config_file(sock_dir, path)
    async with ControlServer(str(path), no_commands, events=hub):
        subs = [start_subscriber(cfg, sock_dir / f"out{i}.jsonl") for i in range(2)]
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "events"}\n')
            await writer.drain()
            assert json.loads(await reader.readline()) == {"ok": True, "events": True}
            await wait_subscribers(hub, 3)
            slowest = 0.0
            for n in range(6000):
                t = time.perf_counter()
                hub.publish("tick", f"tick {n}", n=n)
                slowest = max(slowest, time.perf_counter() - t)
                if n % 20 == 19:
                    await asyncio.sleep(0.002)  # the live subscribers keep up; the stalled one does not read
            assert slowest < 0.01, f"a publish took {slowest * 1000:.1f} ms"
            outs = [await wait_lines(sock_dir / f"out{i}.jsonl", 6000) for i in range(2)]
            assert outs[0] == outs[1]
            assert [e["n"] for e in outs[0]] == list(range(6000)) and outs[0][0]["kind"] == "tick"
            assert hub.subscribers == 2, "the stalled subscriber was not dropped"
            # The stalled client's connection ends: what it still finds after its backlog is the end of the stream.
            rest = b""
            async with asyncio.timeout(20):
                while chunk := await reader.read(1 << 16):
                    rest += chunk
            assert rest.count(b"\n") < 6000
            writer.close()
        finally:
            for p in subs:
                p.terminate()
                p.wait(10)


async def test_at_most_max_subscribers_and_commands_still_work(sock_dir: Path) -> None:
    """Streams do not use up the request slots; beyond max_subscribers a subscriber is told busy."""
    hub = EventHub()
    path = sock_dir / "control.sock"

    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "cmd": request["cmd"]}

    async with ControlServer(str(path), handler, events=hub, max_subscribers=2, max_connections=2):
        streams = [event_stream(str(path)) for _ in range(3)]
        first = [asyncio.ensure_future(anext(s)) for s in streams[:2]]
        await wait_subscribers(hub, 2)
        with pytest.raises(ControlError, match="busy: 2 event subscribers already"):
            await anext(streams[2])
        from vatel_edge.control import control_request

        assert (await control_request(str(path), {"cmd": "status"}))["ok"] is True
        hub.publish("state", "listening -> connecting (wake)", old="listening", new="connecting", event="wake")
        got = await asyncio.gather(*first)
        assert all(g["kind"] == "state" and g["new"] == "connecting" for g in got)
        for s in streams[:2]:
            await s.aclose()
        async with asyncio.timeout(5):
            while hub.subscribers:
                await asyncio.sleep(0.02)


async def test_socket_permissions_are_the_access_control(sock_dir: Path) -> None:
    """The stream is served on the same 0660 socket as the commands: a user outside its group is refused."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to try as another user")
    path = sock_dir / "control.sock"
    cfg = config_file(sock_dir, path)
    os.chmod(sock_dir, 0o755)
    async with ControlServer(str(path), no_commands, events=EventHub()):
        assert oct(os.stat(path).st_mode & 0o777) == "0o660"
        proc = await asyncio.create_subprocess_exec(
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", VATEL_EDGE, "events", "--config",
            str(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1 and out == b""
    assert b"permission denied" in err


async def test_a_daemon_session_seen_by_two_cli_subscribers_and_mute_by_cli(
    pulse: object, tmp_path: Path, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real daemon on the test devices: both subscribers see the same session timeline (wake, state changes,
    session start and close) in order; `vatel-edge mute`/`unmute` work and show up in the stream."""
    async with Simulator(script=quick_end) as sim:
        text = config_toml(tmp_path, sim.base_url, sim.agent_id).replace(str(tmp_path / "control.sock"),
                                                                          str(sock_dir / "control.sock"))
        cfg_path = tmp_path / "config.toml"
        cfg_path.write_text(text)
        daemon = Daemon(load_config(cfg_path), api_key=sim.api_key)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
            subs = [start_subscriber(cfg_path, o) for o in outs]
            try:
                await wait_subscribers(daemon.events, 2 + 1)  # and the device feedback's own subscription
                assert daemon.trigger("test")
                await sim.next_session(timeout=20)
                await asyncio.sleep(0.2)
                await daemon.wait_state(State.LISTENING, timeout=20)
                cli = [VATEL_EDGE, "--log-level", "warning"]
                mute = await asyncio.to_thread(subprocess.run, [*cli, "mute", "--config", str(cfg_path)],
                                               capture_output=True, timeout=30)
                assert mute.returncode == 0 and mute.stdout == b"muted\n" and daemon.muted
                unmute = await asyncio.to_thread(subprocess.run, [*cli, "unmute", "--config", str(cfg_path)],
                                                 capture_output=True, timeout=30)
                assert unmute.returncode == 0 and not daemon.muted
                got = [await wait_lines(o, 1) for o in outs]
                async with asyncio.timeout(10):
                    while any(sum(e["kind"] == "mute" for e in lines(o)) < 2 for o in outs):
                        await asyncio.sleep(0.05)
                got = [lines(o) for o in outs]
            finally:
                for p in subs:
                    p.terminate()
                    p.wait(10)
    assert got[0] == got[1]
    kinds = [e["kind"] for e in got[0]]
    assert kinds[:2] == ["state", "wake"] and "session_closed" in kinds and kinds[-2:] == ["mute", "mute"]
    states = [e["new"] for e in got[0] if e["kind"] == "state"]
    assert states == ["connecting", "in_session", "ending", "listening"]
    assert [e["muted"] for e in got[0] if e["kind"] == "mute"] == [True, False]
