"""HTTP actions end to end through the registry, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.tools import RecordingContext, make_call, tools_from_toml
from vatel_edge.gpio import FakeGpio
from vatel_edge.tools.registry import ToolRegistry

pytestmark = pytest.mark.timeout(60)

TOKEN = "Bearer very-secret-token-123"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Server:
    """A small HTTP server: records every request, answers by path."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(Seen(self.command, self.path, dict(self.headers.items()), body))
                if self.path.startswith("/fail"):
                    self._send(500, b"internal: the scene engine exploded\n")
                elif self.path.startswith("/big"):
                    self._send(200, b"z" * 100_000)
                elif self.path.startswith("/slow"):
                    time.sleep(5)
                    self._send(200, b"late")
                elif self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", "http://example.invalid/steal")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path.startswith("/empty"):
                    self._send(204, b"")
                else:
                    self._send(200, json.dumps({"result": "ok", "path": self.path}).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def registry_for(toml: str, env: dict[str, str]) -> ToolRegistry:
    return ToolRegistry(tools_from_toml(toml), FakeGpio(), max_concurrency=4, environ=env)


async def test_post_sends_method_url_json_and_env_headers(
    server: Server, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """The Home Assistant shape: POST, JSON body with the argument filled in, Authorization from the env."""
    toml = f"""
    [tools.scene]
    action = "http"
    method = "POST"
    url = "{server.base}/api/services/scene/turn_on"
    json = {{ entity_id = "scene.{{name}}" }}
    headers = {{ X-Source = "vatel-edge" }}
    headers_env = {{ Authorization = "HA_TOKEN_HEADER" }}
    timeout_s = 5
    args.name = {{ pattern = "[a-z_]+" }}
    """
    async with registry_for(toml, {**clean_env, "HA_TOKEN_HEADER": TOKEN}) as reg:
        out = await reg.call(make_call("scene", name="movie_night"), ctx)
    assert out == '200: {"result": "ok", "path": "/api/services/scene/turn_on"}'
    (seen,) = server.requests
    assert seen.method == "POST"
    assert seen.path == "/api/services/scene/turn_on"
    assert seen.headers["Authorization"] == TOKEN
    assert seen.headers["X-Source"] == "vatel-edge"
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == {"entity_id": "scene.movie_night"}


async def test_whole_placeholders_keep_their_json_type(
    server: Server, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """"{level}" alone becomes a JSON number, "{on}" a boolean; embedded placeholders become text."""
    toml = f"""
    [tools.light]
    action = "http"
    method = "PUT"
    url = "{server.base}/light"
    json.brightness = "{{level}}"
    json.on = "{{on}}"
    json.label = "level {{level}}"
    json.nested = ["{{on}}", {{ t = "{{temp}}" }}]
    args.level = {{ type = "integer", min = 0, max = 100 }}
    args.on = {{ type = "boolean" }}
    args.temp = {{ type = "number" }}
    """
    async with registry_for(toml, clean_env) as reg:
        out = await reg.call(make_call("light", level="40", on="true", temp="21.5"), ctx)
    assert out.startswith("200: ")
    assert json.loads(server.requests[0].body) == {
        "brightness": 40,
        "on": True,
        "label": "level 40",
        "nested": [True, {"t": 21.5}],
    }


HOSTILE = ["a/b?c=d&e#f", "../../etc/passwd", "x y+z", "ü🎵", "%2F", "@evil.com:80/"]


@pytest.mark.parametrize("value", HOSTILE)
async def test_url_gets_only_url_encoded_values(
    value: str, server: Server, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """Slashes, ?, #, @, % and unicode in a value are percent-encoded: the value cannot change path or host."""
    from urllib.parse import quote, unquote

    toml = f"""
    [tools.item]
    action = "http"
    url = "{server.base}/items/{{name}}?q={{name}}"
    args.name = {{}}
    """
    async with registry_for(toml, clean_env) as reg:
        out = await reg.call(make_call("item", name=value), ctx)
    assert out.startswith("200: ")
    (seen,) = server.requests
    encoded = quote(value, safe="")
    assert seen.path == f"/items/{encoded}?q={encoded}"
    assert unquote(seen.path.split("/items/", 1)[1].split("?", 1)[0]) == value


async def test_non_2xx_answers_an_error_with_the_body(
    server: Server, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """A 500 answers "error: HTTP 500: <body>"."""
    toml = f'[tools.t]\naction = "http"\nurl = "{server.base}/fail"\n'
    async with registry_for(toml, clean_env) as reg:
        assert await reg.call(make_call("t"), ctx) == "error: HTTP 500: internal: the scene engine exploded"


async def test_redirects_are_not_followed(server: Server, clean_env: dict[str, str], ctx: RecordingContext) -> None:
    """A 302 is answered as an error; the request (and its headers) never goes to the Location."""
    toml = f'[tools.t]\naction = "http"\nurl = "{server.base}/redirect"\nheaders_env = {{ Authorization = "TOK" }}\n'
    async with registry_for(toml, {**clean_env, "TOK": TOKEN}) as reg:
        assert await reg.call(make_call("t"), ctx) == "error: HTTP 302"
    assert len(server.requests) == 1


async def test_large_body_is_capped(server: Server, clean_env: dict[str, str], ctx: RecordingContext) -> None:
    """A 100 kB response answers max_output_bytes of it, marked as truncated."""
    toml = f'[tools.t]\naction = "http"\nurl = "{server.base}/big"\nmax_output_bytes = 1000\n'
    async with registry_for(toml, clean_env) as reg:
        assert await reg.call(make_call("t"), ctx) == "200: " + "z" * 1000 + " [output truncated]"


async def test_empty_body_answers_the_status(server: Server, clean_env: dict[str, str], ctx: RecordingContext) -> None:
    """A 204 without a body answers just "204"."""
    toml = f'[tools.t]\naction = "http"\nmethod = "DELETE"\nurl = "{server.base}/empty"\n'
    async with registry_for(toml, clean_env) as reg:
        assert await reg.call(make_call("t"), ctx) == "204"
    assert server.requests[0].method == "DELETE"


async def test_slow_server_times_out(server: Server, clean_env: dict[str, str], ctx: RecordingContext) -> None:
    """A server slower than timeout_s answers a timeout error."""
    toml = f'[tools.t]\naction = "http"\nurl = "{server.base}/slow"\ntimeout_s = 1\n'
    async with registry_for(toml, clean_env) as reg:
        out = await reg.call(make_call("t"), ctx)
    assert out.startswith("error: ") and "timed out after 1 s" in out


async def test_unreachable_service_answers_an_error(clean_env: dict[str, str], ctx: RecordingContext) -> None:
    """A refused connection is an error output naming the host."""
    port = free_port()  # a port with nothing listening
    toml = f'[tools.t]\naction = "http"\nurl = "http://127.0.0.1:{port}/x"\ntimeout_s = 5\n'
    async with registry_for(toml, clean_env) as reg:
        out = await reg.call(make_call("t"), ctx)
    assert out.startswith("error: HTTP request to 127.0.0.1 failed: ")


async def test_missing_header_env_warns_at_start_and_answers_an_error(
    server: Server, clean_env: dict[str, str], ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    """An unset headers_env variable is a start-up warning and a clear error output; nothing is sent."""
    toml = f'[tools.t]\naction = "http"\nurl = "{server.base}/x"\nheaders_env = {{ Authorization = "HA_TOKEN" }}\n'
    with caplog.at_level(logging.WARNING, logger="vatel_edge.tools"):
        async with registry_for(toml, clean_env) as reg:
            assert "tools.t.headers_env.Authorization: environment variable HA_TOKEN is not set" in caplog.text
            out = await reg.call(make_call("t"), ctx)
    assert out == "error: environment variable HA_TOKEN (for header Authorization) is not set"
    assert server.requests == []


async def test_header_values_never_reach_the_log_or_the_output(
    server: Server, clean_env: dict[str, str], ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    """With debug logging, neither log lines nor answers (success or failure) contain the header value."""
    toml = (
        f'[tools.ok]\naction = "http"\nurl = "{server.base}/x"\nheaders_env = {{ Authorization = "TOK" }}\n'
        f'[tools.bad]\naction = "http"\nurl = "{server.base}/fail"\nheaders_env = {{ Authorization = "TOK" }}\n'
    )
    with caplog.at_level(logging.DEBUG):
        async with registry_for(toml, {**clean_env, "TOK": TOKEN}) as reg:
            outs = [await reg.call(make_call("ok"), ctx), await reg.call(make_call("bad"), ctx)]
    assert server.requests[0].headers["Authorization"] == TOKEN
    assert "very-secret" not in caplog.text
    assert all("very-secret" not in o for o in outs)


async def test_secret_headers_over_plain_http_off_this_machine_warn_at_start(
    clean_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """headers_env with http:// to a LAN host logs a warning at start; loopback and https do not."""
    toml = (
        '[tools.lan]\naction = "http"\nurl = "http://homeassistant.local:8123/api"\nheaders_env = { A = "T" }\n'
        '[tools.local]\naction = "http"\nurl = "http://127.0.0.1:8123/api"\nheaders_env = { A = "T" }\n'
        '[tools.tls]\naction = "http"\nurl = "https://ha.example/api"\nheaders_env = { A = "T" }\n'
    )
    with caplog.at_level(logging.WARNING, logger="vatel_edge.tools"):
        async with registry_for(toml, {**clean_env, "T": TOKEN}):
            pass
    plain = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert plain == [
        "tools.lan: headers_env values go over plain http to homeassistant.local; prefer https off this machine"
    ]
