"""Security proof: secrets stay out of logs, status and errors; TLS cannot be switched off; tools cannot
reach GPIO lines or hosts they were not given; the key file and the control socket are private.

Process-level scans (argv of the daemon and of its tools, `vatel-edge status --json`, the tool's
environment) live in test_faults_process.py; fault-case error texts are scanned in test_faults_*.py.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import re
import ssl
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.config import reliability_config
from tests.support.daemon import VATEL_EDGE, live_daemon, wake_and_wait
from tests.support.events import Events
from tests.support.logs import all_log_text, assert_no_secrets, sim_secrets
from tests.support.pulse import PulseServer
from vatel_edge import config as config_module
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import SECTIONS, VatelConfig, config_from_dict
from vatel_edge.config import tools as tool_spec
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.simulator.script import tone
from vatel_edge.errors import ConfigError, SessionError, TokenError
from vatel_edge.gpio import FakeGpio
from vatel_edge.session import VatelSession
from vatel_edge.token import TokenClient

pytestmark = pytest.mark.timeout(90)
AGENT = "6f1c1f4e-8a43-4ff0-9d7c-6a0b1b0f7d11"


async def test_a_whole_session_at_debug_level_never_logs_key_token_or_audio(
    pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Wake, token, connect, audio both ways, a tool call, the end: no key, token or audio payload in any
    record (message, args, fields, exception), in status(), or in the daemon's events."""
    caplog.set_level(logging.DEBUG)  # every logger, websockets and httpx included
    reply = tone(400, freq=660.0)
    reply_b64 = base64.b64encode(reply[: VATEL_FORMAT.nbytes(40)]).decode()

    async def script(s: SimSession) -> None:
        await s.wait_audio(300)
        await s.send_transcript("turn the light on")
        await s.send_turn("t1", reply, text="ok", realtime=True)
        await s.tool_call("set_light", {"on": True})
        await s.end_session()

    events = Events()
    async with Simulator(script=script) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key, events=events) as daemon:
            await wake_and_wait(daemon)
            status = daemon.status()
        mic_b64 = base64.b64encode(bytes(sim.sessions[0].input_audio[: VATEL_FORMAT.nbytes(20)])).decode()
    assert len(sim.issued) >= 1 and daemon.counters.sessions == 1
    texts = [all_log_text(caplog), repr(status), *(t for _, t in events.rows)]
    assert_no_secrets(texts, sim_secrets(sim), "a DEBUG session log / status / events")
    blob = "\n".join(texts)
    assert reply_b64[:32] not in blob, "agent audio payload in the logs"
    if bytes(sim.sessions[0].input_audio[: VATEL_FORMAT.nbytes(20)]).strip(b"\0"):
        assert mic_b64[:32] not in blob, "microphone audio payload in the logs"


# ---------------------------------------------------------------------------------------------- transport


@pytest.mark.parametrize("url", ["http://example.com", "http://10.0.0.5:8080", "http://[2001:db8::1]"])
def test_plain_http_and_ws_to_non_loopback_hosts_need_allow_insecure(url: str) -> None:
    """base_url http:// (and so ws://) to a non-loopback host is a config error unless allow_insecure = true."""
    with pytest.raises(ConfigError, match="non-loopback"):
        config_from_dict({"vatel": {"agent_id": AGENT, "base_url": url}})
    cfg = config_from_dict({"vatel": {"agent_id": AGENT, "base_url": url, "allow_insecure": True}})
    assert cfg.vatel.ws_base.startswith("ws://")
    assert config_from_dict({"vatel": {"agent_id": AGENT, "base_url": "http://127.0.0.1:9"}}).vatel.ws_base \
        == "ws://127.0.0.1:9"
    assert VatelConfig(agent_id=AGENT, base_url="https://api.example").ws_base.startswith("wss://")


def test_no_config_key_can_turn_tls_verification_off() -> None:
    """No setting in any section or tool table names TLS verification, certificates or SSL."""
    suspicious = re.compile(r"verify|ssl|tls|cert|insecure_skip|ca_file|check_hostname", re.IGNORECASE)
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    names += list(tool_spec.COMMON_KEYS) + [k for keys in tool_spec.ACTION_KEYS.values() for k in keys]
    assert names, "nothing scanned"
    # [mqtt] ca_file / client_cert / client_key (named by the MQTT issue) add trust material for a private
    # broker; verification stays on (tests/mqtt: an untrusted certificate is one clear error). Nothing else.
    trust_material = {"ca_file", "client_cert", "client_key"}
    assert [n for n in names if suspicious.search(n) and n not in trust_material] == []
    # the one "insecure" switch only allows plain http to other hosts; it is documented as such
    assert "allow_insecure" in names
    assert "http" in next(f for f in dataclasses.fields(VatelConfig) if f.name == "allow_insecure").metadata["doc"]
    assert "verify" not in config_module.__doc__.lower() if config_module.__doc__ else True


