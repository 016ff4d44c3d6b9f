"""The configuration's shape: one frozen dataclass per TOML section, and `Config`, the whole of it.

The field metadata (doc, choices, min, max, ...) given through `opt` is both the validation rules
(validate.py) and the single source of the README's config reference (the devkit's doc generator reads
it; nothing here imports the generator). No I/O and no validation code here.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

if typing.TYPE_CHECKING:
    from vatel_edge.config.tools import ToolSpec


def opt(default: Any, doc: str, **rules: Any) -> Any:
    """A config field with its documentation and validation rules.

    Rules: choices, min, max, uuid, required, pattern (a regex the whole string must match) with
    pattern_doc (what it means, for messages), echo=False (never repeat the value in an error: a key
    pasted into the wrong field must not end up in a log).
    """
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass(frozen=True)
class VatelConfig:
    """[vatel]: the platform, the agent and the credentials."""

    agent_id: str = opt("", "Agent UUID (required).", uuid=True, required=True)
    base_url: str = opt(
        "https://api.vatel.ai", "REST base URL; the WebSocket base is derived (https->wss)."
    )
    api_key_env: str = opt(
        "ORG_API_KEY",
        "Environment variable holding the organization key.",
        pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        pattern_doc="an environment variable name (letters, digits, _)",
        echo=False,
    )
    api_key_file: str | None = opt(
        None,
        "File holding the key (mode 0600/0400). $CREDENTIALS_DIRECTORY/org_api_key is also read.",
        pattern=r"/.*",
        pattern_doc="an absolute path",
        echo=False,
    )
    version_id: str | None = opt(None, "Agent version UUID for the session token.", uuid=True)
    first_message: str | None = opt(None, "First message override passed to the session token.")
    prompt: str | None = opt(None, "Prompt override passed to the session token.")
    allow_insecure: bool = opt(False, "Allow http:// and ws:// to non-loopback hosts.")
    token_ttl_s: float = opt(
        60.0, "Lifetime assumed for a token without a readable JWT exp.", min=5, max=3600
    )
    token_refresh_margin_s: float = opt(
        15.0, "Refresh a prefetched token this long before it expires.", min=1, max=600
    )
    http_timeout_s: float = opt(10.0, "Timeout of a session-token request.", min=0.5, max=120)
    connect_timeout_s: float = opt(10.0, "WebSocket open timeout.", min=0.5, max=120)

    @property
    def ws_base(self) -> str:
        """WebSocket base derived from base_url (https->wss, http->ws)."""
        scheme, sep, rest = self.base_url.rstrip("/").partition("://")
        if not sep:
            return self.base_url  # not an http(s) URL: validation refuses it before anyone asks
        return ("wss://" if scheme.lower() == "https" else "ws://") + rest


@dataclass(frozen=True)
class AudioConfig:
    """[audio]: ALSA devices and the audio engine."""

    capture_device: str = opt("default", "ALSA PCM name of the microphone.")
    playback_device: str = opt("default", "ALSA PCM name of the speaker.")
    frame_ms: int = opt(20, "Capture frame (and input_audio chunk) length in ms.", choices=(10, 20, 30, 40))
    capture_channel: int = opt(0, "Channel to use when the microphone only opens multi-channel.", min=0, max=31)
    capture_buffer_frames: int = opt(
        100, "Capture frames buffered towards the daemon before the oldest is dropped.", min=4, max=10_000
    )
    playback_period_ms: int = opt(20, "ALSA playback period in ms.", min=5, max=200)
    playback_buffer_ms: int = opt(120, "ALSA playback buffer in ms (latency ceiling).", min=10, max=2000)
    prebuffer_ms: int = opt(60, "Jitter prebuffer at the start of each agent turn.", min=0, max=1000)
    volume: float = opt(1.0, "Software gain for agent audio (1.0 = unchanged), clipped.", min=0.0, max=4.0)
    echo_cancel: str = opt(
        "auto", "Echo canceller: auto (webrtc, else speex, if installed), webrtc, speex, dtln (neural) or off.",
        choices=("auto", "webrtc", "speex", "dtln", "off"),
    )
    mic_during_playback: str = opt(
        "auto", "While the agent speaks: stream the mic, or mute it (auto: stream with AEC).",
        choices=("auto", "stream", "mute"),
    )


@dataclass(frozen=True)
class WakeConfig:
    """[wake]: what opens a session."""

    mode: str = opt(
        "vad",
        "vad (any voice) | wakeword (a wake word, behind the VAD; the wakeword extra) | always | button | manual.",
        choices=("vad", "wakeword", "always", "button", "manual"),
    )
    preroll_ms: int = opt(
        1000,
        "Audio sent from before the wake: before the onset of the voiced stretch that triggered (vad, wakeword), "
        "else before the trigger point.",
        min=0,
        max=5000,
    )
    vad_aggressiveness: int = opt(2, "webrtcvad aggressiveness 0 (lenient) .. 3 (strict).", min=0, max=3)
    vad_frame_ms: int = opt(30, "webrtcvad frame length.", choices=(10, 20, 30))
    min_speech_ms: int = opt(240, "Voiced audio needed within window_ms to wake.", min=10, max=5000)
    window_ms: int = opt(480, "Sliding window for min_speech_ms.", min=10, max=10_000)
    min_level_dbfs: float = opt(-45.0, "Energy gate: frames quieter than this are never speech.", min=-96, max=0)
    cooldown_ms: int = opt(
        1000, "No VAD or wake-word wake for this long after a session ends; also the wake word's refractory time.",
        min=0, max=60_000,
    )
    wake_words: tuple[str, ...] = opt(
        ("okay_nabu",),
        "[wakeword] Built-in okay_nabu, hey_jarvis, alexa, hey_mycroft, or paths to microWakeWord .json "
        "manifests (the .tflite beside it; relative to the config file); any of them wakes.",
    )
    wake_word_cutoff: float | None = opt(
        None, "[wakeword] Probability a model must pass (unset: each model's own); higher = fewer false wakes.",
        min=0.01, max=0.99,
    )
    button_chip: str = opt("gpiochip0", "[button mode] gpiochip path or name.")
    button_line: str = opt("", "[button mode] line offset or name.")
    button_active_low: bool = opt(True, "[button mode] pressed pulls the line low.")
    debounce_ms: int = opt(50, "[button mode] debounce period.", min=0, max=1000)


@dataclass(frozen=True)
class SessionConfig:
    """[session]: the life of one voice session."""

    idle_timeout_s: float = opt(
        20.0, "End a session after this long with neither user speech nor agent audio.", min=1, max=3600
    )
    max_duration_s: float = opt(600.0, "Hard limit of one session.", min=5, max=86_400)
    barge_in: str = opt(
        "server",
        "Who cuts agent audio on barge-in: server (its interruption), local (also the local VAD on the "
        "echo-cancelled mic; needs an echo canceller), wakeword (also the wake word on it; the wakeword extra) "
        "or both (local and, with the extra installed, wakeword).",
        choices=("server", "local", "wakeword", "both"),
    )
    barge_in_min_speech_ms: int = opt(
        90, "Local barge-in: voiced audio on the echo-cancelled mic that cuts playback.", min=30, max=2000
    )
    close_timeout_s: float = opt(2.0, "Time allowed for a polite WebSocket close.", min=0.1, max=30)
    max_tool_concurrency: int = opt(4, "Tool actions running at once.", min=1, max=64)


@dataclass(frozen=True)
class FeedbackConfig:
    """[feedback]: optional WAV files played through the speaker."""

    wake_sound: str | None = opt(None, "WAV played when a session opens.")
    end_sound: str | None = opt(None, "WAV played when a session ends.")
    error_sound: str | None = opt(None, "WAV played when the service is unreachable.")


#: One LED setting: "" (every LED off) or LINE:PATTERN items, comma-separated; PATTERN on, off, blink or
#: blink:PERIOD_MS. Parsed (and the periods checked) by config/feedback.py.
_LED_ITEM = r"[A-Za-z0-9_-]+:(?:on|off|blink(?::[0-9]{1,5})?)"
LED_PATTERN = rf"(?:{_LED_ITEM}(?:\s*,\s*{_LED_ITEM})*)?"
_LED_DOC = "LINE:PATTERN items, comma-separated (PATTERN on, off, blink or blink:PERIOD_MS), or empty"


def _led(state: str) -> Any:
    return opt("", f"LEDs while {state}: e.g. \"17:on, 27:blink\"; LED lines not named are off.",
               pattern=LED_PATTERN, pattern_doc=_LED_DOC)


@dataclass(frozen=True)
class LedsConfig:
    """[feedback.leds]: state LEDs on GPIO output lines (claimed like tool lines: one owner per line)."""

    chip: str = opt("gpiochip0", "gpiochip path or name of the LED lines.")
    active_low: bool = opt(False, "An LED lights when its line is driven low.")
    blink_period_ms: int = opt(600, "Period of blink without its own period (lit for half of it).", min=100, max=10_000)
    listening: str = _led("listening for a wake")
    connecting: str = _led("connecting after a wake")
    in_session: str = _led("in a session (the user's turn)")
    agent_speaking: str = _led("the agent speaks")
    muted: str = _led("muted (privacy mute, any state)")
    offline: str = _led("listening but the service is unreachable")


@dataclass(frozen=True)
class HooksConfig:
    """[feedback.hooks]: a command run on each visible state change (LED rings, displays)."""

    command: tuple[str, ...] = opt(
        (), "argv run on each state change (no shell); {old} and {new} are replaced; empty: no hook."
    )
    timeout_s: float = opt(5.0, "A hook still running after this long is killed (its process group).", min=0.1,
                           max=300)
    cwd: str = opt("/", "Working directory of the hook.", pattern=r"/.*", pattern_doc="an absolute path")


@dataclass(frozen=True)
class PrivacyConfig:
    """[privacy]: the hardware mute switch (its position wins over software mute and unmute)."""

    mute_switch_chip: str = opt("gpiochip0", "gpiochip path or name of the mute switch.")
    mute_switch_line: str = opt("", "Line offset or name of the mute switch; empty: no switch.")
    mute_switch_active_low: bool = opt(True, "The switch at mute pulls the line low.")
    mute_switch_bias: str = opt("as_is", "Bias of the switch line.", choices=("as_is", "pull_up", "pull_down",
                                                                            "disabled"))


@dataclass(frozen=True)
class ButtonsConfig:
    """[buttons]: optional push buttons for volume and talk/stop (debounced like the wake button)."""

    chip: str = opt("gpiochip0", "gpiochip path or name of the button lines.")
    active_low: bool = opt(True, "A pressed button pulls its line low.")
    debounce_ms: int = opt(50, "Debounce period of every button.", min=0, max=1000)
    volume_up_line: str = opt("", "Line of the volume-up button; empty: none.")
    volume_down_line: str = opt("", "Line of the volume-down button; empty: none.")
    volume_step: int = opt(10, "Volume change per press (the volume is 0..100).", min=1, max=50)
    talk_line: str = opt("", "Line of the talk/stop button (start a session, cut the agent, end); empty: none.")


@dataclass(frozen=True)
class StateConfig:
    """[state]: what survives a restart (the volume)."""

    directory: str = opt(
        "", "Directory kept across restarts; empty: $STATE_DIRECTORY (systemd's StateDirectory=), else none.",
        pattern=r"(/.*)?", pattern_doc="an absolute path or empty",
    )


@dataclass(frozen=True)
class LogConfig:
    """[log]: logging."""

    level: str = opt("info", "debug | info | warning | error.", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class ControlConfig:
    """[control]: the local control socket (trigger, status)."""

    socket_path: str = opt("/run/vatel-edge/control.sock", "Unix socket of the running daemon.")


@dataclass(frozen=True)
class GpioConfig:
    """[gpio]: the GPIO backend used by tools and the button."""

    backend: str = opt("gpiod", "gpiod (real lines) or fake (records, for tests and demos).", choices=("gpiod", "fake"))


@dataclass(frozen=True)
class MqttConfig:
    """[mqtt]: the MQTT bridge (state, events, commands, Home Assistant discovery); off by default."""

    enabled: bool = opt(False, "Run the MQTT bridge (needs the mqtt extra: aiomqtt).")
    url: str = opt(
        "mqtts://localhost:8883",
        "Broker URL, mqtts://HOST[:PORT] (TLS, verified) or mqtt://HOST[:PORT] (loopback only unless "
        "allow_insecure).",
    )
    allow_insecure: bool = opt(False, "Allow plain mqtt:// to non-loopback brokers.")
    username: str | None = opt(None, "Broker user name.", echo=False)
    password_file: str | None = opt(
        None,
        "File holding the broker password (mode 0600/0400). $CREDENTIALS_DIRECTORY/mqtt_password is also read.",
        pattern=r"/.*",
        pattern_doc="an absolute path",
        echo=False,
    )
    ca_file: str | None = opt(
        None, "CA certificate(s) to verify the broker with (default: the system's).", pattern=r"/.*",
        pattern_doc="an absolute path",
    )
    client_cert: str | None = opt(
        None, "Client certificate for TLS client authentication (with client_key).", pattern=r"/.*",
        pattern_doc="an absolute path",
    )
    client_key: str | None = opt(
        None, "Private key of client_cert.", pattern=r"/.*", pattern_doc="an absolute path", echo=False
    )
    device_id: str | None = opt(
        None,
        "This device's id in topics and discovery (default: derived from /etc/machine-id, stable, not the MAC).",
        pattern=r"[A-Za-z0-9_-]{1,64}",
        pattern_doc="1-64 letters, digits, _ or -",
    )
    base_topic: str = opt(
        "vatel-edge", "Topic prefix: {base_topic}/{device_id}/...", pattern=r"[^/+#\x00]+(/[^/+#\x00]+)*",
        pattern_doc="a topic without wildcards or leading/trailing /",
    )
    discovery_prefix: str = opt(
        "homeassistant", "Home Assistant discovery prefix; empty disables discovery.",
        pattern=r"([^/+#\x00]+(/[^/+#\x00]+)*)?", pattern_doc="a topic without wildcards, or empty",
    )
    keepalive_s: int = opt(30, "MQTT keepalive; the broker publishes the last will after 1.5x this.", min=5, max=3600)
    include_transcripts: bool = opt(
        False, "Event messages also carry their text (transcripts, tool arguments and outputs)."
    )
    max_commands_per_s: float = opt(
        10.0, "Commands handled per second (a burst of twice as many); the rest are dropped.", min=0.1, max=1000
    )


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: fleet metrics for node_exporter's textfile collector, without MQTT; off by default."""

    textfile: str | None = opt(
        None,
        "Write Prometheus metrics here atomically (e.g. /var/lib/prometheus/node-exporter/vatel_edge.prom; "
        "needs the metrics extra).",
        pattern=r"/.*\.prom",
        pattern_doc="an absolute path ending in .prom",
    )
    interval_s: float = opt(5.0, "How often the metrics file is rewritten.", min=1, max=300)


