"""The MQTT bridge over aiomqtt: publishes availability, state, events and the Home Assistant discovery
document, and turns command messages into daemon calls. Imported only when mqtt.enabled.

The audio path never waits for it: the daemon's events land in a bounded Outbox (outbox.py) and a
separate task sends them; commands are rate-limited and handled with the daemon's ordinary calls. The
broker may be down at start or vanish later: the bridge retries with jittered backoff (backoff.py),
logs once when the link is lost and once when it is back, and republishes availability, discovery and
state on every connect. The broker's last will publishes `offline` when the daemon dies.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from vatel_edge.backoff import Backoff
from vatel_edge.config.schema import MqttConfig
from vatel_edge.errors import ConfigError
from vatel_edge.lifecycle import AsyncClosing, TaskSet, cancel_and_wait
from vatel_edge.mqtt.model import (
    BurstLog,
    Command,
    DaemonApi,
    Rejected,
    TokenBucket,
    Topics,
    classify_failure,
    derive_device_id,
    discovery_payload,
    dumps,
    event_payload,
    parse_command,
    state_payload,
)
from vatel_edge.mqtt.outbox import Message, Outbox

log = logging.getLogger(__name__)

#: Broker operations (connect, subscribe, a QoS 1 publish) fail after this long; the link is then retried.
OPERATION_TIMEOUT_S = 5.0
#: The state document is recomputed at least this often (counters change without an event).
STATE_POLL_S = 5.0
#: Several events in a row make one state update (at most one per this many seconds).
STATE_COALESCE_S = 0.05
#: Incoming messages held for the command handler; beyond that the oldest is dropped (counted).
MAX_INCOMING = 256
#: Retries after a lost or refused connection; wrong credentials retry much more slowly.
NETWORK_BACKOFF_S = (1.0, 60.0)  # (base, cap)
AUTH_BACKOFF_S = (60.0, 600.0)
#: aclose(): time allowed to publish `offline` and disconnect cleanly.
CLOSE_TIMEOUT_S = 2.0


class _DropOldestQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue, bounded: when full, the oldest message goes (counted, not logged)."""

    dropped = 0

    def put_nowait(self, item: aiomqtt.Message) -> None:
        if self.maxsize > 0 and self.full():
            self.get_nowait()
            type(self).dropped += 1
        super().put_nowait(item)


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context of an mqtts:// URL: certificate and host name always verified (ConfigError when
    mqtt.ca_file or the client certificate cannot be loaded); None for mqtt://."""
    if urlsplit(cfg.url).scheme != "mqtts":
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt.ca_file: cannot load {cfg.ca_file}: {getattr(exc, 'strerror', None) or exc}") from None
    if cfg.client_cert and cfg.client_key:
        try:
            ctx.load_cert_chain(cfg.client_cert, cfg.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.client_cert: cannot load {cfg.client_cert} with mqtt.client_key: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class MqttBridge(AsyncClosing):
    """The bridge as a component: `async with MqttBridge(cfg, daemon, password=...)`; never raises once
    entered (the broker's failures are retried and logged)."""

    def __init__(
        self,
        cfg: MqttConfig,
        daemon: DaemonApi,
        *,
        password: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._daemon = daemon
        self._password = password
        self._clock = clock
        try:
            self.device_id = cfg.device_id or derive_device_id()
        except ValueError as exc:
            raise ConfigError(f"mqtt.device_id: {exc}") from None
        self.topics = Topics.of(cfg, self.device_id)
        self._tls = tls_context(cfg)
        parts = urlsplit(cfg.url)
        self._host = parts.hostname or ""
        self._port = parts.port or (8883 if self._tls is not None else 1883)
        self._wake = asyncio.Event()  # something was queued
        self.outbox = Outbox(on_put=self._wake.set)
        self._state_dirty = asyncio.Event()
        self._last_state: bytes | None = None
        self._volume = 100
        self._limiter = TokenBucket(cfg.max_commands_per_s, 2 * cfg.max_commands_per_s, clock)
        self._reject_log = BurstLog(clock)
        self._limit_log = BurstLog(clock)
        self._tasks = TaskSet()
        self._client: aiomqtt.Client | None = None
        self._link: str | None = None  # None before the first attempt, "up", or the failure kind
        self._closed = False
        self.stats = {"connects": 0, "published": 0, "commands": 0, "commands_rejected": 0,
                      "commands_rate_limited": 0}

    @property
    def connected(self) -> bool:
        """Whether the broker link is up now."""
        return self._link == "up"

    @property
    def incoming_dropped(self) -> int:
        return _DropOldestQueue.dropped

    async def __aenter__(self) -> MqttBridge:
        log.info("mqtt: bridge to %s as device %s (topics %s/...)", self._where(), self.device_id, self.topics.base)
        self._tasks.spawn(self._follow_events(), "mqtt events")
        self._tasks.spawn(self._follow_state(), "mqtt state")
        self._tasks.spawn(self._run(), "mqtt link")
        return self

    async def aclose(self) -> None:
        """Publish `offline` (retained) while the link is up, disconnect cleanly, end the tasks (idempotent)."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        if client is not None and self.connected:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await client.publish(self.topics.availability, b"offline", qos=1, retain=True)
            except (aiomqtt.MqttError, TimeoutError) as exc:
                log.info("mqtt: could not publish offline before closing (%s); the last will says it", exc)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._tasks.cancel_all()
        except TimeoutError:
            log.warning("mqtt: the broker did not acknowledge the disconnect in %.0f s", CLOSE_TIMEOUT_S)

    # ------------------------------------------------------------------ daemon -> outbox

    async def _follow_events(self) -> None:
        """Every daemon event: the event message (kinds the bridge publishes), and a state update."""
        while True:
            async with self._daemon.events.subscribe() as sub:
                async for ev in sub:
                    doc = event_payload(ev.kind, ev.text, ev.at, ev.fields, include_text=self.cfg.include_transcripts)
                    if doc is not None:
                        self.outbox.put_event(Message(self.topics.event, dumps(doc), retain=False, qos=0))
                    if ev.kind == "volume" and isinstance(ev.fields.get("level"), int):
                        self._volume = ev.fields["level"]  # whoever set it (a tool, the control socket, MQTT)
                    if ev.kind in ("state", "mute", "volume"):
                        self._queue_state()  # a state change goes out at once (latest wins in the outbox)
                    else:
                        self._state_dirty.set()  # counters: coalesced
            log.warning("mqtt: the bridge fell behind the daemon's events; subscribing again")

    async def _follow_state(self) -> None:
        """Republish the state document whenever it changed (after events, commands, and every STATE_POLL_S)."""
        while True:
            try:
                async with asyncio.timeout(STATE_POLL_S):
                    await self._state_dirty.wait()
            except TimeoutError:
                pass
            self._state_dirty.clear()
            self._queue_state()
            await asyncio.sleep(STATE_COALESCE_S)

    def _queue_state(self, *, force: bool = False) -> None:
        payload = dumps(state_payload(self._daemon.status(), self._volume))
        if force or payload != self._last_state:
            self._last_state = payload
            self.outbox.put_retained(Message(self.topics.state, payload, retain=True, qos=1))

    def _queue_all(self) -> None:
        """What a (re)connect publishes: availability, the discovery document, the state."""
        self.outbox.put_retained(Message(self.topics.availability, b"online", retain=True, qos=1))
        self._queue_discovery()
        self._queue_state(force=True)

    def _queue_discovery(self) -> None:
        if self.topics.discovery is not None:
            doc = discovery_payload(self.topics, self.device_id)
            self.outbox.put_retained(Message(self.topics.discovery, dumps(doc), retain=True, qos=1))

    # ------------------------------------------------------------------ the link

    def _where(self) -> str:
        return f"{urlsplit(self.cfg.url).scheme}://{self._host}:{self._port}"

    def _client_for(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._host,
            self._port,
            username=self.cfg.username,
            password=self._password,
            identifier=f"vatel-edge-{self.device_id}",
            logger=logging.getLogger("vatel_edge.mqtt.client"),
            queue_type=_DropOldestQueue,
            max_queued_incoming_messages=MAX_INCOMING,
            will=aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True),
            keepalive=self.cfg.keepalive_s,
            timeout=OPERATION_TIMEOUT_S,
            tls_context=self._tls,
        )

    async def _run(self) -> None:
        """Connect, serve, and on any failure retry with jittered backoff (auth failures slowly)."""
        network = Backoff(NETWORK_BACKOFF_S[0], cap=NETWORK_BACKOFF_S[1])
        auth = Backoff(AUTH_BACKOFF_S[0], cap=AUTH_BACKOFF_S[1])
        doubted = False  # one refused login after a good one was retried at the network pace
        while True:
            kind, why = "network", "closed"
            try:
                async with self._client_for() as client:
                    self._client = client
                    doubted = False
                    self._link_up()
                    network.reset()
                    auth.reset()
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                # Only a refused CONNACK carries a login verdict; other codes are paho's (4: "not connected").
                rc = exc.rc if isinstance(exc, MqttConnectError) else None
                code = getattr(rc, "value", rc)
                why = str(exc) or exc.__class__.__name__
                kind = classify_failure(code if isinstance(code, int) else None, why)
                if kind == "auth" and self.stats["connects"] and not doubted:
                    # These credentials were accepted before: a broker coming back can answer 4 before it is
                    # ready (seen restarting mosquitto). Retry at the network pace once; believe it next time.
                    kind, doubted = "network", True
            finally:
                self._client = None
            delay = (auth if kind == "auth" else network).next_delay()
            self._link_down(kind, why, delay)
            await asyncio.sleep(delay)

    def _link_up(self) -> None:
        self.stats["connects"] += 1
        if self._link is None:
            log.info("mqtt: connected to %s", self._where())
        elif self._link != "up":
            log.warning("mqtt: connection to %s is back", self._where())
        self._link = "up"

    def _link_down(self, kind: str, why: str, delay: float) -> None:
        """Log once per change of the link: lost, refused login, untrusted certificate."""
        previous, self._link = self._link, kind
        if previous == kind:
            log.debug("mqtt: still %s (%s); retrying in %.1f s", kind, why, delay)
            return
        if kind == "auth":
            source = ("mqtt.password_file" if self.cfg.password_file else
                      "the systemd credential mqtt_password" if self._password else "no password")
            log.error("mqtt: the broker %s refused the login of mqtt.username %r with %s (%s); check them; "
                      "retrying every few minutes", self._where(), self.cfg.username, source, why)
        elif kind == "tls":
            log.error("mqtt: TLS to %s failed: %s; is the broker's certificate signed by mqtt.ca_file (or a "
                      "system CA) for this host name? Retrying", self._where(), why)
        elif previous == "up":
            log.warning("mqtt: connection to %s lost (%s); reconnecting with backoff", self._where(), why)
        else:
            log.warning("mqtt: cannot connect to %s (%s); retrying with backoff", self._where(), why)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """One connection: subscribe, queue everything retained, then send and receive until it fails."""
        await client.subscribe(self.topics.commands, qos=0)
        if self.topics.ha_status is not None:
            await client.subscribe(self.topics.ha_status, qos=1)
        self._queue_all()
        sender = asyncio.ensure_future(self._send(client))
        receiver = asyncio.ensure_future(self._receive(client))
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(sender, receiver)
        for task in done:
            task.result()

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            msg = self.outbox.pop()
            if msg is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            except aiomqtt.MqttError:
                if msg.retain:  # keep the latest retained message for the next connection
                    self.outbox.put_retained(msg)
                raise
            self.stats["published"] += 1

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if topic == self.topics.ha_status:
                if payload.strip() == b"online":
                    log.info("mqtt: Home Assistant is online; republishing discovery and state")
                    self._queue_discovery()
                    self._queue_state(force=True)
                continue
            self._on_command(topic, payload)

    # ------------------------------------------------------------------ commands

    def _on_command(self, topic: str, payload: bytes) -> None:
        """One command message: rate-limited, parsed, performed with the daemon's ordinary calls."""
        if not self._limiter.take():
            self.stats["commands_rate_limited"] += 1
            if self._limit_log.hit():
                log.warning("mqtt: commands arrive faster than mqtt.max_commands_per_s = %g; dropping the excess "
                            "(%d dropped in the previous burst)", self.cfg.max_commands_per_s,
                            self._limit_log.suppressed)
            return
        cmd = parse_command(self.topics, topic, payload)
        if isinstance(cmd, Rejected):
            self.stats["commands_rejected"] += 1
            if self._reject_log.hit():
                log.warning("mqtt: ignoring a command: %s (%d more ignored in the previous burst)", cmd.why,
                            self._reject_log.suppressed)
            return
        self.stats["commands"] += 1
        self._perform(cmd)
        self._state_dirty.set()

    def _perform(self, cmd: Command) -> None:
        d = self._daemon
        if cmd.name == "trigger":
            started = d.trigger("mqtt")
            log.info("mqtt: trigger -> %s", "session starting" if started else "refused (busy or muted)")
        elif cmd.name == "end_session":
            log.info("mqtt: end_session -> %s", "ending" if d.end_session("mqtt") else "no session")
        elif cmd.name == "mute":
            ok = d.set_muted(bool(cmd.value), "software")
            log.info("mqtt: mute %s -> %s", "ON" if cmd.value else "OFF", "done" if ok else
                     "refused (the hardware mute switch wins)")
        elif cmd.name == "volume":
            assert isinstance(cmd.value, int)
            self._volume = cmd.value
            d.set_volume(cmd.value)
            log.info("mqtt: volume -> %d", cmd.value)

    def describe(self) -> dict[str, Any]:
        """The bridge's statistics (tests, debugging)."""
        return {**self.stats, "link": self._link, "events_dropped": self.outbox.events_dropped,
                "incoming_dropped": self.incoming_dropped, "device_id": self.device_id}