@pytest.fixture
def tls_server_port(tmp_path: Path) -> AsyncIterator[int]:
    """An HTTPS/WSS-looking loopback server with a self-signed certificate (untrusted by the system store)."""

    async def gen() -> AsyncIterator[int]:
        key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True, timeout=30,
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        handshakes: list[bool] = []

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handshakes.append(True)
            try:
                await reader.read(65536)
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=ctx)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            await server.wait_closed()

    return gen()


async def test_token_client_and_websocket_verify_tls_certificates(tls_server_port: AsyncIterator[int]) -> None:
    """Against a self-signed certificate: the token request and the wss:// connect both fail (verification on)."""
    async for port in tls_server_port:
        cfg = VatelConfig(agent_id=AGENT, base_url=f"https://127.0.0.1:{port}", http_timeout_s=5.0)
        key = "sim_tls_test_key_" + "x" * 20
        async with TokenClient(cfg, key) as client:
            with pytest.raises(TokenError) as token_exc:
                await client.fetch()
        assert key not in str(token_exc.value)
        token = "header.payload.signature-secret-token"
        with pytest.raises(SessionError) as ws_exc:
            await VatelSession.connect(cfg.ws_base, token, open_timeout=5.0)
        assert "certificate" in str(ws_exc.value).lower() or "ssl" in str(ws_exc.value).lower(), ws_exc.value
        assert token not in str(ws_exc.value)
        break


async def test_http_tool_client_verifies_tls(tls_server_port: AsyncIterator[int]) -> None:
    """The HTTP tools' shared client refuses a self-signed certificate too."""
    import httpx

    from vatel_edge.tools.http import make_client

    async for port in tls_server_port:
        async with make_client() as client:
            with pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
                await client.get(f"https://127.0.0.1:{port}/")
        break


# ---------------------------------------------------------------------------------------------- tools


async def test_tool_call_cannot_reach_an_unconfigured_gpio_line(pulse: PulseServer, tmp_path: Path) -> None:
    """A tool_call naming other chips/lines in its arguments, or calling GPIO-sounding tools that do not exist,
    touches nothing but the configured line gpiochip0:17."""
    outputs: list[str] = []
    hostile = [
        ("set_light", [{"name": "on", "value": True}, {"name": "line", "value": 4},
                       {"name": "chip", "value": "gpiochip1"}]),
        ("set_light", [{"name": "on", "value": "17; line=4"}]),
        ("set_light", [{"name": "on", "value": True, "line": 4, "chip": "/dev/gpiochip1"}]),
        ("gpio", [{"name": "line", "value": 4}, {"name": "value", "value": True}]),
        ("set_light_4", [{"name": "on", "value": True}]),
    ]

    async def script(s: SimSession) -> None:
        await s.wait_audio(100)
        for name, args in hostile:
            outputs.append(await s.tool_call(name, args))
        await s.end_session()

    async with Simulator(script=script) as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key) as daemon:
            gpio = daemon.gpio
            assert isinstance(gpio, FakeGpio)
            await wake_and_wait(daemon)
            touched = {(r.chip, r.offset) for r in gpio.records}
            sets = [r for r in gpio.records if r.op == "set"]
    assert len(outputs) == len(hostile)
    assert touched == {("/dev/gpiochip0", 17)}, touched
    assert sets, "the configured line was never driven: the test would prove nothing"
    assert outputs[3].startswith("error") and outputs[4].startswith("error")


# ---------------------------------------------------------------------------------------------- files and sockets


async def test_control_socket_of_a_running_daemon_is_not_writable_by_others(pulse: PulseServer, tmp_path: Path) -> None:
    """The daemon's control socket is mode 0660 (owner and group only) while it runs, and gone after."""
    async with Simulator() as sim:
        cfg = reliability_config(tmp_path, sim.base_url, sim.agent_id)
        async with live_daemon(cfg, sim.api_key):
            st = os.stat(cfg.control.socket_path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o660
            assert st.st_mode & (stat.S_IWOTH | stat.S_IROTH | stat.S_IXOTH) == 0
            assert st.st_uid == os.getuid()
        assert not os.path.exists(cfg.control.socket_path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666])
def test_run_refuses_a_key_file_readable_by_others_without_showing_it(tmp_path: Path, mode: int) -> None:
    """`vatel-edge run` with a group/world-accessible key file exits 78 (EX_CONFIG); the key is not printed."""
    key = "vk_live_" + "S3cr3t" * 6
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    key_file.chmod(mode)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[vatel]\nagent_id = "{AGENT}"\napi_key_file = "{key_file}"\n'
                   f'[control]\nsocket_path = "{tmp_path / "c.sock"}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("ORG_API_KEY", "CREDENTIALS_DIRECTORY")}
    proc = subprocess.run(
        [VATEL_EDGE, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=30, env=env
    )
    assert proc.returncode == 78, proc.stderr
    assert "api_key_file" in proc.stderr or "permission" in proc.stderr.lower() or "mode" in proc.stderr.lower()
    assert key not in proc.stdout + proc.stderr
