"""The bridge's decisions without a broker: topics, payloads, discovery, commands, rate limits, the outbox,
the device id, failure classes; and the [mqtt] config rules and password sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vatel_edge.config import MqttConfig, read_mqtt_password
from vatel_edge.config.load import config_from_dict
from vatel_edge.errors import ConfigError
from vatel_edge.mqtt.model import (
    EVENT_TYPES,
    BurstLog,
    Command,
    Rejected,
    TokenBucket,
    Topics,
    classify_failure,
    derive_device_id,
    discovery_payload,
    event_payload,
    parse_command,
    state_payload,
)
from vatel_edge.mqtt.outbox import Message, Outbox

AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
T = Topics.of(MqttConfig(), "dev1")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_topics_are_under_base_topic_and_device_id() -> None:
    assert T.availability == "vatel-edge/dev1/availability"
    assert T.state == "vatel-edge/dev1/state" and T.event == "vatel-edge/dev1/event"
    assert T.commands == "vatel-edge/dev1/cmd/#" and T.command("mute") == "vatel-edge/dev1/cmd/mute"
    assert T.discovery == "homeassistant/device/dev1/config" and T.ha_status == "homeassistant/status"
    off = Topics.of(MqttConfig(discovery_prefix=""), "dev1")
    assert off.discovery is None and off.ha_status is None


@pytest.mark.parametrize(("topic", "payload", "expected"), [
    ("cmd/trigger", b"", Command("trigger")),
    ("cmd/trigger", b"PRESS", Command("trigger")),
    ("cmd/end_session", b"PRESS", Command("end_session")),
    ("cmd/mute", b"ON", Command("mute", True)),
    ("cmd/mute", b"off", Command("mute", False)),
    ("cmd/volume", b"55", Command("volume", 55)),
    ("cmd/volume", b" 99.6 ", Command("volume", 100)),
    ("cmd/volume", b"0", Command("volume", 0)),
])
def test_valid_commands(topic: str, payload: bytes, expected: Command) -> None:
    assert parse_command(T, f"vatel-edge/dev1/{topic}", payload) == expected


@pytest.mark.parametrize(("topic", "payload"), [
    ("cmd/mute", b"maybe"), ("cmd/volume", b"101"), ("cmd/volume", b"-1"), ("cmd/volume", b"nan"),
    ("cmd/volume", b"loud"), ("cmd/reboot", b"1"), ("cmd/mute", b"\xff\xfe"), ("cmd/volume/x", b"1"),
])
def test_bad_commands_are_rejected_without_quoting_the_payload(topic: str, payload: bytes) -> None:
    out = parse_command(T, f"vatel-edge/dev1/{topic}", payload)
    assert isinstance(out, Rejected)
    assert payload.decode(errors="replace") not in out.why or payload in (b"1",)


def test_state_payload_has_the_issue_fields_and_no_uptime() -> None:
    status = {"state": "listening", "session_id": None, "muted": False, "wake_mode": "manual", "last_error": None,
              "uptime_s": 12.3, "token_status": "ready", "version": "0.1.0",
              "counters": {"wakes": 2, "sessions": 1, "tool_calls": {"ok": 1}, "capture_overruns": 0},
              "echo": {"engine": "webrtc", "erle_db": 31.26}}
    doc = state_payload(status, 40)
    assert {"state", "session_id", "muted", "volume", "wake_mode", "last_error", "counters", "version"} <= set(doc)
    assert doc["volume"] == 40 and doc["cloud_connected"] is True and doc["echo_reduction_db"] == 31.3
    assert "uptime_s" not in doc and doc["counters"]["tool_calls"] == {"ok": 1}


def test_events_carry_only_transcript_free_fields_unless_asked() -> None:
    fields = {"name": "set_light", "id": "c1", "outcome": "ok"}
    text = "set_light id=c1 -> the secret output"
    doc = event_payload("tool_call_output", text, 1.0, fields, include_text=False)
    assert doc == {"event_type": "tool_call", "at": 1.0, "name": "set_light", "outcome": "ok"}
    assert event_payload("tool_call_output", text, 1.0, fields, include_text=True)["text"] == text  # type: ignore[index]
    assert event_payload("input_audio_transcript", "hello there", 1.0, {}, include_text=True) is None
    assert event_payload("response_audio", "turn t1", 1.0, {}, include_text=False) is None
    assert event_payload("session_closed", "idle", 1.0, {"reason": "idle", "session_id": "s"},
                         include_text=False) == {"event_type": "session_ended", "at": 1.0, "reason": "idle",
                                                 "session_id": "s"}


def test_discovery_is_device_based_with_every_component() -> None:
    doc = discovery_payload(T, "dev1", "9.9")
    assert {"dev", "o", "cmps"} <= set(doc)
    assert doc["o"]["sw_version"] == "9.9" and doc["dev"]["identifiers"] == ["vatel_edge_dev1"]
    assert doc["availability_topic"] == T.availability and doc["state_topic"] == T.state
    platforms = {k: v["p"] for k, v in doc["cmps"].items()}
    assert platforms == {
        "connectivity": "binary_sensor", "in_session": "binary_sensor", "state": "sensor", "last_error": "sensor",
        "sessions": "sensor", "interruptions": "sensor", "capture_overruns": "sensor", "echo_reduction": "sensor",
        "trigger": "button", "end_session": "button", "mute": "switch", "volume": "number", "timeline": "event"}
    uids = [c["unique_id"] for c in doc["cmps"].values()]
    assert len(set(uids)) == len(uids)
    assert doc["cmps"]["timeline"]["event_types"] == list(EVENT_TYPES)
    assert "listening" in doc["cmps"]["state"]["options"]
    assert doc["cmps"]["mute"]["command_topic"] == T.command("mute")


def test_token_bucket_allows_bursts_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 20, clock)
    assert sum(bucket.take() for _ in range(100)) == 20
    clock.t = 1.0
    assert sum(bucket.take() for _ in range(100)) == 10


def test_burst_log_logs_the_first_of_each_burst_and_counts_the_rest() -> None:
    clock = Clock()
    b = BurstLog(clock, quiet_s=10)
    assert b.hit() and not b.hit() and not b.hit()
    clock.t = 5.0
    assert not b.hit()  # still the same burst
    clock.t = 16.0
    assert b.hit() and b.suppressed == 3


def test_outbox_retained_latest_wins_and_events_drop_oldest_counted() -> None:
    box = Outbox(max_events=3)
    for i in range(5):
        box.put_retained(Message("s", str(i).encode(), True, 1))
        box.put_event(Message("e", str(i).encode(), False, 0))
    assert box.events_dropped == 2 and len(box) == 4
    got = [box.pop() for _ in range(4)]
    assert [m.payload for m in got if m is not None] == [b"4", b"2", b"3", b"4"]
    assert box.pop() is None


def test_device_id_is_stable_keyed_and_not_the_machine_id(tmp_path: Path) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    a, b = derive_device_id((str(mid),)), derive_device_id((str(mid),))
    assert a == b and len(a) == 16 and a not in mid.read_text()
    mid.write_text("fedcba9876543210fedcba9876543210\n")
    assert derive_device_id((str(mid),)) != a
    with pytest.raises(ValueError, match=r"mqtt\.device_id"):
        derive_device_id((str(tmp_path / "none"),))


def test_failure_classes() -> None:
    assert classify_failure(5, "Not authorized") == "auth"
    assert classify_failure(134, "Bad user name or password") == "auth"
    assert classify_failure(None, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed") == "tls"
    assert classify_failure(None, "[Errno 111] Connection refused") == "network"


def _cfg(**mqtt: object) -> None:
    config_from_dict({"vatel": {"agent_id": AGENT}, "mqtt": mqtt})


@pytest.mark.parametrize(("mqtt", "message"), [
    ({"url": "mqtt://broker.lan:1883"}, "plain mqtt:// to non-loopback host 'broker.lan' is refused"),
    ({"url": "http://broker"}, "expected mqtts://HOST[:PORT]"),
    ({"url": "mqtts://broker:99999"}, 'mqtt.url: expected mqtts://HOST[:PORT] or mqtt://HOST[:PORT], got "mqtts://'),
    ({"url": "mqtts://u:p@broker"}, "must not contain user:password@"),
    ({"url": "mqtts://broker/x"}, "must not have a path"),
    ({"url": "mqtt://127.0.0.1", "ca_file": "/etc/ca.crt"}, "need an mqtts:// URL"),
    ({"client_cert": "/etc/c.crt"}, "client_cert and client_key go together"),
    ({"base_topic": "a/+/b"}, "mqtt.base_topic: expected a topic without wildcards"),
    ({"device_id": "kitchen speaker"}, "mqtt.device_id: expected 1-64 letters"),
    ({"password_file": "relative"}, "mqtt.password_file: expected an absolute path"),
    ({"keepalive_s": 1}, "mqtt.keepalive_s: expected an integer 5..3600"),
    ({"enable": True}, 'mqtt.enable: unknown key (did you mean "enabled"?)'),
])
def test_mqtt_config_problems_name_the_key(mqtt: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _cfg(**mqtt)
    assert any(message in p for p in exc.value.problems), exc.value.problems


def test_mqtt_config_accepts_loopback_plain_and_insecure_when_allowed() -> None:
    _cfg(url="mqtt://localhost:1883")
    _cfg(url="mqtt://broker.lan", allow_insecure=True)
    _cfg(url="mqtts://broker.lan:8883", ca_file="/etc/ca.crt", client_cert="/a.crt", client_key="/a.key")
    with pytest.raises(ConfigError, match=r"metrics\.textfile"):
        config_from_dict({"vatel": {"agent_id": AGENT}, "metrics": {"textfile": "/tmp/x.txt"}})


def test_password_file_group_readable_is_refused_and_never_shown(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pw\n")
    pw.chmod(0o640)
    with pytest.raises(ConfigError) as exc:
        read_mqtt_password(MqttConfig(password_file=str(pw)), {})
    assert "mqtt.password_file" in str(exc.value) and "s3cret" not in str(exc.value)
    pw.chmod(0o600)
    assert read_mqtt_password(MqttConfig(password_file=str(pw)), {}) == "s3cret-pw"
    with pytest.raises(ConfigError, match="does not exist"):
        read_mqtt_password(MqttConfig(password_file=str(tmp_path / "missing")), {})


def test_password_from_the_systemd_credential_or_none(tmp_path: Path) -> None:
    assert read_mqtt_password(MqttConfig(), {}) is None
    (tmp_path / "mqtt_password").write_text("cred-pw\n")
    (tmp_path / "mqtt_password").chmod(0o440)  # systemd's credential files are 0440: fine there
    assert read_mqtt_password(MqttConfig(), {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "cred-pw"


def test_the_daemon_does_not_import_aiomqtt_or_prometheus_client_unless_enabled() -> None:
    code = ("import sys, vatel_edge.cli, vatel_edge.daemon, vatel_edge.runtime, vatel_edge.config;"
            "bad = [m for m in ('aiomqtt', 'paho', 'prometheus_client', 'vatel_edge.mqtt.bridge', "
            "'vatel_edge.metrics') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env={**os.environ})
