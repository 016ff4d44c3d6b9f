"""Tool specifications: the [tools.NAME] tables of the config, validated into frozen dataclasses.

Every problem is one line "tools.NAME.key: what is wrong"; all problems of all tools are collected
(the config's one `Problems` collector). Running the tools is vatel_edge.tools; this is only their config.
Placeholders `{arg}` in argv, value, url and json are parsed here (`Template`) and must name a
declared argument. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from vatel_edge.config.validate import Problems, describe_value, did_you_mean, number_text
from vatel_edge.errors import ConfigError
from vatel_edge.tools.args import ARG_TYPES, ArgSpec, ArgumentError, coerce_argument

ACTIONS = ("gpio", "shell", "http", "builtin")
BUILTINS = ("set_volume", "end_session", "device_status")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BIASES = ("as_is", "pull_up", "pull_down", "disabled")
ON_EXIT = ("inactive", "keep")
MAX_LINE_OFFSET = 511
_OUTPUT_CAP = (64, 1 << 20)  # max_output_bytes bounds
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_OUTPUT_BYTES = 4096
DEFAULT_KILL_GRACE_S = 2.0

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL_AUTHORITY = re.compile(r"https?://[^/?#{}]+[/?#]", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

COMMON_KEYS = ("action", "description", "timeout_s", "cancel_on_interruption", "args")
ACTION_KEYS: dict[str, tuple[str, ...]] = {
    "gpio": ("chip", "line", "value", "pulse_ms", "active_low", "read", "states", "bias", "on_exit"),
    "shell": ("argv", "cwd", "env_pass", "max_output_bytes", "kill_grace_s"),
    "http": ("method", "url", "json", "headers", "headers_env", "max_output_bytes"),
    "builtin": ("name",),
}
ARG_KEYS = ("type", "description", "required", "default", "choices", "min", "max", "pattern", "max_length")

#: The fixed arguments of the built-in actions.
BUILTIN_ARGS: dict[str, dict[str, ArgSpec]] = {
    "set_volume": {
        "level": ArgSpec("level", "integer", min=0, max=100, description="Speaker volume in percent (0-100)."),
    },
    "end_session": {},
    "device_status": {},
}


@dataclass(frozen=True)
class Placeholder:
    """`{name}` inside a template: replaced by the validated argument `name`."""

    name: str


@dataclass(frozen=True)
class Template:
    """A config string with `{arg}` placeholders; `{{` and `}}` are literal braces."""

    parts: tuple[str | Placeholder, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[str | Placeholder] = []
        literal: list[str] = []
        pos = 0
        for m in _TOKEN.finditer(text):
            literal.append(text[pos : m.start()])
            pos = m.end()
            if m.group(1) is None:
                literal.append(m.group(0)[0])
                continue
            if "".join(literal):
                parts.append("".join(literal))
            literal = []
            parts.append(Placeholder(m.group(1)))
        literal.append(text[pos:])
        if "".join(literal):
            parts.append("".join(literal))
        return cls(tuple(parts))

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if isinstance(p, Placeholder))

    @property
    def whole(self) -> str | None:
        """The argument name when the template is exactly one placeholder, else None."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Placeholder):
            return self.parts[0].name
        return None

    def render(self, values: Mapping[str, Any], encode: Callable[[Any], str]) -> str:
        """The text with each placeholder replaced by encode(value)."""
        return "".join(p if isinstance(p, str) else encode(values[p.name]) for p in self.parts)


