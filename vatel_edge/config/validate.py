"""Validation helpers shared by every part of the config: value checks, one-line messages, and `Problems`.

Every problem is one line "key.path: what is wrong"; all of them are collected and reported at once
(ConfigError carries the list). The [tools] tables (tools.py) use the same collector. No I/O here.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

from vatel_edge.config.schema import SECTIONS, AudioConfig, MqttConfig, VatelConfig, WakeConfig
from vatel_edge.errors import ConfigError

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
#: Longest string echoed back in an error message.
_MAX_SHOWN_CHARS = 60
#: TOML basic-string escapes used when a string is echoed in a message.
_STRING_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


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


def key_path(parent: str, key: str) -> str:
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
    if typing.get_origin(tp) is tuple:
        return _string_array(path, value, meta)
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


def _string_array(path: str, value: object, meta: Mapping[str, Any]) -> tuple[str, ...]:
    """An array of non-empty strings (a `tuple[str, ...]` field), as a tuple."""
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected an array of strings, got {_shown(value, meta)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{path}[{i}]: expected a non-empty string, got {_shown(item, meta)}")
    return tuple(value)


def parse_section(name: str, cls: type[Any], raw: object) -> Any:
    """Build one section dataclass from its TOML table, collecting every problem."""
    problems = Problems()
    section, _ = parse_section_partial(name, cls, raw, problems)
    problems.raise_if_any()
    return section


def parse_section_partial(name: str, cls: type[Any], raw: object, problems: Problems) -> tuple[Any, set[str]]:
    """(the section built from its valid keys or None, the failed key paths); problems go to `problems`.

    The partial section lets checks between keys run on keys that are fine while others are not.
    """
    if not isinstance(raw, dict):
        problems.add(name, f"expected a table, got {describe_value(raw)}")
        return None, {name}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    failed: set[str] = set()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = key_path(name, str(key))
        if key not in fields:
            problems.add(path, f"unknown key{did_you_mean(str(key), fields)}")
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
            problems.add(f"{name}.{fname}", "required key is missing")
            failed.add(f"{name}.{fname}")
        elif fname in values and not values[fname]:
            problems.add(f"{name}.{fname}", "required key is empty")
            failed.add(f"{name}.{fname}")
    return cls(**values), failed


def _is_loopback(host: str) -> bool:
    if host.rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_url(key: str, url: str, schemes: tuple[str, ...], expected: str,
               credentials: str) -> tuple[SplitResult, str] | str:
    """`url` split, with its hostname; or the problem with `key`: not one of `schemes`, no host, a bad port,
    user:password@ (not echoed: the URL carries a secret; `credentials` says where they go instead)."""
    shown = describe_value(url)
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"{key}: expected {expected}, got {shown} ({exc})"
    if parts.scheme not in schemes or not hostname:
        return f"{key}: expected {expected}, got {shown}"
    if parts.username is not None or parts.password is not None:
        return f"{key}: must not contain user:password@ ({credentials})"
    return parts, hostname


def _check_vatel(v: VatelConfig) -> list[str]:
    """The base URL: http(s), a host, no credentials, plain http only to loopback unless allowed."""
    split = _split_url("vatel.base_url", v.base_url, ("https", "http"), "an http(s) URL",
                       "the key goes in vatel.api_key_env or a key file")
    if isinstance(split, str):
        return [split]
    parts, hostname = split
    if parts.query or parts.fragment:
        return [f"vatel.base_url: must not have a query or fragment, got {describe_value(v.base_url)}"]
    if parts.scheme == "http" and not v.allow_insecure and not _is_loopback(hostname):
        return [
            f"vatel.base_url: plain http (and so ws://) to non-loopback host {hostname!r} is refused; "
            "use https, or set vatel.allow_insecure = true"
        ]
    return []


def _check_mqtt(m: MqttConfig) -> list[str]:
    """The broker URL: mqtt(s)://HOST[:PORT], no credentials; plain mqtt only to loopback unless allowed."""
    split = _split_url("mqtt.url", m.url, ("mqtts", "mqtt"), "mqtts://HOST[:PORT] or mqtt://HOST[:PORT]",
                       "use mqtt.username and mqtt.password_file")
    if isinstance(split, str):
        return [split]
    parts, hostname = split
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return [f"mqtt.url: must not have a path, query or fragment, got {describe_value(m.url)}"]
    problems = []
    if parts.scheme == "mqtt" and not m.allow_insecure and not _is_loopback(hostname):
        problems.append(f"mqtt.url: plain mqtt:// to non-loopback host {hostname!r} is refused; use mqtts://, or "
                        "set mqtt.allow_insecure = true")
    if parts.scheme == "mqtt" and (m.ca_file or m.client_cert or m.client_key):
        problems.append("mqtt.url: mqtt.ca_file, client_cert and client_key need an mqtts:// URL")
    if bool(m.client_cert) != bool(m.client_key):
        problems.append("mqtt.client_cert: client_cert and client_key go together")
    return problems