@dataclass(frozen=True)
class DebugConfig:
    """[debug]: session recordings (recording.py); off by default."""

    record_sessions: int = opt(
        0, "Keep the last N sessions in recordings/ of the state directory (microphone, sent and played audio, "
        "the event timeline with transcripts; files 0600); 0: nothing is recorded.", min=0, max=1000,
    )
    record_max_mb: int = opt(200, "Total size of the recordings in MB; the oldest is deleted first.", min=1,
                             max=100000)


SECTIONS: dict[str, type[Any]] = {
    "vatel": VatelConfig,
    "audio": AudioConfig,
    "wake": WakeConfig,
    "session": SessionConfig,
    "feedback": FeedbackConfig,
    "feedback.leds": LedsConfig,
    "feedback.hooks": HooksConfig,
    "privacy": PrivacyConfig,
    "buttons": ButtonsConfig,
    "state": StateConfig,
    "log": LogConfig,
    "control": ControlConfig,
    "gpio": GpioConfig,
    "mqtt": MqttConfig,
    "metrics": MetricsConfig,
    "debug": DebugConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    vatel: VatelConfig
    audio: AudioConfig = field(default_factory=AudioConfig)
    wake: WakeConfig = field(default_factory=WakeConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    feedback_leds: LedsConfig = field(default_factory=LedsConfig)  # [feedback.leds]
    feedback_hooks: HooksConfig = field(default_factory=HooksConfig)  # [feedback.hooks]
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    buttons: ButtonsConfig = field(default_factory=ButtonsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    log: LogConfig = field(default_factory=LogConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    tools: Mapping[str, ToolSpec] = field(default_factory=dict)
    path: str | None = None

    def section(self, name: str) -> Any:
        """A section by its TOML name (SECTIONS' keys): cfg.section("feedback.leds") is cfg.feedback_leds."""
        if name not in SECTIONS:
            raise KeyError(name)
        return getattr(self, name.replace(".", "_"))