def render_json(template: Any, values: Mapping[str, Any], encode: Callable[[Any], str]) -> Any:
    """A JSON template (tables, arrays, Templates, literals) with arguments filled in.

    A string that is exactly one placeholder keeps the argument's JSON type; embedded placeholders
    are rendered as text.
    """
    if isinstance(template, Template):
        whole = template.whole
        if whole is not None:
            return values[whole]
        return template.render(values, encode)
    if isinstance(template, Mapping):
        return {k: render_json(v, values, encode) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return [render_json(v, values, encode) for v in template]
    return template


@dataclass(frozen=True)
class GpioSpec:
    """action = "gpio": set, pulse or read one line."""

    chip: str
    line: int | str
    mode: str  # "set" | "pulse" | "read"
    value: bool | Placeholder | None = None
    pulse_ms: int | None = None
    active_low: bool = False
    states: tuple[str, str] | None = None
    bias: str = "as_is"
    on_exit: str = "inactive"

    @property
    def is_output(self) -> bool:
        return self.mode != "read"

    @property
    def line_key(self) -> tuple[str, int | str]:
        return (self.chip, self.line)


@dataclass(frozen=True)
class ShellSpec:
    """action = "shell": run argv (no shell), arguments as JSON on stdin."""

    argv: tuple[Template, ...]
    cwd: str = "/"
    env_pass: tuple[str, ...] = ()
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    kill_grace_s: float = DEFAULT_KILL_GRACE_S


@dataclass(frozen=True)
class HttpSpec:
    """action = "http": one request with httpx."""

    method: str
    url: Template
    json: Any = None  # a JSON template, or None for no body
    has_json: bool = False
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    headers_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES


@dataclass(frozen=True)
class BuiltinSpec:
    """action = "builtin": set_volume, end_session or device_status through the ToolContext."""

    name: str


ActionSpec = GpioSpec | ShellSpec | HttpSpec | BuiltinSpec


@dataclass(frozen=True)
class ToolSpec:
    """One configured tool, named as the agent calls it."""

    name: str
    action: str
    params: ActionSpec
    args: Mapping[str, ArgSpec] = field(default_factory=lambda: MappingProxyType({}))
    description: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    cancel_on_interruption: bool = False


# --------------------------------------------------------------------------- parsing helpers


class _ToolProblems(Problems):
    """The config's collector, plus the arguments of the current tool that are declared but invalid."""

    def __init__(self) -> None:
        super().__init__()
        #: Arguments of the current tool that are declared but invalid (already reported).
        self.bad_args: set[str] = set()


def _output_cap(p: _ToolProblems, path: str, value: object) -> int | None:
    lo, hi = _OUTPUT_CAP
    result: int | None = p.number(f"{path}.max_output_bytes", value, lo, hi, integer=True)
    return result


def _check_placeholders(
    p: _ToolProblems, path: str, template: Template, args: Mapping[str, ArgSpec]
) -> None:
    for name in template.placeholders:
        spec = args.get(name)
        if spec is None and name in p.bad_args:
            continue
        if spec is None:
            p.add(path, f"placeholder {{{name}}} does not name a declared argument{did_you_mean(name, args)}")
        elif not spec.required and spec.default is None:
            p.add(path, f"placeholder {{{name}}} refers to optional argument {name} without a default; give it one")


def _json_template(p: _ToolProblems, path: str, value: Any, args: Mapping[str, ArgSpec]) -> Any:
    if isinstance(value, str):
        template = Template.parse(value)
        _check_placeholders(p, path, template, args)
        return template if template.placeholders else value
    if isinstance(value, dict):
        return {k: _json_template(p, f"{path}.{k}", v, args) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_template(p, f"{path}[{i}]", v, args) for i, v in enumerate(value)]
    if isinstance(value, (bool, int, float)):
        return value
    p.add(path, f"expected a JSON value, got {type(value).__name__}")
    return None


# --------------------------------------------------------------------------- args


def _parse_arg(p: _ToolProblems, path: str, name: str, raw: object) -> ArgSpec | None:
    if not _IDENT.fullmatch(name):
        p.add(path, "argument names must be identifiers (letters, digits, _; not starting with a digit)")
        return None
    if not isinstance(raw, dict):
        p.add(path, f"expected a table, got {describe_value(raw)}")
        return None
    before = len(p.lines)
    for key in raw:
        if key not in ARG_KEYS:
            p.add(f"{path}.{key}", f"unknown key{did_you_mean(key, ARG_KEYS)}")
    atype = p.choice(f"{path}.type", raw.get("type", "string"), ARG_TYPES) or "string"
    kw: dict[str, Any] = {"name": name, "type": atype}
    if "description" in raw:
        kw["description"] = p.string(f"{path}.description", raw["description"], empty=True) or ""
    if "choices" in raw:
        if atype != "enum":
            p.add(f"{path}.choices", 'only applies to type = "enum"')
        else:
            choices = p.string_list(f"{path}.choices", raw["choices"], nonempty=True)
            if choices is not None:
                if len(set(choices)) != len(choices):
                    p.add(f"{path}.choices", "has duplicates")
                kw["choices"] = tuple(choices)
    elif atype == "enum":
        p.add(f"{path}.choices", 'required for type = "enum"')
    for key in ("min", "max"):
        if key in raw:
            if atype not in ("integer", "number"):
                p.add(f"{path}.{key}", 'only applies to type = "integer" or "number"')
            else:
                kw[key] = p.number(f"{path}.{key}", raw[key], -1e300, 1e300, integer=atype == "integer")
    if kw.get("min") is not None and kw.get("max") is not None and kw["min"] > kw["max"]:
        p.add(f"{path}.min", f"{number_text(kw['min'])} is greater than max ({number_text(kw['max'])})")
    for key in ("pattern", "max_length"):
        if key in raw and atype != "string":
            p.add(f"{path}.{key}", 'only applies to type = "string"')
    if "pattern" in raw and atype == "string":
        pattern = p.string(f"{path}.pattern", raw["pattern"])
        if pattern is not None:
            try:
                re.compile(pattern)
                kw["pattern"] = pattern
            except re.error as exc:
                p.add(f"{path}.pattern", f"not a valid regular expression: {exc}")
    if "max_length" in raw and atype == "string":
        kw["max_length"] = p.number(f"{path}.max_length", raw["max_length"], 1, 1 << 20, integer=True)
    required = raw.get("required")
    if required is not None:
        required = p.boolean(f"{path}.required", required)
    has_default = "default" in raw
    if required is True and has_default:
        p.add(f"{path}.required", "true contradicts the default (an argument with a default is optional)")
    kw["required"] = not has_default if required is None else required
    if len(p.lines) > before:
        return None
    spec = ArgSpec(**kw)
    if has_default:
        default = raw["default"]
        if not _default_matches(atype, default):
            p.add(f"{path}.default", f"expected a value of type {atype}, got {describe_value(default)}")
            return None
        try:
            return ArgSpec(**{**kw, "default": coerce_argument(spec, default)})
        except ArgumentError as exc:
            p.add(f"{path}.default", str(exc).removeprefix(f"argument {name}: "))
            return None
    return spec


def _default_matches(atype: str, value: object) -> bool:
    if atype == "boolean":
        return isinstance(value, bool)
    if atype == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if atype == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def _parse_args(p: _ToolProblems, path: str, raw: object) -> dict[str, ArgSpec]:
    if not isinstance(raw, dict):
        p.add(path, f"expected a table of argument tables, got {describe_value(raw)}")
        return {}
    out: dict[str, ArgSpec] = {}
    for name, table in raw.items():
        spec = _parse_arg(p, f"{path}.{name}", name, table)
        if spec is not None:
            out[name] = spec
    return out


# --------------------------------------------------------------------------- actions


def _parse_gpio(p: _ToolProblems, path: str, raw: Mapping[str, Any], args: dict[str, ArgSpec]) -> GpioSpec | None:
    before = len(p.lines)
    chip = p.string(f"{path}.chip", raw["chip"]) if "chip" in raw else None
    if "chip" not in raw:
        p.add(f"{path}.chip", "required key is missing")
    line: int | str | None = None
    if "line" not in raw:
        p.add(f"{path}.line", "required key is missing")
    else:
        rline = raw["line"]
        if isinstance(rline, int) and not isinstance(rline, bool) and 0 <= rline <= MAX_LINE_OFFSET:
            line = rline
        elif isinstance(rline, str) and rline.strip():
            line = int(rline) if rline.isdigit() and int(rline) <= MAX_LINE_OFFSET else rline
        else:
            p.add(
                f"{path}.line",
                f"expected an integer 0..{MAX_LINE_OFFSET} or a line name, got {describe_value(rline)}",
            )
    read = p.boolean(f"{path}.read", raw["read"]) if "read" in raw else False
    modes = [k for k in ("value", "pulse_ms") if k in raw] + (["read"] if read else [])
    if len(modes) != 1:
        what = "none" if not modes else " and ".join(modes)
        p.add(path, f'give exactly one of value, pulse_ms or read = true (got {what})')
        return None
    mode = {"value": "set", "pulse_ms": "pulse", "read": "read"}[modes[0]]
    kw: dict[str, Any] = {"mode": mode}
    if mode == "set":
        value = raw["value"]
        if isinstance(value, bool):
            kw["value"] = value
        elif isinstance(value, str) and (name := Template.parse(value).whole) is not None:
            declared = args.get(name)
            if declared is None and name in p.bad_args:
                pass  # its declaration is already reported
            elif declared is None:
                # `value = "{on}"` declares a required boolean argument `on` by itself.
                args[name] = ArgSpec(name, "boolean", description="Drive the line active (true) or inactive (false).")
            elif declared.type != "boolean":
                p.add(f"{path}.value", f"placeholder {{{name}}} must refer to a boolean argument, not {declared.type}")
            elif not declared.required and declared.default is None:
                p.add(f"{path}.value", f"placeholder {{{name}}} refers to an optional argument without a default")
            kw["value"] = Placeholder(name)
        else:
            p.add(f"{path}.value", f'expected true, false or "{{argument}}", got {describe_value(value)}')
    elif mode == "pulse":
        kw["pulse_ms"] = p.number(f"{path}.pulse_ms", raw["pulse_ms"], 1, 600_000, integer=True)
    if "states" in raw:
        if mode != "read":
            p.add(f"{path}.states", "only applies to read = true")
        else:
            states = p.string_list(f"{path}.states", raw["states"])
            if states is not None and len(states) != 2:
                p.add(f"{path}.states", f"expected two labels [inactive, active], got {len(states)}")
            elif states is not None:
                kw["states"] = (states[0], states[1])
    if "bias" in raw:
        if mode != "read":
            p.add(f"{path}.bias", "only applies to read = true")
        else:
            kw["bias"] = p.choice(f"{path}.bias", raw["bias"], BIASES)
    if "on_exit" in raw:
        if mode == "read":
            p.add(f"{path}.on_exit", "only applies to output lines (value or pulse_ms)")
        else:
            kw["on_exit"] = p.choice(f"{path}.on_exit", raw["on_exit"], ON_EXIT)
    if "active_low" in raw:
        kw["active_low"] = p.boolean(f"{path}.active_low", raw["active_low"])
    if len(p.lines) > before or chip is None or line is None:
        return None
    return GpioSpec(chip=chip, line=line, **kw)


def _parse_shell(p: _ToolProblems, path: str, raw: Mapping[str, Any], args: Mapping[str, ArgSpec]) -> ShellSpec | None:
    before = len(p.lines)
    if "argv" not in raw:
        p.add(f"{path}.argv", "required key is missing")
        return None
    argv = p.string_list(f"{path}.argv", raw["argv"], nonempty=True)
    templates: list[Template] = []
    for i, item in enumerate(argv or []):
        template = Template.parse(item)
        if i == 0 and (template.placeholders or not item):
            p.add(f"{path}.argv[0]", "the program must be a fixed non-empty path, not a placeholder")
        _check_placeholders(p, f"{path}.argv[{i}]", template, args)
        templates.append(template)
    kw: dict[str, Any] = {}
    if "cwd" in raw:
        kw["cwd"] = p.string(f"{path}.cwd", raw["cwd"])
    if "env_pass" in raw:
        names = p.string_list(f"{path}.env_pass", raw["env_pass"])
        for name in names or []:
            if not _ENV_NAME.fullmatch(name):
                p.add(f"{path}.env_pass", f"not an environment variable name: {describe_value(name)}")
        kw["env_pass"] = tuple(names or ())
    if "max_output_bytes" in raw:
        kw["max_output_bytes"] = _output_cap(p, path, raw["max_output_bytes"])
    if "kill_grace_s" in raw:
        kw["kill_grace_s"] = p.number(f"{path}.kill_grace_s", raw["kill_grace_s"], 0.1, 60)
    if len(p.lines) > before:
        return None
    return ShellSpec(argv=tuple(templates), **kw)


def _parse_http(p: _ToolProblems, path: str, raw: Mapping[str, Any], args: Mapping[str, ArgSpec]) -> HttpSpec | None:
    before = len(p.lines)
    method = p.choice(f"{path}.method", raw.get("method", "GET"), HTTP_METHODS)
    url: Template | None = None
    if "url" not in raw:
        p.add(f"{path}.url", "required key is missing")
    elif (text := p.string(f"{path}.url", raw["url"])) is not None:
        url = Template.parse(text)
        first = text.find("{") if url.placeholders else len(text)
        if not re.match(r"https?://", text, re.IGNORECASE):
            p.add(f"{path}.url", f"expected an http:// or https:// URL, got {describe_value(text)}")
        elif url.placeholders and not _URL_AUTHORITY.match(text[: first + 1]):
            p.add(f"{path}.url", "placeholders may only appear after the host (in the path or query)")
        _check_placeholders(p, f"{path}.url", url, args)
    kw: dict[str, Any] = {}
    if "json" in raw:
        kw["json"] = _json_template(p, f"{path}.json", raw["json"], args)
        kw["has_json"] = True
    for key in ("headers", "headers_env"):
        if key in raw:
            table = p.string_table(f"{path}.{key}", raw[key])
            for hname in table or {}:
                if not _HEADER_NAME.fullmatch(hname):
                    p.add(f"{path}.{key}.{hname}", "not a valid HTTP header name")
            kw[key] = MappingProxyType(dict(table or {}))
    for hname, env in kw.get("headers_env", {}).items():
        if not _ENV_NAME.fullmatch(env):
            p.add(f"{path}.headers_env.{hname}", f"not an environment variable name: {describe_value(env)}")
    if "max_output_bytes" in raw:
        kw["max_output_bytes"] = _output_cap(p, path, raw["max_output_bytes"])
    if len(p.lines) > before or method is None or url is None:
        return None
    return HttpSpec(method=method, url=url, **kw)


def _parse_tool(p: _ToolProblems, name: str, raw: object, path: str) -> ToolSpec | None:
    if not isinstance(raw, dict):
        p.add(path, f"expected a table, got {describe_value(raw)}")
        return None
    before = len(p.lines)
    p.bad_args = set()
    if "action" not in raw:
        p.add(f"{path}.action", f"required key is missing ({' | '.join(ACTIONS)})")
        return None
    action = p.choice(f"{path}.action", raw["action"], ACTIONS)
    if action is None:
        return None
    known = COMMON_KEYS + ACTION_KEYS[action]
    for key in raw:
        if key not in known:
            p.add(f"{path}.{key}", f'unknown key for action = "{action}"{did_you_mean(key, known)}')
    kw: dict[str, Any] = {}
    if "description" in raw:
        kw["description"] = p.string(f"{path}.description", raw["description"], empty=True)
    if "timeout_s" in raw:
        kw["timeout_s"] = p.number(f"{path}.timeout_s", raw["timeout_s"], 0.1, 3600)
    if "cancel_on_interruption" in raw:
        kw["cancel_on_interruption"] = p.boolean(f"{path}.cancel_on_interruption", raw["cancel_on_interruption"])
    args: dict[str, ArgSpec] = {}
    params: ActionSpec | None
    if action == "builtin":
        if "args" in raw:
            p.add(f"{path}.args", "built-in tools have fixed arguments")
        bname = None
        if "name" not in raw:
            p.add(f"{path}.name", f"required key is missing ({' | '.join(BUILTINS)})")
        else:
            bname = p.choice(f"{path}.name", raw["name"], BUILTINS)
        params = BuiltinSpec(bname) if bname else None
        args = dict(BUILTIN_ARGS.get(bname or "", {}))
    else:
        if "args" in raw:
            args = _parse_args(p, f"{path}.args", raw["args"])
            if isinstance(raw["args"], dict):
                p.bad_args = set(raw["args"]) - set(args)
        parse = {"gpio": _parse_gpio, "shell": _parse_shell, "http": _parse_http}[action]
        params = parse(p, path, raw, args)
    if isinstance(params, GpioSpec) and params.pulse_ms is not None:
        timeout_s = kw.get("timeout_s") or DEFAULT_TIMEOUT_S
        if params.pulse_ms / 1000 >= timeout_s:
            p.add(f"{path}.pulse_ms", f"{params.pulse_ms} ms does not fit in timeout_s ({number_text(timeout_s)} s)")
    if len(p.lines) > before or params is None:
        return None
    return ToolSpec(name=name, action=action, params=params, args=MappingProxyType(args), **kw)


def _check_shared_lines(p: _ToolProblems, path: str, tools: Mapping[str, ToolSpec]) -> None:
    """Two tools on one line must agree on direction and polarity (they share one line request)."""
    seen: dict[tuple[str, int | str], tuple[str, GpioSpec]] = {}
    for name, tool in tools.items():
        if not isinstance(tool.params, GpioSpec):
            continue
        spec = tool.params
        first = seen.setdefault(spec.line_key, (name, spec))
        other_name, other = first
        if other_name == name:
            continue
        if other.is_output != spec.is_output or other.active_low != spec.active_low or (
            other.is_output and other.on_exit != spec.on_exit
        ) or (not other.is_output and other.bias != spec.bias):
            p.add(
                f"{path}.{name}.line",
                f"{spec.chip} line {spec.line} is also used by tools.{other_name} with a different "
                "direction, active_low, bias or on_exit",
            )


def parse_tools(raw: Mapping[str, Any], path: str = "tools") -> dict[str, ToolSpec]:
    """Validate the [tools] table; ConfigError names each bad key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table, got {describe_value(raw)}")
    p = _ToolProblems()
    tools: dict[str, ToolSpec] = {}
    for name, table in raw.items():
        if not name.strip():
            p.add(f"{path}.{name!r}", "tool names must not be blank")
            continue
        spec = _parse_tool(p, name, table, f"{path}.{name}")
        if spec is not None:
            tools[name] = spec
    _check_shared_lines(p, path, tools)
    p.raise_if_any()
    return tools
