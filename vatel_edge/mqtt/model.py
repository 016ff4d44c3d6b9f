"""What the bridge says and understands, without sockets: topics, the state/event/discovery payloads,
command parsing and the rate limits. The asyncio layer (bridge.py) only moves these over the broker.

Topics (`{base}` = `{base_topic}/{device_id}`): `{base}/availability` (online/offline, retained, also the
last will), `{base}/state` (retained JSON), `{base}/event` (JSON per timeline event), `{base}/cmd/...`.
Home Assistant: one retained device discovery message at `{discovery_prefix}/device/{device_id}/config`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vatel_edge import __version__
from vatel_edge.config.schema import MqttConfig
from vatel_edge.events import EventHub
from vatel_edge.state import State

MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
#: The application key of the device id (an app-specific id, as sd_id128_get_machine_app_specific makes one).
_APP_KEY = b"vatel-edge mqtt device id"

#: Timeline event kinds the bridge publishes, as the Home Assistant event entity's event types.
EVENT_TYPES = ("wake", "session_started", "session_ended", "barge_in", "tool_call", "error", "mute")
#: Daemon event kind -> MQTT event type, and the fields it carries (never transcripts or tool arguments).
_EVENT_MAP: dict[str, tuple[str, tuple[str, ...]]] = {
    "wake": ("wake", ("reason",)),
    "session_started": ("session_started", ("session_id",)),
    "session_closed": ("session_ended", ("reason", "session_id")),
    "barge_in": ("barge_in", ("source", "turn_id", "heard_ms", "tools_cancelled")),
    "tool_call_output": ("tool_call", ("name", "outcome")),
    "error": ("error", ("error", "stage")),
    "mute": ("mute", ("muted", "source")),
}
STATE_COUNTERS = ("wakes", "sessions", "sessions_failed", "interruptions", "tool_calls", "capture_overruns",
                  "capture_dropped", "token_failures", "connection_failures", "bad_frames")
COMMANDS = ("trigger", "end_session", "mute", "volume")
HA_STATUS_TOPIC_SUFFIX = "status"  # {discovery_prefix}/status: Home Assistant's birth ("online") and will


class DaemonApi(Protocol):
    """What the bridge uses of the daemon (daemon.Daemon is one)."""

    events: EventHub

    @property
    def muted(self) -> bool: ...

    def trigger(self, reason: str = ...) -> bool: ...

    def end_session(self, reason: str) -> bool: ...

    def set_muted(self, muted: bool, source: str = ...) -> bool: ...

    def set_volume(self, level: int) -> None: ...

    def status(self) -> dict[str, Any]: ...


def derive_device_id(paths: tuple[str, ...] = MACHINE_ID_PATHS) -> str:
    """A stable id from the machine id, keyed for this application (the machine id itself is not exposed)."""
    for p in paths:
        try:
            machine_id = Path(p).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if machine_id:
            return hmac.new(machine_id.encode(), _APP_KEY, hashlib.sha256).hexdigest()[:16]
    raise ValueError("no machine id (/etc/machine-id); set mqtt.device_id")


@dataclass(frozen=True)
class Topics:
    """Every topic of one device."""

    base: str  # {base_topic}/{device_id}
    discovery: str | None  # {discovery_prefix}/device/{device_id}/config, None when discovery is off
    ha_status: str | None  # {discovery_prefix}/status

    @classmethod
    def of(cls, cfg: MqttConfig, device_id: str) -> Topics:
        base = f"{cfg.base_topic}/{device_id}"
        if not cfg.discovery_prefix:
            return cls(base, None, None)
        p = cfg.discovery_prefix
        return cls(base, f"{p}/device/{device_id}/config", f"{p}/{HA_STATUS_TOPIC_SUFFIX}")

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def commands(self) -> str:
        """The subscription for every command: {base}/cmd/#."""
        return f"{self.base}/cmd/#"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"