def check_cross(sections: Mapping[str, Any], failed: set[str], problems: Problems) -> None:
    """Checks between keys; each runs only when every key it reads is valid (or defaulted)."""

    def ok(*paths: str) -> bool:
        return not any(p in failed or p.split(".")[0] in failed for p in paths)

    def get(name: str) -> Any:
        return sections[name] if name in sections else SECTIONS[name]()

    vatel: VatelConfig = get("vatel")
    if ok("vatel.base_url", "vatel.allow_insecure"):
        problems.extend(_check_vatel(vatel))
    if ok("vatel.token_refresh_margin_s", "vatel.token_ttl_s") and vatel.token_refresh_margin_s >= vatel.token_ttl_s:
        problems.add(
            "vatel.token_refresh_margin_s",
            f"{vatel.token_refresh_margin_s} must be shorter than vatel.token_ttl_s ({vatel.token_ttl_s}); "
            "every token would be stale on arrival",
        )
    wake: WakeConfig = get("wake")
    if ok("wake.min_speech_ms", "wake.window_ms") and wake.min_speech_ms > wake.window_ms:
        problems.add(
            "wake.min_speech_ms",
            f"{wake.min_speech_ms} is longer than wake.window_ms ({wake.window_ms}); the VAD could never wake",
        )
    if ok("wake.mode", "wake.button_line") and wake.mode == "button" and not wake.button_line:
        problems.add("wake.button_line", 'required when wake.mode = "button"')
    mqtt: MqttConfig = get("mqtt")
    if ok("mqtt.url", "mqtt.allow_insecure", "mqtt.ca_file", "mqtt.client_cert", "mqtt.client_key"):
        problems.extend(_check_mqtt(mqtt))
    audio: AudioConfig = get("audio")
    if (
        ok("audio.playback_buffer_ms", "audio.playback_period_ms")
        and audio.playback_buffer_ms < 2 * audio.playback_period_ms
    ):
        problems.add(
            "audio.playback_buffer_ms",
            f"{audio.playback_buffer_ms} must be at least two periods "
            f"(audio.playback_period_ms = {audio.playback_period_ms})",
        )


def unknown_top_level(key: str, value: object) -> str:
    """The problem for a top-level key that is no section; points at the section a stray key belongs to."""
    known = [*SECTIONS, "tools"]
    path = key_path("", key)
    if isinstance(value, dict):
        return f"{path}: unknown section{did_you_mean(key, known)}"
    owners = [name for name, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if owners:
        return (
            f"{path}: unknown top-level key; it belongs under [{owners[0]}] "
            "(keys above the first [section] header are top-level)"
        )
    return f"{path}: unknown top-level key{did_you_mean(key, known)}; settings go in a [section]"


class Problems:
    """Collects one-line "path: what is wrong" problems; typed getters record a problem and return None.

    One collector for the whole config: the sections, the checks between keys and the [tools] tables.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __len__(self) -> int:
        return len(self.lines)

    def add(self, path: str, what: str) -> None:
        """One problem at `path`."""
        # Names and keys come from the file: keep one problem on one line whatever they hold.
        if not path.isprintable():
            path = path.encode("unicode_escape").decode("ascii")
        self.lines.append(f"{path}: {what}")

    def extend(self, lines: Iterable[str]) -> None:
        """Problems already written as lines (e.g. those of a ConfigError)."""
        self.lines.extend(lines)

    def raise_if_any(self) -> None:
        """ConfigError listing every problem, if there is one."""
        if self.lines:
            raise ConfigError(self.lines)

    def number(self, path: str, value: object, lo: float, hi: float, *, integer: bool = False) -> Any:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or not lo <= value <= hi:  # type: ignore[operator]
            kind = "an integer" if integer else "a number"
            self.add(path, f"expected {kind} {number_text(lo)}..{number_text(hi)}, got {describe_value(value)}")
            return None
        return float(value) if not integer else value  # type: ignore[arg-type]

    def boolean(self, path: str, value: object) -> bool | None:
        if not isinstance(value, bool):
            self.add(path, f"expected a boolean, got {describe_value(value)}")
            return None
        return value

    def string(self, path: str, value: object, *, empty: bool = False) -> str | None:
        if not isinstance(value, str) or (not empty and not value):
            self.add(path, f"expected a non-empty string, got {describe_value(value)}")
            return None
        return value

    def choice(self, path: str, value: object, choices: tuple[str, ...]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            shown = " | ".join(f'"{c}"' for c in choices)
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            self.add(path, f"expected one of {shown}, got {describe_value(value)}{hint}")
            return None
        return value

    def string_list(self, path: str, value: object, *, nonempty: bool = False) -> list[str] | None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (nonempty and not value):
            what = "a non-empty array of strings" if nonempty else "an array of strings"
            self.add(path, f"expected {what}, got {describe_value(value)}")
            return None
        return list(value)

    def string_table(self, path: str, value: object) -> dict[str, str] | None:
        if not isinstance(value, dict):
            self.add(path, f"expected a table of strings, got {describe_value(value)}")
            return None
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str):
                self.add(f"{path}.{k}", f"expected a string, got {describe_value(v)}")
            else:
                out[k] = v
        return out


def number_text(x: float) -> str:
    """A bound as written in a message: 5 rather than 5.0."""
    return str(int(x)) if float(x).is_integer() else str(x)
