"""The local Vatel API simulator: POST /v1/session-token and GET /v1/connection on ONE loopback port.

A small asyncio HTTP/1.1 server parses the request head itself; the token endpoint is answered here
as JSON, and a WebSocket upgrade is handed to websockets' sans-I/O ServerProtocol (full control of
frames, so faults like an abrupt close or a server that stops reading are one call). Everything the
client sends is validated and recorded; the configured key is only held in memory for comparison.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request
from websockets.server import ServerProtocol

from vatel_edge.devkit.simulator.messages import make_jwt, session_claims, validate_token_request
from vatel_edge.devkit.simulator.session import Script, SimSession
from vatel_edge.lifecycle import AsyncClosing, cancel_and_wait
from vatel_edge.session import RedactingLogger

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 << 10
MAX_BODY_BYTES = 64 << 10
#: The simulator accepts client frames up to this size (bigger ones: close 1009).
MAX_CLIENT_FRAME = 4 << 20
_HTTP_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


@dataclass
class TokenFault:
    """One answer of the token endpoint that differs from the normal one (consumed per request).

    status != 200 answers {"error": error} (or raw_body); status 200 changes the token's shape.
    """

    status: int = 200
    error: str | None = None
    raw_body: bytes | None = None  # overrides the body (non-JSON, JSON without token, ...)
    retry_after: str | None = None
    delay_s: float = 0.0  # wait this long before answering (client timeouts)
    token: str = "jwt"  # noqa: S105 - a token kind, for status 200: "jwt", "expired" (exp in the past), "opaque" (not a JWT)

    @classmethod
    def http(cls, status: int, error: str | None = None, *, retry_after: str | None = None) -> TokenFault:
        """An HTTP error answer with a JSON error body."""
        return cls(status=status, error=error or _HTTP_REASONS.get(status, "error"), retry_after=retry_after)

    @classmethod
    def non_json(cls) -> TokenFault:
        """HTTP 200 with an HTML body (a captive portal, a proxy page)."""
        return cls(raw_body=b"<html><body>Welcome to the hotel Wi-Fi</body></html>")

    @classmethod
    def without_token(cls) -> TokenFault:
        """HTTP 200 with JSON that has no token."""
        return cls(raw_body=b'{"room": "r1"}')

    @classmethod
    def expired_jwt(cls) -> TokenFault:
        """HTTP 200 with a JWT whose exp is already past."""
        return cls(token="expired")  # noqa: S106

    @classmethod
    def not_a_jwt(cls) -> TokenFault:
        """HTTP 200 with an opaque (non-JWT) token; still valid for one connection."""
        return cls(token="opaque")  # noqa: S106

    @classmethod
    def slow(cls, delay_s: float) -> TokenFault:
        """A normal answer after `delay_s`."""
        return cls(delay_s=delay_s)


@dataclass
class HandshakeFault:
    """The next WebSocket handshake is rejected with `status`, or never answered (hang)."""

    status: int | None = None
    text: str = ""
    hang: bool = False


@dataclass
class Faults:
    """Queues of faults, each entry used by one request."""

    token: collections.deque[TokenFault] = field(default_factory=collections.deque)
    handshake: collections.deque[HandshakeFault] = field(default_factory=collections.deque)

    def token_fault(self, *faults: TokenFault) -> None:
        """Queue faults for the next token requests."""
        self.token.extend(faults)

    def reject_handshake(self, status: int, text: str = "") -> None:
        """Reject the next WebSocket handshake with an HTTP status."""
        self.handshake.append(HandshakeFault(status=status, text=text or f"{status} rejected by the simulator"))

    def hang_handshake(self) -> None:
        """Never answer the next WebSocket handshake."""
        self.handshake.append(HandshakeFault(hang=True))


@dataclass(frozen=True)
class TokenRequest:
    """One request to the token endpoint, as received (Authorization redacted)."""

    t: float
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text if it was not JSON
    auth_ok: bool
    status: int


@dataclass
class IssuedToken:
    """A token this simulator issued."""

    value: str
    expires_wall: float
    used: bool = False


def check_loopback(host: str) -> None:
    """ValueError unless `host` is a loopback address (the simulator never listens elsewhere)."""
    if host == "localhost":
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"the simulator only binds loopback addresses, not {host!r}")


def _response(
    status: int, body: bytes, *, content_type: str = "application/json", extra: dict[str, str] | None = None
) -> bytes:
    reason = _HTTP_REASONS.get(status, "Status")
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    for key, value in (extra or {}).items():
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _error(status: int, text: str, extra: dict[str, str] | None = None) -> bytes:
    return _response(status, json.dumps({"error": text}).encode(), extra=extra)


class Simulator(AsyncClosing):
    """Local Vatel API on one loopback port. Async context manager.

    script: run for every session (default: the echo agent); `scripts` queues per-session scripts
    that take precedence, one per session in order.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        agent_id: str | None = None,
        token_ttl_s: float = 60.0,
        script: Script | None = None,
        strict: bool = False,
        send_session_started: bool = True,
        foreign_agents: tuple[str, ...] = (),
    ) -> None:
        check_loopback(host)
        self.host = host
        self.port = port
        self.api_key = api_key or "sim_" + secrets.token_urlsafe(24)
        self.agent_id = agent_id or str(uuid.uuid4())
        self.foreign_agents = set(foreign_agents)
        self.token_ttl_s = token_ttl_s
        self.strict = strict
        self.send_session_started = send_session_started
        if script is None:
            from vatel_edge.devkit.simulator.script import echo_agent

            script = echo_agent()
        self.script: Script = script
        self.scripts: collections.deque[Script] = collections.deque()
        self.faults = Faults()
        self.sessions: list[SimSession] = []
        self.token_requests: list[TokenRequest] = []
        self.handshakes: list[dict[str, Any]] = []  # path (token redacted), status
        self.client_errors: list[str] = []
        self.script_errors: list[str] = []
        self.issued: dict[str, IssuedToken] = {}
        self._secret = secrets.token_bytes(32)
        self._server: asyncio.Server | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._session_added = asyncio.Condition()
        self._wait_cursor = 0

    @property
    def base_url(self) -> str:
        """http://HOST:PORT (the REST base; the WebSocket base is ws://HOST:PORT)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> Simulator:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port, family=family)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulator listening on %s (agent %s)", self.base_url, self.agent_id)
        return self


    async def aclose(self) -> None:
        """Stop listening and end every connection (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await cancel_and_wait(*self._conn_tasks)
        if server is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await server.wait_closed()

    # ------------------------------------------------------------------ waiting helpers

    async def next_session(self, timeout: float = 10.0) -> SimSession:
        """The next session not yet returned by next_session() (waits for it to start)."""
        async with asyncio.timeout(timeout), self._session_added:
            while len(self.sessions) <= self._wait_cursor:
                await self._session_added.wait()
        session = self.sessions[self._wait_cursor]
        self._wait_cursor += 1
        return session

    def issue_token(self, *, ttl_s: float | None = None, kind: str = "jwt") -> str:
        """Mint a token as the endpoint would (for tests that skip the REST call)."""
        now = time.time()
        ttl = self.token_ttl_s if ttl_s is None else ttl_s
        if kind == "opaque":
            value = "opaque-" + secrets.token_urlsafe(24)
        else:
            lifetime = -60.0 if kind == "expired" else ttl
            claims = session_claims(self.agent_id, now=now, ttl_s=lifetime)
            if kind == "expired":
                claims["iat"] = int(now - 120)
            value = make_jwt(claims, self._secret)
        self.issued[value] = IssuedToken(value, now + ttl if kind != "expired" else now - 60)
        return value

    # ------------------------------------------------------------------ HTTP

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio's stream callback task must not end cancelled (it would log the CancelledError):
        # the work runs in an inner task that aclose() cancels.
        task = asyncio.create_task(self._handle(reader, writer), name="sim-connection")
        self._conn_tasks.add(task)
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        finally:
            self._conn_tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            log.debug("simulator: connection ended: %s", exc.__class__.__name__)
        finally:
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD_BYTES:
            writer.write(_error(431, "request head too large"))
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            writer.write(_error(400, "bad request line"))
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        path = urlsplit(target).path
        if path == "/v1/session-token":
            await self._token_endpoint(method, path, headers, reader, writer)
        elif path == "/v1/connection":
            await self._connection(head, method, target, reader, writer)
        else:
            writer.write(_error(404, f"no route for {method} {path}"))
            await writer.drain()

    async def _token_endpoint(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        body_bytes = b""
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY_BYTES:
            writer.write(_error(413, "body too large"))
            return
        if length:
            body_bytes = await reader.readexactly(length)
        auth = headers.get("authorization", "")
        auth_ok = hmac.compare_digest(auth.encode(), f"Bearer {self.api_key}".encode())
        recorded = {k: ("<redacted>" if k == "authorization" else v) for k, v in headers.items()}
        try:
            body: Any = json.loads(body_bytes) if body_bytes else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = body_bytes.decode("utf-8", "replace")

        status, payload, extra = self._token_answer(method, headers, body, auth_ok)
        fault = self.faults.token.popleft() if self.faults.token else None
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.status != 200:
            status = fault.status
            payload = fault.raw_body if fault.raw_body is not None else json.dumps({"error": fault.error}).encode()
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        elif status == 200:
            if fault is not None and fault.raw_body is not None:
                payload = fault.raw_body
            else:
                payload = json.dumps({"token": self.issue_token(kind=fault.token if fault else "jwt")}).encode()
        self.token_requests.append(TokenRequest(time.monotonic(), method, path, recorded, body, auth_ok, status))
        ctype = "application/json" if payload[:1] in (b"{", b"[") else "text/html"
        writer.write(_response(status, payload, content_type=ctype, extra=extra))
        await writer.drain()

    def _token_answer(
        self, method: str, headers: dict[str, str], body: Any, auth_ok: bool
    ) -> tuple[int, bytes, dict[str, str]]:
        """Status and body of a normal (fault-free) answer; 200 gets its token later."""
        if method != "POST":
            return 405, json.dumps({"error": "use POST"}).encode(), {"Allow": "POST"}
        if not auth_ok:
            return 401, json.dumps({"error": "invalid or missing API key"}).encode(), {}
        if "application/json" not in headers.get("content-type", ""):
            return 400, json.dumps({"error": "Content-Type must be application/json"}).encode(), {}
        problem = validate_token_request(body)
        if problem is not None:
            return 400, json.dumps({"error": problem}).encode(), {}
        agent = body["agent_id"].lower()
        if agent in {a.lower() for a in self.foreign_agents}:
            return 403, json.dumps({"error": "agent belongs to another organization"}).encode(), {}
        if agent != self.agent_id.lower():
            return 404, json.dumps({"error": "agent not found"}).encode(), {}
        if body.get("transport") == "webrtc":
            return 503, json.dumps({"error": "webrtc is not configured on this server"}).encode(), {}
        return 200, b"", {}

    # ------------------------------------------------------------------ WebSocket

    async def _connection(
        self, head: bytes, method: str, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        proto = ServerProtocol(max_size=MAX_CLIENT_FRAME, logger=RedactingLogger(logging.getLogger(__name__ + ".ws")))
        proto.receive_data(head)
        request = next((e for e in proto.events_received() if isinstance(e, Request)), None)
        token = parse_qs(urlsplit(target).query).get("token", [""])[0]
        record: dict[str, Any] = {"t": time.monotonic(), "token_known": token in self.issued, "status": None}
        self.handshakes.append(record)
        fault = self.faults.handshake.popleft() if self.faults.handshake else None
        if fault is not None and fault.hang:
            record["status"] = "hang"
            await reader.read()  # until the client gives up
            return
        status, text = 0, ""
        if request is None:
            status, text = 400, "bad upgrade request"
        elif fault is not None and fault.status is not None:
            status, text = fault.status, fault.text
        elif not token:
            status, text = 400, "missing token query parameter"
        else:
            issued = self.issued.get(token)
            if issued is None:
                status, text = 401, "invalid session token"
            elif issued.used:
                status, text = 401, "session token already used"
            elif issued.expires_wall <= time.time():
                status, text = 401, "session token expired"
        if status:
            response = proto.reject(status, json.dumps({"error": text}))
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
        else:
            assert request is not None
            response = proto.accept(request)
        record["status"] = response.status_code
        proto.send_response(response)
        for data in proto.data_to_send():
            if data:
                writer.write(data)
        await writer.drain()
        if response.status_code != 101:
            return
        self.issued[token].used = True
        session = SimSession(id=f"sim-{len(self.sessions) + 1}", token=token, strict=self.strict)
        session._error_sink = self.client_errors
        async with self._session_added:
            self.sessions.append(session)
            self._session_added.notify_all()
        script = self.scripts.popleft() if self.scripts else self.script
        await session.run(
            proto, reader, writer, script,
            send_session_started=self.send_session_started, script_errors=self.script_errors,
        )


__all__ = [
    "Faults",
    "HandshakeFault",
    "IssuedToken",
    "Simulator",
    "TokenFault",
    "TokenRequest",
    "check_loopback",
]