def state_payload(status: Mapping[str, Any], volume: int) -> dict[str, Any]:
    """The retained state document from a daemon status dict (status.DaemonStatus.to_dict()).

    No uptime or ages: the document changes only when something happened, so that it is republished
    on change only."""
    counters = status.get("counters") or {}
    echo = status.get("echo") or {}
    erle = echo.get("erle_db")
    return {
        "state": status.get("state"),
        "session_id": status.get("session_id"),
        "muted": bool(status.get("muted")),
        "volume": int(status.get("volume", volume)),
        "wake_mode": status.get("wake_mode"),
        "last_error": status.get("last_error"),
        "cloud_connected": status.get("token_status") == "ready",  # the token provider reaches Vatel
        "echo_engine": echo.get("engine"),
        "echo_reduction_db": round(erle, 1) if isinstance(erle, (int, float)) and math.isfinite(erle) else None,
        "counters": {k: counters[k] for k in STATE_COUNTERS if k in counters},
        "version": status.get("version", __version__),
    }


def event_payload(kind: str, text: str, at: float, fields: Mapping[str, Any], *,
                  include_text: bool) -> dict[str, Any] | None:
    """The event message of one daemon event, or None for kinds the bridge does not publish.

    `event_type` is what Home Assistant's event entity reads. Only the named transcript-free fields go
    out; the event's text (which may quote a transcript, tool arguments or an output) only with
    mqtt.include_transcripts."""
    mapped = _EVENT_MAP.get(kind)
    if mapped is None:
        return None
    event_type, keys = mapped
    out: dict[str, Any] = {"event_type": event_type, "at": round(at, 3)}
    out.update({k: fields[k] for k in keys if k in fields})
    if include_text:
        out["text"] = text
    return out


def discovery_payload(topics: Topics, device_id: str, version: str = __version__) -> dict[str, Any]:
    """Home Assistant's device-based discovery document: `dev`, `o` (origin), shared availability and
    state topic, and `cmps`, one entry per entity (the `p` key is its platform)."""
    uid = f"vatel_edge_{device_id}"

    def counter(name: str, key: str, icon: str) -> dict[str, Any]:
        return {"p": "sensor", "name": name, "unique_id": f"{uid}_{key}", "state_class": "total_increasing",
                "entity_category": "diagnostic", "icon": icon,
                "value_template": f"{{{{ value_json.counters.{key} | default(0) }}}}"}

    cmps: dict[str, dict[str, Any]] = {
        "connectivity": {
            "p": "binary_sensor", "name": "Cloud connection", "unique_id": f"{uid}_connectivity",
            "device_class": "connectivity", "entity_category": "diagnostic",
            "value_template": "{{ 'ON' if value_json.cloud_connected else 'OFF' }}"},
        "in_session": {
            "p": "binary_sensor", "name": "In session", "unique_id": f"{uid}_in_session", "icon": "mdi:account-voice",
            "value_template": "{{ 'ON' if value_json.session_id or value_json.state in "
                              "['connecting', 'in_session', 'agent_speaking', 'ending'] else 'OFF' }}"},
        "state": {
            "p": "sensor", "name": "State", "unique_id": f"{uid}_state", "device_class": "enum",
            "options": [s.value for s in State], "value_template": "{{ value_json.state }}"},
        "last_error": {
            "p": "sensor", "name": "Last error", "unique_id": f"{uid}_last_error", "entity_category": "diagnostic",
            "icon": "mdi:alert-circle-outline", "value_template": "{{ value_json.last_error or 'none' }}"},
        "sessions": counter("Sessions", "sessions", "mdi:counter"),
        "interruptions": counter("Interruptions", "interruptions", "mdi:hand-back-left"),
        "capture_overruns": counter("Capture overruns", "capture_overruns", "mdi:microphone-alert"),
        "echo_reduction": {
            "p": "sensor", "name": "Echo reduction", "unique_id": f"{uid}_echo_reduction",
            "unit_of_measurement": "dB", "state_class": "measurement", "entity_category": "diagnostic",
            "value_template": "{{ value_json.echo_reduction_db if value_json.echo_reduction_db is not none "
                              "else 'unknown' }}"},
        "trigger": {
            "p": "button", "name": "Start session", "unique_id": f"{uid}_trigger", "icon": "mdi:microphone-message",
            "command_topic": topics.command("trigger"), "payload_press": "PRESS"},
        "end_session": {
            "p": "button", "name": "End session", "unique_id": f"{uid}_end_session", "icon": "mdi:phone-hangup",
            "command_topic": topics.command("end_session"), "payload_press": "PRESS"},
        "mute": {
            "p": "switch", "name": "Microphone mute", "unique_id": f"{uid}_mute", "icon": "mdi:microphone-off",
            "command_topic": topics.command("mute"), "payload_on": "ON", "payload_off": "OFF",
            "value_template": "{{ 'ON' if value_json.muted else 'OFF' }}"},
        "volume": {
            "p": "number", "name": "Volume", "unique_id": f"{uid}_volume", "icon": "mdi:volume-high",
            "command_topic": topics.command("volume"), "min": 0, "max": 100, "step": 1, "mode": "slider",
            "unit_of_measurement": "%", "value_template": "{{ value_json.volume }}"},
        "timeline": {
            "p": "event", "name": "Timeline", "unique_id": f"{uid}_timeline", "icon": "mdi:timeline-text",
            "state_topic": topics.event, "event_types": list(EVENT_TYPES)},
    }
    return {
        "dev": {"identifiers": [uid], "name": f"vatel-edge {device_id}", "manufacturer": "Vatel",
                "model": "vatel-edge voice agent", "sw_version": version},
        "o": {"name": "vatel-edge", "sw_version": version, "support_url": "https://vatel.ai"},
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "state_topic": topics.state,
        "qos": 1,
        "cmps": cmps,
    }


