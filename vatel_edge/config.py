"""Configuration: TOML into frozen dataclasses, one per section, validated before anything starts.

Every error names the key path and the problem; unknown keys are errors with a "did you mean".
The field metadata (doc, choices, min, max) is the single source of the README's config reference.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import stat
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vatel_edge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if typing.TYPE_CHECKING:
    from vatel_edge.tools.spec import ToolSpec

DEFAULT_CONFIG_PATH = "/etc/vatel-edge/config.toml"
CREDENTIAL_NAME = "org_api_key"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def opt(default: Any, doc: str, **rules: Any) -> Any:
    """A config field with its documentation and validation rules (choices, min, max, uuid)."""
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass(frozen=True)
class VatelConfig:
    """[vatel]: the platform, the agent and the credentials."""

    agent_id: str = opt("", "Agent UUID (required).", uuid=True, required=True)
    base_url: str = opt(
        "https://api.vatel.ai", "REST base URL; the WebSocket base is derived (https->wss)."
    )
    api_key_env: str = opt("ORG_API_KEY", "Environment variable holding the organization key.")
    api_key_file: str | None = opt(
        None,
        "File holding the key (mode 0600/0400). $CREDENTIALS_DIRECTORY/org_api_key is also read.",
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
        url = self.base_url.rstrip("/")
        if url.startswith("https://"):
            return "wss://" + url[len("https://") :]
        return "ws://" + url[len("http://") :]


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
        "auto", "Echo canceller: auto (best installed), webrtc, speex or off.",
        choices=("auto", "webrtc", "speex", "off"),
    )
    mic_during_playback: str = opt(
        "auto", "While the agent speaks: stream the mic, or mute it (auto: stream with AEC).",
        choices=("auto", "stream", "mute"),
    )


@dataclass(frozen=True)
class WakeConfig:
    """[wake]: what opens a session."""

    mode: str = opt("vad", "vad | always | button | manual.", choices=("vad", "always", "button", "manual"))
    preroll_ms: int = opt(500, "Audio before the trigger point sent at the start of a session.", min=0, max=5000)
    vad_aggressiveness: int = opt(2, "webrtcvad aggressiveness 0 (lenient) .. 3 (strict).", min=0, max=3)
    vad_frame_ms: int = opt(30, "webrtcvad frame length.", choices=(10, 20, 30))
    min_speech_ms: int = opt(240, "Voiced audio needed within window_ms to wake.", min=10, max=5000)
    window_ms: int = opt(480, "Sliding window for min_speech_ms.", min=10, max=10_000)
    min_level_dbfs: float = opt(-45.0, "Energy gate: frames quieter than this are never speech.", min=-96, max=0)
    cooldown_ms: int = opt(1000, "No VAD wake for this long after a session ends.", min=0, max=60_000)
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
        "server", "Who stops playback on barge-in: server, local or both.", choices=("server", "local", "both")
    )
    close_timeout_s: float = opt(2.0, "Time allowed for a polite WebSocket close.", min=0.1, max=30)
    max_tool_concurrency: int = opt(4, "Tool actions running at once.", min=1, max=64)


@dataclass(frozen=True)
class FeedbackConfig:
    """[feedback]: optional WAV files played through the speaker."""

    wake_sound: str | None = opt(None, "WAV played when a session opens.")
    end_sound: str | None = opt(None, "WAV played when a session ends.")
    error_sound: str | None = opt(None, "WAV played when the service is unreachable.")


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


SECTIONS: dict[str, type[Any]] = {
    "vatel": VatelConfig,
    "audio": AudioConfig,
    "wake": WakeConfig,
    "session": SessionConfig,
    "feedback": FeedbackConfig,
    "log": LogConfig,
    "control": ControlConfig,
    "gpio": GpioConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    vatel: VatelConfig
    audio: AudioConfig = field(default_factory=AudioConfig)
    wake: WakeConfig = field(default_factory=WakeConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    log: LogConfig = field(default_factory=LogConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    tools: Mapping[str, ToolSpec] = field(default_factory=dict)
    path: str | None = None


# --------------------------------------------------------------------------- validation


def did_you_mean(key: str, known: typing.Iterable[str]) -> str:
    """' (did you mean "x"?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""


