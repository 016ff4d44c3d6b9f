"""Configuration: TOML into frozen dataclasses, one per section, validated before anything starts.

Every error names the key path and the problem; unknown keys are errors with a "did you mean".
The field metadata (doc, choices, min, max) is the single source of the README's config reference.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from vatel_edge.errors import ConfigError

if typing.TYPE_CHECKING:
    from vatel_edge.tools.spec import ToolSpec

DEFAULT_CONFIG_PATH = "/etc/vatel-edge/config.toml"
CREDENTIAL_NAME = "org_api_key"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
#: A key file is a line of text; anything bigger is not a key file (and is not read into memory).
_MAX_KEY_FILE_BYTES = 64 * 1024
#: Longest string echoed back in an error message.
_MAX_SHOWN_CHARS = 60
#: TOML basic-string escapes used when a string is echoed in a message.
_STRING_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


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
        "server",
        "Who cuts agent audio on barge-in: server (its interruption), local (also the local VAD on the "
        "echo-cancelled mic; needs an echo canceller) or both (same as local).",
        choices=("server", "local", "both"),
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
    """' (did you mean "x"?)' when a close match exists (case-insensitively first), else ''."""
    known = list(known)
    for k in known:
        if k.lower() == key.lower() and k != key:
            return f' (did you mean "{k}"?)'
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""


def _toml_string(s: str) -> str:
    """A TOML basic string; every non-printable character escaped, so a message stays one line."""
    out = []
    for c in s:
        if c in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[c])
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def describe_value(value: object) -> str:
    """A value as it reads in TOML, for error messages.

    Strings are quoted and escaped (a problem is always one line) and long ones are shortened.
    """
    if isinstance(value, str):
        if len(value) > _MAX_SHOWN_CHARS:
            return _toml_string(value[: _MAX_SHOWN_CHARS - 3] + "...") + f" ({len(value)} characters)"
        return _toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _key_path(parent: str, key: str) -> str:
    """`parent.key`, quoting a key that is not a TOML bare key (keeps every problem on one line)."""
    shown = key if _BARE_KEY.match(key) else _toml_string(key)
    return f"{parent}.{shown}" if parent else shown


def _type_name(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(tp, str(tp))


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the scalar type, optional?) of a field annotation such as `str | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _shown(value: object, meta: Mapping[str, Any]) -> str:
    """describe_value, unless the field must never echo its value (see opt(echo=False))."""
    if meta.get("echo", True):
        return describe_value(value)
    if isinstance(value, str):
        return f"a {len(value)}-character string (not shown)"
    return describe_value(value)


def coerce_field(path: str, value: object, annotation: Any, meta: Mapping[str, Any]) -> Any:
    """Check one value against its field's type and rules; return it (ints widen to float)."""
    tp, optional = _base_type(annotation)
    if value is None and optional:
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    lo, hi = meta.get("min"), meta.get("max")
    if (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
        expected = _type_name(tp)
        if lo is not None and hi is not None:
            expected += f" {lo}..{hi}"
        hint = ""
        if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            hint = f' (write it quoted: "{value}")'
        raise ConfigError(f"{path}: expected {expected}, got {_shown(value, meta)}{hint}")
    if isinstance(value, float) and math.isnan(value):
        expected = _type_name(tp) + (f" {lo}..{hi}" if lo is not None and hi is not None else "")
        raise ConfigError(f"{path}: expected {expected}, got nan")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        shown = " | ".join(describe_value(c) for c in choices)
        hint = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise ConfigError(f"{path}: expected one of {shown}, got {_shown(value, meta)}{hint}")
    if isinstance(value, (int, float)) and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        raise ConfigError(f"{path}: expected {_type_name(tp)} {lo}..{hi}, got {_shown(value, meta)}")
    # An empty required key is reported as missing by parse_section, not as a bad UUID.
    if meta.get("uuid") and isinstance(value, str) and not _UUID.match(value) and (value or not meta.get("required")):
        raise ConfigError(f"{path}: expected a UUID, got {_shown(value, meta)}")
    pattern = meta.get("pattern")
    if pattern is not None and isinstance(value, str) and not re.fullmatch(pattern, value):
        expected = meta.get("pattern_doc", f"a string matching {pattern}")
        raise ConfigError(f"{path}: expected {expected}, got {_shown(value, meta)}")
    return value


def parse_section(name: str, cls: type[Any], raw: object) -> Any:
    """Build one section dataclass from its TOML table, collecting every problem."""
    section, problems, _ = _parse_section_partial(name, cls, raw)
    if problems:
        raise ConfigError(problems)
    return section


def _parse_section_partial(name: str, cls: type[Any], raw: object) -> tuple[Any, list[str], set[str]]:
    """(the section built from its valid keys or None, the problems, the failed key paths).

    The partial section lets checks between keys run on keys that are fine while others are not.
    """
    if not isinstance(raw, dict):
        return None, [f"{name}: expected a table, got {describe_value(raw)}"], {name}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems: list[str] = []
    failed: set[str] = set()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = _key_path(name, str(key))
        if key not in fields:
            problems.append(f"{path}: unknown key{did_you_mean(str(key), fields)}")
            continue
        try:
            values[key] = coerce_field(path, value, hints[key], fields[key].metadata)
        except ConfigError as exc:
            problems.extend(exc.problems)
            failed.add(path)
    for fname, f in fields.items():
        if not f.metadata.get("required"):
            continue
        if fname not in raw:
            problems.append(f"{name}.{fname}: required key is missing")
            failed.add(f"{name}.{fname}")
        elif fname in values and not values[fname]:
            problems.append(f"{name}.{fname}: required key is empty")
            failed.add(f"{name}.{fname}")
    return cls(**values), problems, failed


def _is_loopback(host: str) -> bool:
    if host.rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_vatel(v: VatelConfig) -> list[str]:
    """The base URL: http(s), a host, no credentials, plain http only to loopback unless allowed."""
    shown = describe_value(v.base_url)
    try:
        parts = urlsplit(v.base_url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return [f"vatel.base_url: expected an http(s) URL, got {shown} ({exc})"]
    if parts.scheme not in ("https", "http") or not hostname:
        return [f"vatel.base_url: expected an http(s) URL, got {shown}"]
    if parts.username is not None or parts.password is not None:
        # Not echoed: the URL carries a secret.
        return ["vatel.base_url: must not contain user:password@ (the key goes in vatel.api_key_env or a key file)"]
    if parts.query or parts.fragment:
        return [f"vatel.base_url: must not have a query or fragment, got {shown}"]
    if parts.scheme == "http" and not v.allow_insecure and not _is_loopback(hostname):
        return [
            f"vatel.base_url: plain http (and so ws://) to non-loopback host {hostname!r} is refused; "
            "use https, or set vatel.allow_insecure = true"
        ]
    return []


def _check_cross(sections: Mapping[str, Any], failed: set[str]) -> list[str]:
    """Checks between keys; each runs only when every key it reads is valid (or defaulted)."""

    def ok(*paths: str) -> bool:
        return not any(p in failed or p.split(".")[0] in failed for p in paths)

    def get(name: str) -> Any:
        return sections[name] if name in sections else SECTIONS[name]()

    problems: list[str] = []
    vatel: VatelConfig = get("vatel")
    if ok("vatel.base_url", "vatel.allow_insecure"):
        problems.extend(_check_vatel(vatel))
    if ok("vatel.token_refresh_margin_s", "vatel.token_ttl_s") and vatel.token_refresh_margin_s >= vatel.token_ttl_s:
        problems.append(
            f"vatel.token_refresh_margin_s: {vatel.token_refresh_margin_s} must be shorter than "
            f"vatel.token_ttl_s ({vatel.token_ttl_s}); every token would be stale on arrival"
        )
    wake: WakeConfig = get("wake")
    if ok("wake.min_speech_ms", "wake.window_ms") and wake.min_speech_ms > wake.window_ms:
        problems.append(
            f"wake.min_speech_ms: {wake.min_speech_ms} is longer than wake.window_ms "
            f"({wake.window_ms}); the VAD could never wake"
        )
    if ok("wake.mode", "wake.button_line") and wake.mode == "button" and not wake.button_line:
        problems.append('wake.button_line: required when wake.mode = "button"')
    audio: AudioConfig = get("audio")
    if (
        ok("audio.playback_buffer_ms", "audio.playback_period_ms")
        and audio.playback_buffer_ms < 2 * audio.playback_period_ms
    ):
        problems.append(
            f"audio.playback_buffer_ms: {audio.playback_buffer_ms} must be at least two "
            f"periods (audio.playback_period_ms = {audio.playback_period_ms})"
        )
    return problems


def _unknown_top_level(key: str, value: object) -> str:
    """The problem for a top-level key that is no section; points at the section a stray key belongs to."""
    known = [*SECTIONS, "tools"]
    path = _key_path("", key)
    if isinstance(value, dict):
        return f"{path}: unknown section{did_you_mean(key, known)}"
    owners = [name for name, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if owners:
        return (
            f"{path}: unknown top-level key; it belongs under [{owners[0]}] "
            "(keys above the first [section] header are top-level)"
        )
    return f"{path}: unknown top-level key{did_you_mean(key, known)}; settings go in a [section]"


def config_from_dict(raw: Mapping[str, Any], path: str | None = None) -> Config:
    """Validate a parsed TOML document into a Config; ConfigError lists every problem."""
    from vatel_edge.tools.spec import parse_tools

    problems: list[str] = []
    sections: dict[str, Any] = {}
    failed: set[str] = set()
    for key, value in raw.items():
        if key not in SECTIONS and key != "tools":
            problems.append(_unknown_top_level(str(key), value))
    for name, cls in SECTIONS.items():
        if name not in raw and name != "vatel":
            continue
        section, section_problems, section_failed = _parse_section_partial(name, cls, raw.get(name, {}))
        if section is not None:
            sections[name] = section
        problems.extend(section_problems)
        failed |= section_failed
    tools: Mapping[str, ToolSpec] = {}
    try:
        tools = parse_tools(raw.get("tools", {}))
    except ConfigError as exc:
        problems.extend(exc.problems)
    problems.extend(_check_cross(sections, failed))
    if problems:
        raise ConfigError(problems)
    return Config(**sections, tools=tools, path=path)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    return loads_config(_decode_config(p, _read_config_bytes(p)), str(path))


def _read_config_bytes(p: Path) -> bytes:
    """The file's bytes; ConfigError when it is missing or unreadable."""
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc.__class__.__name__}") from None


def _decode_config(p: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (bad byte at offset {exc.start})") from None


_TOML_POSITION = re.compile(r"^(?P<what>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$", re.DOTALL)


def loads_config(text: str, path: str | None = None) -> Config:
    """Validate TOML text; syntax errors carry line and column."""
    where = path or "<config>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_POSITION.match(str(exc))
        if m:
            raise ConfigError(
                f"{where}: TOML syntax error at line {m['line']}, column {m['col']}: {m['what']}"
            ) from None
        raise ConfigError(f"{where}: TOML syntax error: {exc}") from None
    except ValueError as exc:  # tomllib lets int() refuse a literal of more than 4300 digits
        raise ConfigError(f"{where}: TOML value out of range: {str(exc).split(':')[0]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: TOML syntax error: arrays or tables nested too deeply") from None
    return config_from_dict(raw, path)


# --------------------------------------------------------------------------- the API key


def _read_key_file(label: str, path: Path) -> str:
    """Read a key file: a regular file, not group/other accessible when `label` is the config key."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang start-up (regular files ignore it).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot open {path}: {exc.strerror or exc.__class__.__name__}") from None
    try:
        st = os.fstat(fd)  # the file we opened, not whatever the path names a moment later
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{label}: {path} is not a regular file")
        if label == "vatel.api_key_file" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"vatel.api_key_file: {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it: chmod 600 it"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= _MAX_KEY_FILE_BYTES:
            chunk = os.read(fd, _MAX_KEY_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror or exc.__class__.__name__}") from None
    finally:
        os.close(fd)
    if size > _MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{label}: {path} is larger than {_MAX_KEY_FILE_BYTES} bytes; not a key file")
    try:
        return b"".join(chunks).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: {path} is not UTF-8 text") from None


def _check_key_text(label: str, key: str) -> str:
    """A key goes into an HTTP header: printable ASCII, no spaces (HTTP libraries echo bad headers)."""
    if not all("!" <= c <= "~" for c in key):
        raise ConfigError(f"{label}: the key contains spaces, line breaks or non-ASCII characters (not shown)")
    return key


def read_api_key(vatel: VatelConfig, environ: Mapping[str, str] | None = None) -> str:
    """The organization key, from the key file, systemd's credential directory, or the env var (in that order).

    A key file accessible by group or others is refused. The key itself never appears in errors.
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
        key = _read_key_file(label, path)
        if key:
            return _check_key_text(label, key)
        raise ConfigError(f"{label}: {path} is empty")
    key = env.get(vatel.api_key_env, "").strip()
    if key:
        return _check_key_text(f"${vatel.api_key_env}", key)
    raise ConfigError(
        f"vatel.api_key_env: environment variable {vatel.api_key_env} is not set "
        "(and no vatel.api_key_file or systemd credential was found)"
    )


# --------------------------------------------------------------------------- check-config


def check_config_command(
    path: str, out: TextIO, err: TextIO, *, environ: Mapping[str, str] | None = None
) -> int:
    """`vatel-edge check-config`: 0 valid (summary on `out`), 2 invalid, 1 file missing or unreadable.

    Problems go to `err`, one per line; an unavailable API key is one of them (the key is never printed).
    """
    try:
        data = _read_config_bytes(Path(path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return 1
    problems: list[str] = []
    cfg: Config | None = None
    vatel: VatelConfig | None = None
    text = ""
    try:
        text = _decode_config(Path(path), data)
        cfg = loads_config(text, path)
        vatel = cfg.vatel
    except ConfigError as exc:
        problems.extend(exc.problems)
        vatel = _vatel_alone(text)
    if vatel is not None:
        try:
            read_api_key(vatel, environ)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems or cfg is None:
        for problem in problems:
            print(problem, file=err)
        print(f"INVALID: {path} ({len(problems)} problem{'s' if len(problems) != 1 else ''})", file=err)
        return 2
    print(f"OK: {path}", file=out)
    print(f"  agent:    {cfg.vatel.agent_id}", file=out)
    print(f"  base_url: {cfg.vatel.base_url}", file=out)
    print(f"  wake:     {cfg.wake.mode}", file=out)
    print(f"  devices:  capture={cfg.audio.capture_device} playback={cfg.audio.playback_device}", file=out)
    print(f"  tools:    {len(cfg.tools)}", file=out)
    return 0


def _vatel_alone(text: str) -> VatelConfig | None:
    """[vatel] built from its valid keys when the key settings are fine (to check the key in a broken config)."""
    try:
        raw = tomllib.loads(text)
    except (ValueError, RecursionError):  # TOMLDecodeError is a ValueError; already reported
        return None
    vatel, _, failed = _parse_section_partial("vatel", VatelConfig, raw.get("vatel", {}))
    if vatel is None or failed & {"vatel.api_key_env", "vatel.api_key_file"}:
        return None
    return typing.cast(VatelConfig, vatel)