def dumps(doc: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes (what every JSON payload is)."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()


# ---------------------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """One valid command: `name` (trigger, end_session, mute, volume) and its value (mute: bool, volume: int)."""

    name: str
    value: bool | int | None = None


@dataclass(frozen=True)
class Rejected:
    """A message on a command topic that is no command: why (for the log; never the payload itself)."""

    why: str


def parse_command(topics: Topics, topic: str, payload: bytes) -> Command | Rejected:
    """{base}/cmd/NAME + payload -> Command, or Rejected (unknown command, bad payload)."""
    prefix = topics.base + "/cmd/"
    if not topic.startswith(prefix):
        return Rejected(f"not a command topic: {topic[:120]!r}")
    name = topic[len(prefix):]
    if name not in COMMANDS:
        return Rejected(f"unknown command {name[:60]!r}")
    try:
        text = payload.decode("ascii").strip()
    except UnicodeDecodeError:
        return Rejected(f"{name}: payload is not ASCII text")
    if name in ("trigger", "end_session"):
        return Command(name)  # any payload: Home Assistant's button sends PRESS
    if name == "mute":
        if text.upper() in ("ON", "OFF"):
            return Command(name, text.upper() == "ON")
        return Rejected('mute: expected "ON" or "OFF"')
    try:
        level = float(text)
    except ValueError:
        return Rejected("volume: expected a number 0..100")
    if not math.isfinite(level) or not 0 <= level <= 100:
        return Rejected("volume: expected a number 0..100")
    return Command(name, round(level))


class TokenBucket:
    """Rate limit: `rate` per second, bursts of up to `burst`; take() says whether one more may pass."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class BurstLog:
    """Log once per burst: `hit()` is True for the first of a burst (nothing for `quiet_s` before it), and
    `suppressed` then says how many of the previous burst went unlogged."""

    def __init__(self, clock: Callable[[], float], quiet_s: float = 10.0) -> None:
        self._clock, self.quiet_s = clock, quiet_s
        self._last: float | None = None
        self._count = 0
        self.suppressed = 0

    def hit(self) -> bool:
        now = self._clock()
        first = self._last is None or now - self._last >= self.quiet_s
        self._last = now
        if first:
            self.suppressed, self._count = self._count, 0
            return True
        self._count += 1
        return False


# ---------------------------------------------------------------------------------------------- failures

#: CONNACK codes that mean "these credentials are refused" (MQTT 3.1.1: 4, 5; MQTT 5 reason codes: 134, 135).
AUTH_CODES = frozenset({4, 5, 134, 135})


def classify_failure(code: int | None, text: str) -> str:
    """What a failed connection means, which decides the log line and the retry pace:
    "auth" (wrong credentials: slow retries), "tls" (an untrusted or mismatched certificate), "network"."""
    if code is not None and code in AUTH_CODES:
        return "auth"
    lowered = text.lower()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered or "hostname" in lowered:
        return "tls"
    return "network"