def describe_value(value: object) -> str:
    """A value as it reads in TOML, for error messages (strings quoted)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _type_name(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(tp, str(tp))


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the scalar type, optional?) of a field annotation such as `str | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def coerce_field(path: str, value: object, annotation: Any, meta: Mapping[str, Any]) -> Any:
    """Check one value against its field's type and rules; return it (ints widen to float)."""
    tp, optional = _base_type(annotation)
    if value is None and optional:
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
        expected = _type_name(tp)
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and hi is not None:
            expected += f" {lo}..{hi}"
        raise ConfigError(f"{path}: expected {expected}, got {describe_value(value)}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        shown = " | ".join(describe_value(c) for c in choices)
        hint = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise ConfigError(f"{path}: expected one of {shown}, got {describe_value(value)}{hint}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and (
        (lo is not None and value < lo) or (hi is not None and value > hi)
    ):
        raise ConfigError(f"{path}: expected {_type_name(tp)} {lo}..{hi}, got {describe_value(value)}")
    if meta.get("uuid") and isinstance(value, str) and value and not _UUID.match(value):
        raise ConfigError(f"{path}: expected a UUID, got {describe_value(value)}")
    return value


def parse_section(name: str, cls: type[Any], raw: object) -> Any:
    """Build one section dataclass from its TOML table, collecting every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table, got {describe_value(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            problems.append(f"{name}.{key}: unknown key{did_you_mean(key, fields)}")
            continue
        try:
            values[key] = coerce_field(f"{name}.{key}", value, hints[key], fields[key].metadata)
        except ConfigError as exc:
            problems.extend(exc.problems)
    for fname, f in fields.items():
        if f.metadata.get("required") and not values.get(fname):
            problems.append(f"{name}.{fname}: required key is missing")
    if problems:
        raise ConfigError(problems)
    return cls(**values)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_vatel(v: VatelConfig) -> list[str]:
    problems = []
    parts = urlsplit(v.base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problems.append(f"vatel.base_url: expected an http(s) URL, got {describe_value(v.base_url)}")
    elif parts.scheme == "http" and not v.allow_insecure and not _is_loopback(parts.hostname):
        problems.append(
            f"vatel.base_url: plain http to non-loopback host {parts.hostname!r} is refused; "
            "use https, or set vatel.allow_insecure = true"
        )
    return problems


def _check_cross(cfg: Config) -> list[str]:
    problems = []
    if cfg.wake.min_speech_ms > cfg.wake.window_ms:
        problems.append(
            f"wake.min_speech_ms: {cfg.wake.min_speech_ms} is longer than wake.window_ms "
            f"({cfg.wake.window_ms}); the VAD could never wake"
        )
    if cfg.audio.playback_buffer_ms < 2 * cfg.audio.playback_period_ms:
        problems.append(
            f"audio.playback_buffer_ms: {cfg.audio.playback_buffer_ms} must be at least two "
            f"periods (audio.playback_period_ms = {cfg.audio.playback_period_ms})"
        )
    if cfg.wake.mode == "button" and not cfg.wake.button_line:
        problems.append("wake.button_line: required when wake.mode = \"button\"")
    return problems


def config_from_dict(raw: Mapping[str, Any], path: str | None = None) -> Config:
    """Validate a parsed TOML document into a Config; ConfigError lists every problem."""
    from vatel_edge.tools.spec import parse_tools

    problems: list[str] = []
    sections: dict[str, Any] = {}
    known = [*SECTIONS, "tools"]
    for key in raw:
        if key not in known:
            problems.append(f"{key}: unknown section{did_you_mean(key, known)}")
    for name, cls in SECTIONS.items():
        if name not in raw and name != "vatel":
            continue
        try:
            sections[name] = parse_section(name, cls, raw.get(name, {}))
        except ConfigError as exc:
            problems.extend(exc.problems)
    tools: Mapping[str, ToolSpec] = {}
    try:
        tools = parse_tools(raw.get("tools", {}))
    except ConfigError as exc:
        problems.extend(exc.problems)
    if "vatel" in sections:
        problems.extend(_check_vatel(sections["vatel"]))
    if problems:
        raise ConfigError(problems)
    cfg = Config(**sections, tools=tools, path=path)
    cross = _check_cross(cfg)
    if cross:
        raise ConfigError(cross)
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.__class__.__name__}") from None
    return loads_config(text, str(p))


def loads_config(text: str, path: str | None = None) -> Config:
    """Validate TOML text; syntax errors carry line and column."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = path or "<config>"
        raise ConfigError(f"{where}: TOML syntax error: {exc}") from None
    return config_from_dict(raw, path)


# --------------------------------------------------------------------------- the API key


def read_api_key(vatel: VatelConfig, environ: Mapping[str, str] | None = None) -> str:
    """The organization key, from the env var, the key file, or systemd's credential directory.

    A key file readable by group or others is refused. The key itself never appears in errors.
    """
    env = os.environ if environ is None else environ
    candidates: list[tuple[str, Path]] = []
    if vatel.api_key_file:
        candidates.append(("vatel.api_key_file", Path(vatel.api_key_file)))
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        candidates.append(("$CREDENTIALS_DIRECTORY", Path(cred_dir) / CREDENTIAL_NAME))
    for label, path in candidates:
        if not path.exists():
            if label == "vatel.api_key_file":
                raise ConfigError(f"vatel.api_key_file: {path} does not exist")
            continue
        mode = path.stat().st_mode
        if label == "vatel.api_key_file" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"vatel.api_key_file: {path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
            )
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key
        raise ConfigError(f"{label}: {path} is empty")
    key = env.get(vatel.api_key_env, "").strip()
    if key:
        return key
    raise ConfigError(
        f"vatel.api_key_env: environment variable {vatel.api_key_env} is not set "
        "(and no vatel.api_key_file or systemd credential was found)"
    )
